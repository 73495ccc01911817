"""registries.conf routing (prefix, location, mirrors, insecure, blocked; the files podman
reads) and the loopback guard, without a registry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from unionfs.errors import UserError
from unionfs.store.registry import conf
from unionfs.store.registry.client import Refused, Registry
from unionfs.store.registry.reference import parse

CONF = """\
unqualified-search-registries = ["quay.io"]   # ignored: short names are docker's

[[registry]]
prefix = "docker.io"
location = "127.0.0.1:5000"

[[registry]]
prefix = "docker.io/team"
location = "127.0.0.1:5001/mirrored/team"
insecure = true

[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "127.0.0.1:6000/quay"
[[registry.mirror]]
location = "127.0.0.1:6001"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "*.blocked.example"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"""


@pytest.fixture
def conf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text(CONF)
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    return path


def where(text: str, **kw: object) -> list[tuple[str, bool | None, bool]]:
    return [(str(e.ref), e.tls_verify, e.mirror)
            for e in conf.endpoints(parse(text), **kw)]  # type: ignore[arg-type]


def test_longest_prefix_rewrites_the_location(conf_file: Path) -> None:
    assert where("debian") == [("127.0.0.1:5000/library/debian", None, False)]
    assert where("user/app:2") == [("127.0.0.1:5000/user/app:2", None, False)]
    assert where("team/app:1") == [("127.0.0.1:5001/mirrored/team/app:1", False, False)]
    # docker.io/teamwork is not below docker.io/team: prefixes match whole components
    assert where("teamwork/x") == [("127.0.0.1:5000/teamwork/x", None, False)]
    assert where("example.com/x") == [("example.com/x", None, False)]  # no entry: as asked
    assert where("team/app", tls_verify=True) == [
        ("127.0.0.1:5001/mirrored/team/app", True, False)]  # --tls-verify wins


def test_mirrors_come_first_when_pulling_only(conf_file: Path) -> None:
    assert where("quay.io/org/img:1") == [("127.0.0.1:6000/quay/org/img:1", None, True),
                                           ("quay.io/org/img:1", None, False)]
    digest = "sha256:" + "a" * 64
    assert [r for r, _v, _m in where(f"quay.io/org/img@{digest}")] == [
        f"127.0.0.1:6000/quay/org/img@{digest}", f"127.0.0.1:6001/org/img@{digest}",
        f"quay.io/org/img@{digest}"]
    assert where("quay.io/org/img:1", push=True) == [("quay.io/org/img:1", None, False)]


def test_blocked_registries_are_refused(conf_file: Path) -> None:
    with pytest.raises(UserError, match=r"registry a\.blocked\.example is blocked in"):
        conf.endpoints(parse("a.blocked.example/x"))
    assert where("blocked.example/x") == [("blocked.example/x", None, False)]


@pytest.mark.parametrize(("text", "message"), [
    ("[[registry]\n", "cannot read"),
    ("registry = 3\n", "array of tables"),
    ("[[registry]]\ninsecure = true\n", "needs a prefix or a location"),
    ("[[registry]]\nprefix = 'docker.io'\nlocation = 5\n", "location must be a string"),
    ("[[registry]]\nprefix = 'docker.io'\ninsecure = 'yes'\n", "insecure must be true"),
    ("[[registry]]\nprefix = '*.x.io'\nlocation = 'y.io'\n", "cannot have a location"),
    ("[[registry]]\nprefix = 'docker.io'\nlocation = 'UP/Case'\n", "invalid registry location"),
    ("[[registry]]\nlocation = 'q.io'\n[[registry.mirror]]\ninsecure = true\n",
     "mirror]] needs a location"),
    ("[[registry]]\nlocation = 'q.io'\npull-from-mirror = 'sometimes'\n"
     "[[registry.mirror]]\nlocation = 'm.io'\n", "pull-from-mirror must be one of"),
])
def test_malformed_files_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             text: str, message: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    with pytest.raises(UserError, match=message) as info:
        where("docker.io/library/x") and where("q.io/x")
    assert "\n" not in str(info.value)


def test_files_are_read_as_podman_reads_them(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    system = tmp_path / "etc" / "registries.conf"
    monkeypatch.setattr(conf, "SYSTEM", system)
    system.parent.mkdir()
    (system.parent / "registries.conf.d").mkdir()
    system.write_text('[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:1"\n')
    (system.parent / "registries.conf.d" / "50-x.conf").write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:2"\n')
    (system.parent / "registries.conf.d" / "ignored.txt").write_text("not toml [")
    user_d = tmp_path / "cfg" / "containers" / "registries.conf.d"
    user_d.mkdir(parents=True)
    (user_d / "10-q.conf").write_text('[[registry]]\nlocation = "q.io"\ninsecure = true\n')
    assert conf.conf_files() == [system, system.parent / "registries.conf.d" / "50-x.conf",
                                 user_d / "10-q.conf"]
    assert where("debian") == [("127.0.0.1:2/library/debian", None, False)]  # drop-in wins
    assert where("q.io/a") == [("q.io/a", False, False)]
    user = tmp_path / "cfg" / "containers" / "registries.conf"
    user.write_text('[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:3"\n')
    assert conf.conf_files() == [user, user_d / "10-q.conf"]  # the system file is not read
    assert where("debian") == [("127.0.0.1:3/library/debian", None, False)]


def test_the_guard_refuses_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIONFS_REGISTRY_LOOPBACK_ONLY", "1")
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with pytest.raises(Refused, match=r"refusing to contact registry\.example:5000"):
        Registry("registry.example:5000", transport=httpx.MockTransport(record))
    # a loopback registry whose token realm (or a redirect) points elsewhere: refused too
    reg = Registry("127.0.0.1:5000", transport=httpx.MockTransport(record))
    with pytest.raises(Refused, match=r"refusing to contact auth\.example"):
        reg._http.get("https://auth.example/token")
    reg.close()
    assert sent == []
    for host in ("127.0.0.1:5000", "localhost", "[::1]:80", "127.8.9.10"):
        Registry(host, transport=httpx.MockTransport(record)).close()
