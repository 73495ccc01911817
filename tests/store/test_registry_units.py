"""The registry client's pure parts: challenges, credential files, platform choice,
compression round trips, symlink-chain resolution, limits parsing."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from unionfs.errors import UserError
from unionfs.store import schema
from unionfs.store.compression import compressor, decompressed
from unionfs.store.limits import parse_size
from unionfs.store.registry import auth
from unionfs.store.registry.client import is_loopback
from unionfs.store.registry.pull import choose_platform
from unionfs.store.untar import link_escape


def test_parse_challenge() -> None:
    c = auth.parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                             'scope="repository:a/b:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg",
                        "scope": "repository:a/b:pull,push"}
    basic = auth.parse_challenge('Basic realm="test"')
    assert basic is not None and basic.scheme == "basic"
    assert auth.parse_challenge("Negotiate abc") is None


def test_credentials_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    docker = tmp_path / "home" / ".docker" / "config.json"
    docker.parent.mkdir(parents=True)
    hub = base64.b64encode(b"bob:hub-pass").decode()
    docker.write_text(json.dumps({"auths": {auth.HUB_KEY: {"auth": hub}},
                                  "credsStore": "kept"}))
    assert auth.lookup("docker.io") == auth.Credentials("bob", "hub-pass")
    assert auth.lookup("127.0.0.1:5000") is None
    path = auth.store("127.0.0.1:5000", auth.Credentials("a", "p:w"))
    assert path == tmp_path / "run" / "containers" / "auth.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.lookup("127.0.0.1:5000") == auth.Credentials("a", "p:w")
    assert auth.remove("127.0.0.1:5000") == [path]
    assert auth.lookup("127.0.0.1:5000") is None
    assert json.loads(docker.read_text())["credsStore"] == "kept"
    docker.write_text('{"auths": {"x.io": {"auth": "!!!"}}}')
    with pytest.raises(UserError, match="malformed credentials"):
        auth.lookup("x.io")


def test_choose_platform() -> None:
    def entry(arch: str, variant: str = "") -> dict[str, object]:
        return {"mediaType": schema.MT_MANIFEST, "digest": "sha256:" + arch[0] * 64,
                "size": 1, "platform": {"os": "linux", "architecture": arch,
                                        "variant": variant}}

    index = schema.parse_index({"schemaVersion": 2, "manifests": [
        entry("amd64"), entry("arm64", "v8"), entry("arm", "v7")]})
    assert choose_platform(index, "linux/arm64").platform.architecture == "arm64"  # type: ignore[union-attr]
    assert choose_platform(index, "linux/arm/v7").platform.variant == "v7"  # type: ignore[union-attr]
    with pytest.raises(UserError, match="linux/amd64, linux/arm, linux/arm64"):
        choose_platform(index, "linux/riscv64")


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_compression_round_trip_is_deterministic(kind: str) -> None:
    data = os.urandom(3 << 20) + b"text " * 500_000

    def pack() -> bytes:
        out = io.BytesIO()
        w = compressor(kind, out)
        for i in range(0, len(data), 100_000):
            w.write(data[i:i + 100_000])
        w.close()
        return out.getvalue()

    blob = pack()
    assert blob == pack()
    assert decompressed(io.BytesIO(blob)).read() == data
    if kind != "none":
        tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"]}[kind]
        assert subprocess.run(tool, input=blob, capture_output=True, check=True).stdout == data


def test_link_escape() -> None:
    links = {b"x": b".", b"L1": b"x/..", b"s": b"L1/etc/shadow", b"ok": b"usr/lib",
             b"usr/lib/up": b"../../ok", b"abs": b"/../..", b"loop": b"loop"}
    assert link_escape(b"L1", links) and link_escape(b"s", links)
    assert not link_escape(b"x", links) and not link_escape(b"ok", links)
    assert not link_escape(b"usr/lib/up", links) and not link_escape(b"abs", links)
    assert link_escape(b"loop", links)  # a loop is refused, as the kernel would (ELOOP)


def test_schema_rejects_malformed_documents() -> None:
    with pytest.raises(UserError, match="schemaVersion"):
        schema.parse_manifest({"schemaVersion": 1, "config": {}, "layers": []})
    with pytest.raises(UserError, match="digest"):
        schema.parse_descriptor({"digest": "md5:00", "size": 1}, "x")
    with pytest.raises(UserError, match="size"):
        schema.parse_descriptor({"digest": "sha256:" + "0" * 64, "size": -1}, "x")
    with pytest.raises(UserError, match="rootfs"):
        schema.check_config({"rootfs": "layers"})
    with pytest.raises(UserError, match="unsupported layer media type"):
        schema.parse_manifest({"schemaVersion": 2, "config": {
            "digest": "sha256:" + "0" * 64, "size": 1}, "layers": [{
                "mediaType": "application/x-evil", "digest": "sha256:" + "1" * 64,
                "size": 1}]})


def test_loopback_and_sizes() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback(
        "[::1]:5000") and is_loopback("127.9.9.9")
    assert not is_loopback("registry-1.docker.io") and not is_loopback("10.0.0.1:5000")
    assert parse_size("512M") == 512 << 20 and parse_size("2G") == 2 << 30
    with pytest.raises(UserError):
        parse_size("lots")


def test_transient_failures_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """503s and a dropped connection are tried again; a 404 is not."""
    import httpx

    from unionfs.store.registry import client

    monkeypatch.setattr(client, "BACKOFF", 0)
    calls: list[str] = []
    failures = iter(["503", "drop", "503"])

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v2/":
            return httpx.Response(200)
        if request.url.path.endswith("/missing"):
            return httpx.Response(404)
        what = next(failures, "ok")
        if what == "drop":
            raise httpx.ReadError("connection reset")
        if what == "503":
            return httpx.Response(503)
        return httpx.Response(200, content=b'{"tags": ["a"]}')

    reg = client.Registry("127.0.0.1:1", transport=httpx.MockTransport(handler))
    assert reg.tags("x") == ["a"]
    assert calls.count("/v2/x/tags/list") == 4
    with pytest.raises(client.RegistryError, match="not found"):
        reg.get_manifest("x", "missing")
    assert calls.count("/v2/x/manifests/missing") == 1


def test_bearer_challenge_gets_a_token_per_scope() -> None:
    import httpx

    from unionfs.store.registry import client

    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth_header = request.headers.get("authorization", "")
        seen.append((request.url.path, auth_header))
        if request.url.path == "/token":
            scope = request.url.params.get("scope", "")
            assert auth_header.startswith("Basic ")
            return httpx.Response(200, json={"token": f"tok-{scope}"})
        if auth_header.startswith("Bearer tok-repository:"):
            return httpx.Response(200, json={"tags": []})
        return httpx.Response(401, headers={"www-authenticate":
                              'Bearer realm="http://127.0.0.1:1/token",service="s"'})

    reg = client.Registry("127.0.0.1:1", transport=httpx.MockTransport(handler),
                          credentials=auth.Credentials("u", "p"))
    assert reg.tags("a/b") == []
    assert ("/v2/a/b/tags/list", "Bearer tok-repository:a/b:pull") in seen
    assert reg.tags("a/b") == []  # the token is reused: no new token request
    assert sum(path == "/token" for path, _ in seen) == 1
