"""What a hostile registry serves never reaches the store: malformed or oversized manifests,
indexes and configs, blobs that lie about their size or digest, layers with escaping
entries or symlink chains. Each: one error line, non-zero exit, the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unionfs.store.refs import oci_arch

from .helpers import add_member, busybox_rootfs, ok, run_cli, store_state, tmp_is_empty
from .registry_server import StaticRegistry

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def plain(tar: tarfile.TarFile) -> None:
    add_member(tar, "etc/", type_=tarfile.DIRTYPE, mode=0o755)
    add_member(tar, "etc/hello", data=b"hello\n")


def escaping(tar: tarfile.TarFile) -> None:
    add_member(tar, "../evil", data=b"out\n")


def chain(tar: tarfile.TarFile) -> None:
    add_member(tar, "x", type_=tarfile.SYMTYPE, linkname=".")
    add_member(tar, "L1", type_=tarfile.SYMTYPE, linkname="x/..")
    for i in range(2, 12):
        add_member(tar, f"L{i}", type_=tarfile.SYMTYPE, linkname=f"L{i - 1}/..")
    add_member(tar, "shadow", type_=tarfile.SYMTYPE, linkname="L11/etc/shadow")


def routes(tar: bytes, **damage: Any) -> dict[str, tuple[int, str, bytes]]:
    """A one-layer image at /v2/h/manifests/1, then damaged as asked."""
    blob = gzip.compress(tar, mtime=0)
    config: Any = {"architecture": oci_arch(), "os": "linux", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}
    if "config" in damage:
        config = damage["config"](config)
    raw_config = json.dumps(config).encode()
    layer = {"mediaType": MT_LAYER, "digest": sha(blob), "size": len(blob)}
    if "layer" in damage:
        layer = damage["layer"](layer)
    manifest: Any = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                     "config": {"mediaType": MT_CONFIG, "digest": sha(raw_config),
                                "size": len(raw_config)}, "layers": [layer]}
    if "manifest" in damage:
        manifest = damage["manifest"](manifest)
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    served_config = damage.get("served_config", raw_config)
    return {"/v2/h/manifests/1": (200, MT_MANIFEST, raw),
            f"/v2/h/blobs/{sha(raw_config)}": (200, "application/octet-stream", served_config),
            f"/v2/h/blobs/{sha(blob)}": (200, "application/octet-stream", blob)}


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda doc: {**doc, key: value}


CASES: dict[str, tuple[dict[str, tuple[int, str, bytes]], str]] = {
    "manifest layers are not objects": (routes(layer_tar(plain), manifest=_set(
        "layers", ["x"])), "manifest"),
    "manifest is not JSON": (routes(layer_tar(plain), manifest=lambda _m: b"{nope"),
                             "not valid JSON"),
    "manifest is huge": (routes(layer_tar(plain), manifest=lambda _m: b" " * (5 << 20) +
                                b"{}"), "is larger than"),
    "index entries are not objects": (routes(layer_tar(plain), manifest=lambda _m: {
        "schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [1, 2]}), "index"),
    "config rootfs is a string": (routes(layer_tar(plain), config=_set("rootfs", "x")),
                                  "rootfs"),
    "config is not what its digest says": (routes(layer_tar(plain), served_config=b"{}"),
                                           "does not match its digest"),
    "layer is larger than declared": (routes(layer_tar(plain), layer=lambda d: {
        **d, "size": d["size"] - 10}), "larger than its manifest says"),
    "layer digest is wrong": (routes(layer_tar(plain), layer=lambda d: {
        **d, "digest": sha(b"other")}), "HTTP 404"),
    "diff_id is wrong": (routes(layer_tar(plain), config=lambda c: {
        **c, "rootfs": {"type": "layers", "diff_ids": [sha(b"x")]}}), "does not match its diff_id"),
    "layer escapes": (routes(layer_tar(escaping)), ".."),
    "layer holds a symlink chain out": (routes(layer_tar(chain)),
                                        "symlink chain resolves outside the layer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_registry_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          case: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    empty = tmp_path / "registries.conf"
    empty.write_text("")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(empty))
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base:1")
    before = store_state(store)
    served, words = CASES[case]
    with StaticRegistry(served) as reg:
        res = run_cli(store, "pull", f"{reg.host}/h:1")
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unionfs: error: "), res.stderr
    assert words in lines[0], lines[0]
    assert store_state(store) == before and tmp_is_empty(store)


def test_the_well_formed_image_is_pulled(tmp_path: Path) -> None:
    """The same server, undamaged: the image arrives (so the cases above fail for their
    damage, not for the server)."""
    store = tmp_path / "store"
    with StaticRegistry(routes(layer_tar(plain))) as reg:
        ok(store, "pull", f"{reg.host}/h:1")
        info = json.loads(ok(store, "inspect", f"{reg.host}/h:1"))[0]
    assert (Path(info["Layers"][0]["Dir"]) / "etc" / "hello").read_text() == "hello\n"
