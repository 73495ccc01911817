"""Malformed and hostile archives: one-line error, exit 2, the store exactly as before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from .helpers import (
    assert_one_line_error,
    busybox_rootfs,
    make_tar,
    ok,
    run_cli,
    store_state,
    tmp_is_empty,
)

REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

HOSTILE: dict[str, tuple[list[dict[str, object]], str]] = {
    "dotdot": ([{"name": "ok", "data": b"1"}, {"name": "../evil", "data": b"x"}], "'..'"),
    "dotdot-inside": ([{"name": "a/../../evil", "data": b"x"}], "'..'"),
    "absolute": ([{"name": "/evil", "data": b"x"}], "absolute"),
    "symlink-escape": ([{"name": "l", "type_": SYM, "linkname": "../../../etc"}], "symlink"),
    "symlink-escape-deep": ([{"name": "a/b/l", "type_": SYM, "linkname": "../../../x"}],
                            "symlink"),
    "through-symlink": ([{"name": "d", "type_": SYM, "linkname": "/etc"},
                         {"name": "d/passwd", "data": b"owned"}], "goes through symlink"),
    "through-file": ([{"name": "f", "data": b"x"}, {"name": "f/g", "data": b"y"}],
                     "goes through file"),
    "hardlink-absolute": ([{"name": "h", "type_": LNK, "linkname": "/etc/passwd"}],
                          "hard link"),
    "hardlink-dotdot": ([{"name": "h", "type_": LNK, "linkname": "../outside"}], "hard link"),
    "hardlink-missing": ([{"name": "h", "type_": LNK, "linkname": "not/in/archive"}],
                         "hard link"),
    "hardlink-to-dir": ([{"name": "d", "type_": DIR, "mode": 0o755},
                         {"name": "h", "type_": LNK, "linkname": "d"}], "hard link"),
    "hardlink-forward": ([{"name": "h", "type_": LNK, "linkname": "later"},
                          {"name": "later", "data": b"x"}], "hard link"),
    "dir-replaced": ([{"name": "d/x", "data": b"1"}, {"name": "d", "data": b"2"}],
                     "replaces a directory"),
}


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A store with one image, so 'unchanged' means something."""
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    return store


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_import_is_rejected_and_store_unchanged(tmp_path: Path, populated: Path,
                                                        case: str) -> None:
    members, word = HOSTILE[case]
    bad = make_tar(tmp_path / f"{case}.tar", members)
    before = store_state(populated)
    res = run_cli(populated, "import", str(bad), "--tag", "evil")
    assert_one_line_error(res, word)
    assert store_state(populated) == before
    assert tmp_is_empty(populated)
    assert not (tmp_path / "evil").exists() and not (populated / "evil").exists()
    assert "evil" not in ok(populated, "images")


@pytest.mark.parametrize("garbage", [b"", b"not a tar at all" * 100, b"\x1f\x8b\x08garbage"])
def test_garbage_is_rejected(tmp_path: Path, populated: Path, garbage: bytes) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(garbage)
    before = store_state(populated)
    assert_one_line_error(run_cli(populated, "import", str(bad), "--tag", "evil"))
    assert store_state(populated) == before and tmp_is_empty(populated)


def test_truncated_tar_is_rejected(tmp_path: Path, populated: Path) -> None:
    good = make_tar(tmp_path / "good.tar", [{"name": f"f{i}", "data": b"x" * 5000}
                                            for i in range(5)])
    bad = tmp_path / "bad.tar"
    bad.write_bytes(good.read_bytes()[:8000])
    before = store_state(populated)
    assert_one_line_error(run_cli(populated, "import", str(bad), "--tag", "evil"), "archive")
    assert store_state(populated) == before and tmp_is_empty(populated)


def test_device_node_as_root_is_kept(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "dev.tar", [
        {"name": "dev", "type_": DIR, "mode": 0o755},
        {"name": "dev/null", "type_": tarfile.CHRTYPE, "dev": (1, 3), "mode": 0o666}])
    store = tmp_path / "store"
    ok(store, "import", str(tar), "--tag", "withdev")
    info = json.loads(ok(store, "inspect", "withdev"))[0]
    null = Path(info["Layers"][0]["Dir"]) / "dev" / "null"
    assert os.major(null.lstat().st_rdev) == 1 and os.minor(null.lstat().st_rdev) == 3


def test_device_node_unprivileged_is_left_out_and_named(tmp_path: Path) -> None:
    """In a user namespace (no CAP_MKNOD on the host) a device node cannot be kept: it is left
    out, as in podman's rootless storage, and a warning names it; the overlayfs whiteout 0/0
    is still allowed and opaque dirs fall back to user xattrs."""
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    bad = make_tar(tmp_path / "dev.tar", [
        {"name": "dev", "type_": DIR, "mode": 0o755},
        {"name": "dev/sda", "type_": tarfile.BLKTYPE, "dev": (8, 0)}])
    userns = ["unshare", "--user", "--map-root-user"]
    before = store_state(store)
    res = run_cli(store, "import", str(bad), "--tag", "devs", prefix=userns)
    assert res.returncode == 0, res.stderr
    assert "device node(s) not kept" in res.stderr and "dev/sda" in res.stderr
    assert store_state(store) != before and tmp_is_empty(store)
    layer = Path(json.loads(ok(store, "inspect", "devs"))[0]["Layers"][0]["Dir"])
    assert (layer / "dev").is_dir() and not os.path.lexists(layer / "dev" / "sda")
    fine = make_tar(tmp_path / "fine.tar", [
        {"name": "d", "type_": DIR, "mode": 0o755},
        {"name": "d/.wh..wh..opq"}, {"name": "d/f", "data": b"x"}, {"name": ".wh.gone"}])
    res = run_cli(store, "import", str(fine), "--tag", "rootless", prefix=userns)
    assert res.returncode == 0, res.stderr
    layer = Path(json.loads(ok(store, "inspect", "rootless"))[0]["Layers"][0]["Dir"])
    assert os.getxattr(layer / "d", "user.overlay.opaque") == b"y"
    assert os.lstat(layer / "gone").st_rdev == 0 and (layer / "gone").is_char_device()


def _saved(tmp_path: Path, store: Path) -> Path:
    """The OCI layout of image 'base', unpacked into a directory."""
    ok(store, "save", "base", "-o", str(tmp_path / "img.tar"))
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(tmp_path / "img.tar") as tar:
        tar.extractall(layout, filter="data")
    return layout


def _pack(layout: Path, out: Path) -> Path:
    subprocess.run(["tar", "-C", layout, "-cf", out, "."], check=True)
    return out


def _manifest(layout: Path) -> tuple[dict, Path]:
    index = json.loads((layout / "index.json").read_text())
    path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    return json.loads(path.read_text()), path


def _load_rejected(tmp_path: Path, store: Path, archive: Path, *words: str) -> None:
    before = store_state(store)
    assert_one_line_error(run_cli(store, "load", "-i", str(archive)), *words)
    assert store_state(store) == before and tmp_is_empty(store)


def test_load_rejects_a_tampered_layer_blob(tmp_path: Path, populated: Path) -> None:
    layout = _saved(tmp_path, populated)
    manifest, _ = _manifest(layout)
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF
    blob.write_bytes(bytes(data))
    other = tmp_path / "other-store"
    ok(other, "import", str(busybox_rootfs(tmp_path / "r2")), "--tag", "x")
    _load_rejected(tmp_path, other, _pack(layout, tmp_path / "bad.tar"),
                   "does not match its digest")


def test_load_rejects_a_wrong_diff_id(tmp_path: Path, populated: Path) -> None:
    """Blob digests all consistent, but the config's diff_id is not the layer's content."""
    import hashlib

    layout = _saved(tmp_path, populated)
    manifest, _ = _manifest(layout)
    cpath = layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    config = json.loads(cpath.read_text())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    cdata = json.dumps(config).encode()
    cdig = hashlib.sha256(cdata).hexdigest()
    (layout / "blobs" / "sha256" / cdig).write_bytes(cdata)
    manifest["config"].update(digest="sha256:" + cdig, size=len(cdata))
    mdata = json.dumps(manifest).encode()
    mdig = hashlib.sha256(mdata).hexdigest()
    (layout / "blobs" / "sha256" / mdig).write_bytes(mdata)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest="sha256:" + mdig, size=len(mdata))
    (layout / "index.json").write_text(json.dumps(index))
    store = tmp_path / "fresh"
    ok(store, "images")
    _load_rejected(tmp_path, store, _pack(layout, tmp_path / "bad.tar"), "diff_id")


def test_load_rejects_missing_blob_and_bad_index(tmp_path: Path, populated: Path) -> None:
    layout = _saved(tmp_path, populated)
    manifest, _ = _manifest(layout)
    broken = tmp_path / "broken"
    shutil.copytree(layout, broken)
    (broken / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).unlink()
    _load_rejected(tmp_path, populated, _pack(broken, tmp_path / "b1.tar"), "missing blob")
    (layout / "index.json").write_text("{not json")
    _load_rejected(tmp_path, populated, _pack(layout, tmp_path / "b2.tar"), "index.json")


def test_load_rejects_hostile_outer_archive(tmp_path: Path, populated: Path) -> None:
    bad = make_tar(tmp_path / "outer.tar", [{"name": "oci-layout", "data": b"{}"},
                                            {"name": "../escape", "data": b"x"}])
    _load_rejected(tmp_path, populated, bad, "'..'")
    assert not (tmp_path / "escape").exists()
    bad = make_tar(tmp_path / "outer2.tar", [
        {"name": "blobs", "type_": SYM, "linkname": "/etc"}])
    _load_rejected(tmp_path, populated, bad, "links outside")


def test_load_rejects_a_layer_with_hostile_entries(tmp_path: Path, populated: Path) -> None:
    """A second layer with a '..' entry: nothing of the first layer is kept either."""
    import hashlib

    layout = _saved(tmp_path, populated)
    manifest, _ = _manifest(layout)
    evil = make_tar(tmp_path / "evil-layer.tar", [{"name": "../../evil", "data": b"x"}])
    data = evil.read_bytes()
    dig = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / dig[7:]).write_bytes(data)
    cpath = layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    config = json.loads(cpath.read_text())
    config["rootfs"]["diff_ids"].append(dig)
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": dig, "size": len(data)})
    cdata = json.dumps(config).encode()
    (layout / "blobs" / "sha256" / hashlib.sha256(cdata).hexdigest()).write_bytes(cdata)
    manifest["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": "sha256:" + hashlib.sha256(cdata).hexdigest(),
                          "size": len(cdata)}
    mdata = json.dumps(manifest).encode()
    (layout / "blobs" / "sha256" / hashlib.sha256(mdata).hexdigest()).write_bytes(mdata)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(mdata),
        "digest": "sha256:" + hashlib.sha256(mdata).hexdigest()}]}))
    store = tmp_path / "fresh"
    ok(store, "images")
    _load_rejected(tmp_path, store, _pack(layout, tmp_path / "bad.tar"), "'..'")
    assert not list((store / "layers" / "sha256").iterdir())
