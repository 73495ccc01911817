"""Named volumes: ``volume create|ls|inspect|rm|prune`` and ``-v NAME:/path``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CLI


@pytest.fixture
def volume_names(cli: CLI) -> Iterator[list[str]]:
    """Volumes a test makes; removed afterwards (with the containers named like them)."""
    made: list[str] = []
    yield made
    for name in made:
        cli("rm", "-f", f"c-{name}")
    if made:
        cli("volume", "rm", "-f", *made)


@pytest.fixture
def srv_image(cli: CLI) -> Iterator[str]:
    """busybox plus /srv/data holding files of uid 1000 and a symlink (made by a commit)."""
    cli.ok("run", "--name", "mksrv", "busybox", "sh", "-c",
           "mkdir -p /srv/data/sub && echo hello > /srv/data/a && echo deep > "
           "/srv/data/sub/b && ln -s a /srv/data/link && chown -R 1000:1000 /srv/data && "
           "chmod 750 /srv/data && chmod 600 /srv/data/a")
    try:
        cli.ok("commit", "mksrv", "withsrv", "-m", "content for volumes")
    finally:
        cli("rm", "-f", "mksrv")
    yield "withsrv"
    cli("rmi", "withsrv")


def _inspect(cli: CLI, name: str) -> dict[str, object]:
    data = json.loads(cli.ok("volume", "inspect", name))
    assert isinstance(data, list) and len(data) == 1
    return data[0]  # type: ignore[no-any-return]


def test_create_ls_inspect_rm(cli: CLI, store_root: Path, volume_names: list[str]) -> None:
    assert cli.ok("volume", "create", "vdata").strip() == "vdata"
    volume_names.append("vdata")
    assert cli.ok("volume", "create", "vdata").strip() == "vdata"  # exists: kept as is
    anon = cli.ok("volume", "create").strip()
    volume_names.append(anon)
    assert len(anon) == 64 and int(anon, 16) >= 0
    assert set(cli.ok("volume", "ls", "-q").split()) >= {"vdata", anon}
    listing = cli.ok("volume", "ls").splitlines()
    assert listing[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert ["local", "vdata"] in [row.split() for row in listing[1:]]
    info = _inspect(cli, "vdata")
    assert info["Name"] == "vdata" and info["Driver"] == "local"
    assert info["Mountpoint"] == str(store_root / "volumes" / "vdata" / "_data")
    for d in (store_root / "volumes", store_root / "volumes" / "vdata"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700  # only the store's owner gets in
    res = cli("volume", "inspect", "nosuch")
    assert res.returncode == 1 and "no such volume: nosuch" in res.stderr
    res = cli("volume", "create", "x")
    assert res.returncode != 0 and "invalid volume name" in res.stderr
    assert cli.ok("volume", "rm", "vdata", anon).split() == ["vdata", anon]
    assert "vdata" not in cli.ok("volume", "ls", "-q").split()
    assert not (store_root / "volumes" / "vdata").exists()
    res = cli("volume", "rm", "vdata")
    assert res.returncode == 1 and "no such volume" in res.stderr
    assert cli("volume", "rm", "-f", "vdata").returncode == 0


def test_run_v_name_creates_populates_and_reuses(cli: CLI, store_root: Path, srv_image: str,
                                                 volume_names: list[str]) -> None:
    volume_names.append("srvvol")
    out = cli.ok("run", "--rm", "-v", "srvvol:/srv/data", srv_image, "sh", "-c",
                 "stat -c '%u:%g %a %n' /srv/data /srv/data/a /srv/data/sub/b; "
                 "readlink /srv/data/link; echo new > /srv/data/new")
    assert out.splitlines() == ["1000:1000 750 /srv/data", "1000:1000 600 /srv/data/a",
                                "1000:1000 644 /srv/data/sub/b", "a"]
    data = Path(str(_inspect(cli, "srvvol")["Mountpoint"]))
    assert (data / "a").read_text() == "hello\n" and (data / "new").read_text() == "new\n"
    st = os.stat(data / "a")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o600)
    # The image's copy is made only into an empty volume: the next run sees what was left.
    (data / "a").write_text("changed\n")
    out = cli.ok("run", "--rm", "-v", "srvvol:/srv/data:ro", "busybox", "sh", "-c",
                 "cat /srv/data/a /srv/data/new; touch /srv/data/x 2>/dev/null || echo ro")
    assert out.split() == ["changed", "new", "ro"]


def test_rm_refuses_a_volume_in_use_and_prune_keeps_it(cli: CLI, store_root: Path,
                                                       volume_names: list[str]) -> None:
    volume_names += ["used", "unused"]
    cli.ok("volume", "create", "unused")
    cli.ok("run", "-d", "--name", "c-used", "-v", "used:/data", "busybox", "sleep", "100")
    for args in (("volume", "rm", "used"), ("volume", "rm", "-f", "used")):
        res = cli(*args)
        assert res.returncode == 1 and "volume is in use" in res.stderr
    cli.ok("stop", "-t", "1", "c-used")  # a stopped container still holds it, as docker's
    res = cli("volume", "prune", "-f")
    assert res.returncode == 0, res.stderr
    assert "unused" in res.stdout.split() and "used" not in res.stdout.split()
    assert cli.ok("volume", "ls", "-q").split().count("used") == 1
    assert "unused" not in cli.ok("volume", "ls", "-q").split()
    cli.ok("rm", "c-used")
    assert cli.ok("volume", "rm", "used").strip() == "used"


def test_prune_asks_first(cli: CLI, volume_names: list[str]) -> None:
    volume_names.append("asked")
    cli.ok("volume", "create", "asked")
    res = cli("volume", "prune", input="n\n")
    assert res.returncode == 0 and "Are you sure" in res.stderr
    assert "asked" in cli.ok("volume", "ls", "-q").split()
    res = cli("volume", "prune", input="y\n")
    assert "asked" in res.stdout.split()
    assert "asked" not in cli.ok("volume", "ls", "-q").split()


def test_v_with_a_relative_host_path_and_a_missing_one(cli: CLI, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run(cli.argv("run", "--rm", "-v", "./made/here:/data", "busybox", "sh",
                                   "-c", "echo x > /data/f"),
                          cwd=cwd, env=cli.env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (cwd / "made/here/f").read_text() == "x\n"  # a host path, made as docker's -v
    assert "made" not in cli.ok("volume", "ls", "-q").split()
