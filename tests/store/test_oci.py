"""OCI image layout archives: deterministic save, round trip, and the real clients
(umoci, skopeo) reading what we write and writing what we load."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from unionfs.store import Store

from .helpers import busybox_rootfs, describe, ok

UMOCI = shutil.which("umoci") or "umoci"
SKOPEO = shutil.which("skopeo") or "skopeo"


def test_tools_are_installed() -> None:
    """This machine's setup installs them (./dev setup); the interop tests must not skip."""
    assert UMOCI and SKOPEO


@pytest.fixture
def image_store(tmp_path: Path) -> Path:
    """A store with 'app': busybox base + a layer with whiteouts and an opaque dir."""
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    up = tmp_path / "upper"
    (up / "etc").mkdir(parents=True)
    os.mknod(up / "etc" / "hostname", 0o020000, os.makedev(0, 0))
    (up / "usr" / "share").mkdir(parents=True)
    os.setxattr(up / "usr" / "share", "trusted.overlay.opaque", b"y")
    (up / "usr" / "share" / "only").write_text("only me")
    (up / "app").write_text("app\n")
    ok(store, "commit", "--upper", str(up), "--parent", "base", "app:1", "-m", "app layer")
    return store


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar}


def _read(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_save_is_a_deterministic_oci_layout(tmp_path: Path, image_store: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    ok(image_store, "save", "-o", str(a), "app:1")
    ok(image_store, "save", "-o", str(b), "app:1")
    assert a.read_bytes() == b.read_bytes()
    members = _members(a)
    names = list(members)
    blobs = [n for n in names if n.startswith("blobs/sha256/")]
    assert len(blobs) >= 3  # config, manifest, at least one layer
    assert names == ["blobs", "blobs/sha256", *sorted(blobs), "index.json", "oci-layout"]
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members.values())
    assert json.loads(_read(a, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(_read(a, "index.json"))
    desc = index["manifests"][0]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1"
    manifest_data = _read(a, "blobs/sha256/" + desc["digest"][7:])
    assert "sha256:" + hashlib.sha256(manifest_data).hexdigest() == desc["digest"]
    manifest = json.loads(manifest_data)
    config = json.loads(_read(a, "blobs/sha256/" + manifest["config"]["digest"][7:]))
    store = Store.open(image_store)
    assert manifest["config"]["digest"] == store.image("app:1").id
    assert config["rootfs"]["diff_ids"] == [d["digest"] for d in manifest["layers"]]
    assert [h["comment"] for h in config["history"] if "comment" in h] == ["app layer"]
    top_layer = _read(a, "blobs/sha256/" + manifest["layers"][1]["digest"][7:])
    with tarfile.open(fileobj=io.BytesIO(top_layer)) as top:
        names = top.getnames()
    assert "etc/.wh.hostname" in names and "usr/share/.wh..wh..opq" in names
    assert all(manifest["layers"][i]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
               for i in range(2))


def test_save_load_round_trip(tmp_path: Path, image_store: Path) -> None:
    archive = tmp_path / "img.tar"
    ok(image_store, "save", "-o", str(archive), "app:1")
    other = tmp_path / "other"
    out = ok(other, "load", "-i", str(archive))
    assert out.strip() == "Loaded image: app:1"
    src, dst = Store.open(image_store), Store.open(other)
    assert dst.image("app:1").id == src.image("app:1").id
    for a, b in zip(src.image("app:1").layer_dirs, dst.image("app:1").layer_dirs, strict=True):
        assert describe(a) == describe(b)
    again = tmp_path / "again.tar"
    ok(other, "save", "-o", str(again), "app:1")
    assert again.read_bytes() == archive.read_bytes()
    ok(other, "load", "-i", str(archive), "--tag", "renamed:2")
    assert dst.image("renamed:2").id == src.image("app:1").id


def test_umoci_unpacks_what_we_save(tmp_path: Path, image_store: Path) -> None:
    archive = tmp_path / "img.tar"
    ok(image_store, "save", "-o", str(archive), "app:1")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    subprocess.run([UMOCI, "unpack", "--image", f"{layout}:1", str(bundle)], check=True,
                   capture_output=True)
    squashed = tmp_path / "sq"
    ok(image_store, "squash", "app:1", "--into", "flat")
    flat = Store.open(image_store).image("flat").layer_dirs[0]
    del squashed
    ours = describe(flat)
    theirs = describe(bundle / "rootfs")
    theirs.pop(".", None)
    assert sorted(theirs) == sorted(ours)
    for path, entry in ours.items():
        assert theirs[path][:6] == entry[:6], path  # umoci sets its own directory mtimes


def test_skopeo_reads_what_we_save(tmp_path: Path, image_store: Path) -> None:
    archive = tmp_path / "img.tar"
    ok(image_store, "save", "-o", str(archive), "app:1")
    res = subprocess.run([SKOPEO, "inspect", "--raw", f"oci-archive:{archive}:1"],
                         check=True, capture_output=True, text=True)
    assert len(json.loads(res.stdout)["layers"]) == 2
    dest = tmp_path / "copy"
    subprocess.run([SKOPEO, "copy", "-q", f"oci-archive:{archive}:1", f"oci:{dest}:copied"],
                   check=True, capture_output=True)
    # skopeo recompresses the layers (gzip); we load them back to the same content.
    fresh = tmp_path / "fresh"
    ok(fresh, "load", "-i", str(dest))
    src, dst = Store.open(image_store), Store.open(fresh)
    assert dst.image("copied").layer_ids == src.image("app:1").layer_ids


def test_we_load_what_umoci_and_skopeo_write(tmp_path: Path) -> None:
    """An image built by umoci (gzip layers, its own tar ordering, a whiteout and an opaque
    insert), copied to an oci-archive by skopeo, loads and shows the right tree."""
    layout = tmp_path / "layout"
    run = lambda *a: subprocess.run([UMOCI, *a], check=True, capture_output=True)  # noqa: E731
    run("init", "--layout", str(layout))
    run("new", "--image", f"{layout}:t")
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    run("insert", "--image", f"{layout}:t", str(rootfs), "/")
    run("insert", "--image", f"{layout}:t", "--whiteout", "/etc/hostname")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "new").write_text("new")
    run("insert", "--image", f"{layout}:t", "--opaque", str(extra), "/usr/share")
    run("config", "--image", f"{layout}:t", "--config.cmd", "/bin/sh", "--author", "umoci-test")
    archive = tmp_path / "umoci.tar"
    subprocess.run([SKOPEO, "copy", "-q", f"oci:{layout}:t", f"oci-archive:{archive}:t"],
                   check=True, capture_output=True)
    store = tmp_path / "store"
    assert ok(store, "load", "-i", str(archive)).strip() == "Loaded image: t:latest"
    ok(store, "load", "-i", str(layout), "--tag", "from-dir")
    s = Store.open(store)
    image = s.image("t")
    assert image.config["config"]["Cmd"] == ["/bin/sh"]
    assert s.image("from-dir").layer_ids == image.layer_ids
    ok(store, "squash", "t", "--into", "flat")
    tree = describe(s.image("flat").layer_dirs[0])
    assert "etc/hostname" not in tree and "etc/passwd" in tree
    assert "usr/share/new" in tree and "usr/share/doc" not in tree
    assert tree["bin/sh"][4] == "/bin/busybox"
    history = json.loads(ok(store, "history", "t", "--format", "json"))
    assert [r["layer"] for r in history if r["layer"]] == image.layer_ids[::-1]
    assert [r["size"] for r in history if not r["layer"]] == [0]  # umoci config's record


def test_we_load_a_docker_save_archive(tmp_path: Path, image_store: Path) -> None:
    """skopeo writes a ``docker save`` archive (manifest.json, no OCI index); we load it."""
    archive = tmp_path / "img.tar"
    ok(image_store, "save", "-o", str(archive), "app:1")
    docker = tmp_path / "docker.tar"
    subprocess.run([SKOPEO, "copy", "-q", f"oci-archive:{archive}:1",
                    f"docker-archive:{docker}:example/app:2"], check=True, capture_output=True)
    with tarfile.open(docker) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "index.json" not in names
    fresh = tmp_path / "fresh"
    assert ok(fresh, "load", "-i", str(docker)).strip() == "Loaded image: example/app:2"
    assert (Store.open(fresh).image("example/app:2").layer_ids
            == Store.open(image_store).image("app:1").layer_ids)


def test_docker_archive_with_hostile_paths_is_rejected(tmp_path: Path) -> None:
    from .helpers import assert_one_line_error, make_tar, run_cli, store_state

    manifest = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
    bad = make_tar(tmp_path / "bad.tar", [{"name": "manifest.json", "data": manifest}])
    store = tmp_path / "store"
    ok(store, "images")
    before = store_state(store)
    assert_one_line_error(run_cli(store, "load", "-i", str(bad)), "'..'")
    assert store_state(store) == before
