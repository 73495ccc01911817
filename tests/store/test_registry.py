"""pull/push/login/logout against a real registry on loopback (Debian's docker-registry).

Every CLI call runs with ``UNIONFS_REGISTRY_LOOPBACK_ONLY=1``: a request to any address but
loopback fails before it is sent, so nothing here can reach the network.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import busybox_rootfs, describe, ok, run_cli, store_state, tmp_is_empty
from .registry_server import PASSWORD, USER, FaultyProxy, RegistryServer, run_registry


@pytest.fixture(autouse=True)
def _loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIONFS_REGISTRY_LOOPBACK_ONLY", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    registries_conf = tmp_path / "registries.conf"  # the machine's own is not read
    registries_conf.write_text("")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(registries_conf))


def route(tmp_path: Path, text: str) -> None:
    """Make ``text`` the registries.conf every CLI call of this test reads."""
    (tmp_path / "registries.conf").write_text(text)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with run_registry(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with run_registry(tmp_path / "registry-basic", auth="basic") as server:
        yield server


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with run_registry(tmp_path / "registry-token", auth="token") as server:
        yield server


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A store holding 'box:1' (busybox) and 'box:2' (one more layer on it)."""
    store = tmp_path / "src"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "box:1")
    upper = tmp_path / "upper"
    (upper / "srv").mkdir(parents=True)
    (upper / "srv" / "hello").write_text("hello from layer two\n")
    ok(store, "commit", "--upper", str(upper), "--parent", "box:1", "box:2", "-m", "two")
    return store


def image_info(store: Path, ref: str) -> dict[str, Any]:
    return json.loads(ok(store, "inspect", ref))[0]


def layer_trees(store: Path, ref: str) -> list[dict[str, tuple[object, ...]]]:
    info = image_info(store, ref)
    return [describe(Path(layer["Dir"])) for layer in info["Layers"]]


def failed(res: subprocess.CompletedProcess[str], *words: str) -> None:
    """A non-zero exit with one ``unionfs: error:`` line naming ``words``."""
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unionfs: error: "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# Runs under the machine-wide container lock wait for other sessions' container tests too.
LOCKED_TIMEOUT = 1200


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def test_push_then_pull_gives_the_same_image(tmp_path: Path, registry: RegistryServer,
                                             source: Path) -> None:
    ref = f"{registry.host}/team/box:2"
    pushed = ok(source, "push", "box:2", ref, "-q").strip()
    dest = tmp_path / "dest"
    image_id = ok(dest, "pull", ref, "-q").strip()
    assert image_id == image_info(source, "box:2")["Id"]
    assert layer_trees(dest, ref) == layer_trees(source, "box:2")
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}").stdout
    import hashlib

    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == pushed
    manifest = json.loads(raw)
    assert manifest["config"]["digest"] == image_id  # the config blob is our image config
    assert all(d["mediaType"].endswith("tar+gzip") for d in manifest["layers"])


def test_present_blobs_are_skipped_both_ways(tmp_path: Path, registry: RegistryServer,
                                             source: Path) -> None:
    ok(source, "push", "box:1", f"{registry.host}/box:1")
    res = run_cli(source, "push", "box:2", f"{registry.host}/box:2")
    assert res.returncode == 0, res.stderr
    assert "1 layer(s) uploaded" in res.stderr  # the base layer was already there
    dest = tmp_path / "dest"
    ok(dest, "pull", f"{registry.host}/box:1")
    res = run_cli(dest, "pull", f"{registry.host}/box:2")
    assert res.returncode == 0, res.stderr
    assert "1 layer(s) fetched, 1 already present" in res.stderr


def test_cross_repository_mount_on_push(registry: RegistryServer, source: Path) -> None:
    ok(source, "push", "box:2", f"{registry.host}/one/box:2")
    res = run_cli(source, "push", "box:2", f"{registry.host}/two/box:2")
    assert res.returncode == 0, res.stderr
    assert "0 layer(s) uploaded, 2 mounted" in res.stderr
    skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/two/box:2")


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_push_compression_is_read_by_skopeo_and_us(tmp_path: Path, registry: RegistryServer,
                                                   source: Path, compression: str) -> None:
    ref = f"{registry.host}/c/box:{compression}"
    ok(source, "push", "box:2", ref, "--compression", compression)
    manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                                 f"docker://{ref}").stdout)
    want = "tar+zstd" if compression == "zstd" else "layer.v1.tar"
    assert all(d["mediaType"].endswith(want) for d in manifest["layers"])
    layout = tmp_path / "oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:x")
    loaded = tmp_path / "loaded"
    ok(loaded, "load", "-i", str(layout))  # load reads zstd layers too
    assert layer_trees(loaded, "x") == layer_trees(source, "box:2")
    pulled = tmp_path / "pulled"
    ok(pulled, "pull", ref)
    assert image_info(pulled, ref)["Id"] == image_info(source, "box:2")["Id"]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_unionfs_pulls_what_skopeo_pushed(tmp_path: Path, registry: RegistryServer,
                                          source: Path, compression: str) -> None:
    ok(source, "save", "box:2", "-o", str(tmp_path / "box.tar"))
    ref = f"{registry.host}/sk/box:{compression}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-compress",
           "--dest-compress-format", compression, f"oci-archive:{tmp_path / 'box.tar'}",
           f"docker://{ref}")
    manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                                 f"docker://{ref}").stdout)
    assert all(d["mediaType"].endswith(compression) for d in manifest["layers"])
    dest = tmp_path / "dest"
    ok(dest, "pull", ref)
    assert layer_trees(dest, ref) == layer_trees(source, "box:2")


def test_pull_by_digest_and_all_tags(tmp_path: Path, registry: RegistryServer,
                                     source: Path) -> None:
    digest = ok(source, "push", "box:1", f"{registry.host}/multi:a", "-q").strip()
    ok(source, "push", "box:2", f"{registry.host}/multi:b")
    dest = tmp_path / "dest"
    assert ok(dest, "pull", f"{registry.host}/multi@{digest}", "-q").strip() == \
        image_info(source, "box:1")["Id"]
    ok(dest, "pull", "--all-tags", f"{registry.host}/multi")
    tags = set(json.loads(ok(dest, "images", "--format", "json"))[0]["tags"]) | set(
        json.loads(ok(dest, "images", "--format", "json"))[1]["tags"])
    assert {f"{registry.host}/multi:a", f"{registry.host}/multi:b"} <= tags


def _put_index(registry: RegistryServer, repo: str, entries: list[tuple[str, str]]) -> None:
    """An image index whose entries (platform, manifest tag) point at pushed manifests."""
    import httpx

    manifests = []
    for platform, tag in entries:
        resp = httpx.get(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        os_, arch = platform.split("/")
        import hashlib

        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": "sha256:" + hashlib.sha256(resp.content).hexdigest(),
                          "size": len(resp.content),
                          "platform": {"os": os_, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType":
                        "application/vnd.oci.image.index.v1+json", "manifests": manifests})
    resp = httpx.put(f"http://{registry.host}/v2/{repo}/manifests/multi", content=index,
                     headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert resp.status_code == 201, resp.text


def test_index_platform_is_chosen(tmp_path: Path, registry: RegistryServer,
                                  source: Path) -> None:
    ok(source, "push", "box:1", f"{registry.host}/plat:amd")
    ok(source, "push", "box:2", f"{registry.host}/plat:arm")
    _put_index(registry, "plat", [("linux/amd64", "amd"), ("linux/arm64", "arm")])
    dest = tmp_path / "dest"
    got = ok(dest, "pull", "--platform", "linux/arm64", f"{registry.host}/plat:multi", "-q")
    assert got.strip() == image_info(source, "box:2")["Id"]
    got = ok(dest, "pull", "--platform", "linux/amd64", f"{registry.host}/plat:multi", "-q")
    assert got.strip() == image_info(source, "box:1")["Id"]
    before = store_state(dest)
    failed(run_cli(dest, "pull", "--platform", "linux/s390x", f"{registry.host}/plat:multi"),
           "no image for platform linux/s390x", "linux/amd64, linux/arm64")
    assert store_state(dest) == before


def test_a_corrupt_blob_never_becomes_a_layer(tmp_path: Path, registry: RegistryServer,
                                              source: Path) -> None:
    ref = f"{registry.host}/bad/box:2"
    ok(source, "push", "box:2", ref, "--compression", "none")
    manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                                 f"docker://{ref}").stdout)
    blob = registry.blob_path(manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[700] ^= 0x01  # inside a file's data: the tar itself stays well formed
    blob.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    ok(dest, "images")
    before = store_state(dest)
    failed(run_cli(dest, "pull", ref), "does not match its digest")
    assert store_state(dest) == before and tmp_is_empty(dest)


def test_unknown_image_and_registry_errors(tmp_path: Path, registry: RegistryServer) -> None:
    dest = tmp_path / "dest"
    ok(dest, "images")
    before = store_state(dest)
    failed(run_cli(dest, "pull", f"{registry.host}/nothing:here"), "not found")
    failed(run_cli(dest, "pull", "127.0.0.1:1/x:1"), "cannot reach registry")
    failed(run_cli(dest, "pull", "Upper/Case"), "must be lowercase")
    failed(run_cli(dest, "pull", "x:" + "t" * 200), "invalid tag")
    assert store_state(dest) == before


def test_short_names_resolve_to_docker_hub_and_stay_on_loopback(tmp_path: Path) -> None:
    """``debian`` means docker.io/library/debian:latest (the guard stops it at once)."""
    res = run_cli(tmp_path / "s", "pull", "debian")
    failed(res, "registry-1.docker.io")


def test_basic_auth_login_push_pull_logout(tmp_path: Path, basic_registry: RegistryServer,
                                           source: Path) -> None:
    host = basic_registry.host
    failed(run_cli(source, "push", "box:1", f"{host}/box:1"), "access denied")
    res = subprocess.run([*_cli(), "login", "-u", USER, "--password-stdin", host],
                         input="wrong\n", capture_output=True, text=True)
    failed(res, "login")
    res = subprocess.run([*_cli(), "login", "-u", USER, "--password-stdin", host],
                         input=PASSWORD + "\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    authfile = tmp_path / "run" / "containers" / "auth.json"
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert host in json.loads(authfile.read_text())["auths"]
    ok(source, "push", "box:2", f"{host}/box:2")
    dest = tmp_path / "dest"
    ok(dest, "pull", f"{host}/box:2")
    assert layer_trees(dest, f"{host}/box:2") == layer_trees(source, "box:2")
    res = subprocess.run([*_cli(), "logout", host], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert host not in json.loads(authfile.read_text())["auths"]
    failed(run_cli(tmp_path / "d2", "pull", f"{host}/box:2"), "access denied")


def test_docker_config_credentials_are_read(tmp_path: Path, basic_registry: RegistryServer,
                                            source: Path) -> None:
    import base64

    docker = tmp_path / "home" / ".docker"
    docker.mkdir(parents=True)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps(
        {"auths": {basic_registry.host: {"auth": token}}}))
    ok(source, "push", "box:1", f"{basic_registry.host}/box:1")


def test_bearer_token_auth(tmp_path: Path, token_registry: RegistryServer,
                           source: Path) -> None:
    host = token_registry.host
    failed(run_cli(source, "push", "box:1", f"{host}/box:1"), "access denied")
    res = subprocess.run([*_cli(), "login", "-u", USER, "--password-stdin", host],
                         input=PASSWORD + "\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ok(source, "push", "box:2", f"{host}/team/box:2")
    dest = tmp_path / "dest"
    ok(dest, "pull", f"{host}/team/box:2")
    assert layer_trees(dest, f"{host}/team/box:2") == layer_trees(source, "box:2")
    scopes = {r.get("scope") for r in token_registry.token_requests if r["authorized"] ==
              "True"}
    assert "repository:team/box:pull,push" in scopes
    assert "repository:team/box:pull" in scopes


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "unionfs"]


def test_pulled_image_runs(tmp_path: Path, registry: RegistryServer, source: Path) -> None:
    """``run`` pulls an image it does not have (the runtime's image lookup), then runs it."""
    ok(source, "push", "box:2", f"{registry.host}/run/box:2")
    dest = tmp_path / "dest"
    argv = ["flock", "/tmp/unionfs-containers.lock", *_cli(), "run", "--store", str(dest),
            "--rm", "--network", "none", f"{registry.host}/run/box:2", "cat", "/srv/hello"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=LOCKED_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello from layer two\n"
    assert "Unable to find image" in res.stderr


def _run(store: Path, *args: str, lock: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["flock", "/tmp/unionfs-containers.lock"] if lock else []
    return subprocess.run([*prefix, *_cli(), "run", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=LOCKED_TIMEOUT)


def test_run_short_name_pulls_through_registries_conf(tmp_path: Path, registry: RegistryServer,
                                                      source: Path) -> None:
    """``run debian`` means docker.io/library/debian:latest; registries.conf sends docker.io
    to the loopback registry, so it is pulled from there (named ``debian:latest``) and run."""
    ok(source, "push", "box:2", f"{registry.host}/library/debian:latest")
    route(tmp_path, f'[[registry]]\nprefix = "docker.io"\nlocation = "{registry.host}"\n')
    dest = tmp_path / "dest"
    res = _run(dest, "--rm", "--network", "none", "debian", "cat", "/srv/hello")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello from layer two\n"
    assert res.stderr.splitlines()[0] == "Unable to find image 'debian:latest' locally"
    assert "Status: Downloaded newer image for debian:latest" in res.stderr
    assert image_info(dest, "debian")["Id"] == image_info(source, "box:2")["Id"]
    assert layer_trees(dest, "debian:latest") == layer_trees(source, "box:2")
    res = _run(dest, "--rm", "--network", "none", "debian", "true")  # now it is there
    assert res.returncode == 0 and "Unable to find" not in res.stderr, res.stderr


def test_build_pulls_its_base_through_a_mirror(tmp_path: Path, registry: RegistryServer,
                                               source: Path) -> None:
    """``FROM box`` pulls docker.io/library/box from its mirror (the location itself,
    docker.io, is refused by the loopback guard and never tried)."""
    ok(source, "push", "box:1", f"{registry.host}/hub/library/box:latest")
    route(tmp_path, '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
          f'[[registry.mirror]]\nlocation = "{registry.host}/hub"\n')
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM box\nLABEL built=yes\n")
    dest = tmp_path / "dest"
    res = subprocess.run(["flock", "/tmp/unionfs-containers.lock", *_cli(), "build",
                          "--store", str(dest), "-t", "app:1", str(ctx)],
                         capture_output=True, text=True, timeout=LOCKED_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert "Unable to find image 'box:latest' locally" in res.stderr
    assert image_info(dest, "box")["Id"] == image_info(source, "box:1")["Id"]
    assert image_info(dest, "app:1")["Config"]["Labels"] == {"built": "yes"}


@pytest.mark.parametrize("routing", ["none", "dead-mirror", "dead-location"])
def test_run_of_a_missing_image_fails_in_one_line(tmp_path: Path, source: Path,
                                                  routing: str) -> None:
    """No registry can serve ``nosuch``: docker's 125, one line saying it was not found
    locally and why the pull failed, and nothing changed in the store."""
    from .registry_server import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    route(tmp_path, {
        "none": "",
        "dead-mirror": f'[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\n'
                       f'location = "{dead}"\n',
        "dead-location": f'[[registry]]\nprefix = "docker.io"\nlocation = "{dead}"\n'}[routing])
    before = store_state(source)
    res = _run(source, "--rm", "nosuch", "true", lock=False)
    assert res.returncode == 125, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("unionfs: error: Unable to find image 'nosuch:latest' locally; "
                               "pulling it failed: "), lines[0]
    want = {"none": ["refusing to contact registry-1.docker.io"],
            "dead-mirror": [f"mirror 127.0.0.1:{dead.split(':')[1]}: cannot reach registry",
                            "docker.io: refusing to contact registry-1.docker.io"],
            "dead-location": [f"cannot reach registry {dead}"]}[routing]
    for words in want:
        assert words in lines[0], lines[0]
    assert store_state(source) == before and tmp_is_empty(source)


def test_blocked_registry_and_push_through_a_rewrite(tmp_path: Path, registry: RegistryServer,
                                                     source: Path) -> None:
    route(tmp_path, f'[[registry]]\nprefix = "docker.io/team"\nlocation = "{registry.host}/t"\n'
          '[[registry]]\nprefix = "docker.io"\nblocked = true\n')
    ok(source, "push", "box:2", "team/app:3")  # docker.io/team/app:3, sent to the rewrite
    skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/t/app:3")
    dest = tmp_path / "dest"
    ok(dest, "pull", "team/app:3")
    assert image_info(dest, "team/app:3")["Id"] == image_info(source, "box:2")["Id"]
    ok(dest, "images")
    before = store_state(dest)
    failed(run_cli(dest, "pull", "debian"), "registry docker.io is blocked in",
           str(tmp_path / "registries.conf"))
    assert store_state(dest) == before


def _biggest_layer(ref: str) -> dict[str, object]:
    manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                                 f"docker://{ref}").stdout)
    return max(manifest["layers"], key=lambda d: d["size"])


@pytest.mark.parametrize("ignore_range", [False, True])
def test_a_broken_layer_download_resumes_where_it_broke(
        tmp_path: Path, registry: RegistryServer, source: Path, ignore_range: bool) -> None:
    """The first GET of the big layer is cut after a third of it: the pull asks for the rest
    (``Range: bytes=N-``), or, from a registry that ignores ranges, drops the N bytes it has."""
    ok(source, "push", "box:2", f"{registry.host}/r/box:2", "--compression", "none")
    layer = _biggest_layer(f"{registry.host}/r/box:2")
    size = int(layer["size"])  # type: ignore[call-overload]
    cut = size // 3
    dest = tmp_path / "dest"
    with FaultyProxy(registry.host, cut_blob_at=cut, ignore_range=ignore_range) as proxy:
        ok(dest, "pull", f"{proxy.host}/r/box:2")
        gets = [s for s in proxy.seen if s.method == "GET" and s.path.endswith(
            f"/blobs/{layer['digest']}")]
    assert [(g.range, g.sent) for g in gets] == [
        ("", cut), (f"bytes={cut}-", size if ignore_range else size - cut)]
    assert image_info(dest, f"{proxy.host}/r/box:2")["Id"] == image_info(source, "box:2")["Id"]
    assert layer_trees(dest, f"{proxy.host}/r/box:2") == layer_trees(source, "box:2")
    assert tmp_is_empty(dest)


@pytest.mark.parametrize("drop", ["unsent", "half"])
def test_a_broken_chunked_upload_resumes(tmp_path: Path, registry: RegistryServer,
                                         source: Path, drop: str) -> None:
    """The layer goes in 256 KiB PATCHes; the second one breaks. ``unsent`` (the registry
    never saw it): the push asks the session where it is and goes on, every byte sent once.
    ``half`` (the registry took half of it, the answer was lost): docker-registry gives up
    on the session when asked about it, so a new one starts; the push still succeeds."""
    with FaultyProxy(registry.host, drop_patch=(2, drop)) as proxy:
        ref = f"{proxy.host}/up/box:1"
        ok(source, "push", "box:1", ref, "--compression", "none", "--chunk-size", "256K")
        seen = list(proxy.seen)
    layer = _biggest_layer(f"{registry.host}/up/box:1")
    size = int(layer["size"])  # type: ignore[call-overload]
    assert size > 3 * 256 * 1024  # so it really went in several chunks
    patches = [s for s in seen if s.method == "PATCH"]
    assert all(s.range for s in patches)  # every chunk says where it goes (Content-Range)
    sessions = [s for s in seen if s.method == "POST" and "/blobs/uploads/" in s.path]
    status = [s for s in seen if s.method == "GET" and "/blobs/uploads/" in s.path]
    assert len(status) == 1
    if drop == "unsent":
        assert len(sessions) == 2  # the layer's and the config's: no new session
        assert sum(s.received for s in patches if s.forwarded) == size
        assert patches[2].range == patches[1].range  # the lost chunk, sent again
    else:
        assert len(sessions) == 3
    dest = tmp_path / "dest"
    ok(dest, "pull", f"{registry.host}/up/box:1")
    assert image_info(dest, f"{registry.host}/up/box:1")["Id"] == image_info(
        source, "box:1")["Id"]
