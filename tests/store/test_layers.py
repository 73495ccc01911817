"""Layer directories as changesets: every on-disk encoding read, one canonical tar written."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from unionfs.store import Store
from unionfs.store.layertar import layer_digest, write_tar
from unionfs.store.tree import NodeType, scan
from unionfs.store.untar import normalize_name, symlink_escapes

from .helpers import busybox_rootfs, describe


def _nodes(root: Path) -> dict[bytes, tuple[NodeType, bool]]:
    return {n.path: (n.type, n.opaque) for n in scan(root)}


def test_scan_reads_every_whiteout_and_opaque_form(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "a").mkdir(parents=True)
    os.mknod(up / "a" / "gone", 0o020000, os.makedev(0, 0))  # overlayfs whiteout
    (up / "a" / ".wh.oci-gone").write_bytes(b"")  # OCI whiteout
    (up / "t").mkdir()
    os.setxattr(up / "t", "trusted.overlay.opaque", b"y")
    (up / "u").mkdir()
    os.setxattr(up / "u", "user.overlay.opaque", b"y")
    (up / "o").mkdir()
    (up / "o" / ".wh..wh..opq").write_bytes(b"")
    (up / "x").mkdir()
    os.setxattr(up / "x", "trusted.overlay.opaque", b"x")  # has xattr whiteouts, not opaque
    (up / "x" / "xw").write_bytes(b"")
    os.setxattr(up / "x" / "xw", "trusted.overlay.whiteout", b"y")
    nodes = _nodes(up)
    assert nodes[b"a/gone"] == (NodeType.WHITEOUT, False)
    assert nodes[b"a/oci-gone"] == (NodeType.WHITEOUT, False)
    assert nodes[b"t"] == (NodeType.DIR, True)
    assert nodes[b"u"] == (NodeType.DIR, True)
    assert nodes[b"o"] == (NodeType.DIR, True)
    assert nodes[b"x"] == (NodeType.DIR, False)
    assert nodes[b"x/xw"] == (NodeType.WHITEOUT, False)
    assert b"o/.wh..wh..opq" not in nodes and b"a/.wh.oci-gone" not in nodes


def test_canonical_order_puts_directories_before_their_contents(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for p in ("a-b/x", "a/z", "a.c/y"):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_text(p)
    paths = [n.path for n in scan(root)]
    assert paths == [b"a", b"a/z", b"a-b", b"a-b/x", b"a.c", b"a.c/y"]


def test_tar_uses_oci_markers_and_drops_private_xattrs(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "d").mkdir(parents=True)
    os.setxattr(up / "d", "trusted.overlay.opaque", b"y")
    (up / "d" / "f").write_text("data")
    os.setxattr(up / "d" / "f", "trusted.overlay.unionfs.origin", b"secret")
    os.setxattr(up / "d" / "f", "user.keep", b"\xff\x00binary")
    os.mknod(up / "w", 0o020000, os.makedev(0, 0))
    buf = io.BytesIO()
    write_tar(scan(up), buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf, encoding="utf-8", errors="surrogateescape") as tar:
        members = {m.name: m for m in tar}
    # Entries in the order of the names they stand for (a whiteout sorts as its target, "w"),
    # a directory's opaque marker first: the layer digest depends on this order.
    assert list(members) == ["d", "d/.wh..wh..opq", "d/f", ".wh.w"]
    f = members["d/f"]
    assert "SCHILY.xattr.trusted.overlay.unionfs.origin" not in f.pax_headers
    assert f.pax_headers["SCHILY.xattr.user.keep"].encode("utf-8", "surrogateescape") == (
        b"\xff\x00binary")
    assert not any("overlay" in k for k in members["d"].pax_headers)
    assert members[".wh.w"].isfile() and members[".wh.w"].size == 0
    assert f.uname == "" and f.gname == ""


def test_digest_ignores_atime_and_encoding_of_whiteouts(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_text("same")
        os.utime(root / "d" / "f", (1, 1_600_000_000))
        os.utime(root / "d", (1, 1_600_000_000))
    os.mknod(a / "d" / "gone", 0o020000, os.makedev(0, 0))
    os.utime(a / "d", (1, 1_600_000_000))
    (b / "d" / ".wh.gone").write_bytes(b"")
    os.utime(b / "d", (5, 1_600_000_000))
    os.utime(b / "d" / "f", (999, 1_600_000_000))
    assert layer_digest(scan(a)) == layer_digest(scan(b))
    os.utime(b / "d" / "f", (999, 1_600_000_001))
    assert layer_digest(scan(a)) != layer_digest(scan(b))


def test_import_of_dir_and_of_its_tarball_give_the_same_layer(tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "rootfs")
    tarball = tmp_path / "rootfs.tar.gz"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-C", root, "-czf", tarball, "."],
                   check=True)
    store = Store.open(tmp_path / "store")
    from_dir = store.import_rootfs(root, "a")
    from_tar = store.import_rootfs(tarball, "b")
    assert from_dir.layer_ids == from_tar.layer_ids
    layer = from_dir.layer_dirs[0]
    assert describe(layer) == describe(root)
    st = os.lstat(layer / "etc" / "passwd.link")
    assert st.st_nlink == 2 and st.st_ino == os.lstat(layer / "etc" / "passwd").st_ino
    assert len(list((tmp_path / "store" / "layers" / "sha256").iterdir())) == 1


def test_name_checks() -> None:
    assert normalize_name("./a/./b/") == b"a/b"
    assert normalize_name(".") == b""
    assert symlink_escapes(b"a/l", b"../x") is False
    assert symlink_escapes(b"a/l", b"../../x") is True
    assert symlink_escapes(b"l", b"/etc/passwd") is False  # resolved inside the image
    assert symlink_escapes(b"a/b/l", b"x/../../..") is False
    assert symlink_escapes(b"a/b/l", b"x/../../../..") is True


def test_implicit_parents_are_reproducible(tmp_path: Path) -> None:
    """A tar naming only ``a/b/f`` (no directory entries) gives the same layer at any time."""
    import time

    from .helpers import make_tar

    tar = make_tar(tmp_path / "t.tar", [{"name": "a/b/f", "data": b"x"}])
    first = Store.open(tmp_path / "s1").import_rootfs(tar, "x").layer_ids
    time.sleep(1.1)
    second = Store.open(tmp_path / "s2").import_rootfs(tar, "x").layer_ids
    assert first == second
    st = os.stat(tmp_path / "s1" / "layers" / "sha256" / first[0][7:] / "fs" / "a")
    assert (st.st_mode & 0o7777, st.st_mtime) == (0o755, 0)


def test_image_names() -> None:
    from unionfs.errors import UserError
    from unionfs.store.refs import normalize_tag, short_name, split_ref

    assert normalize_tag("library/busybox") == "library/busybox:latest"
    assert normalize_tag("localhost:5000/x/y:t") == "localhost:5000/x/y:t"
    assert split_ref("localhost:5000/x") == ("localhost:5000/x", "latest")
    assert short_name("docker.io/library/busybox:1") == "busybox:1"
    for bad in ("Bad Name!", "a//b", "x:", "-a", "a:b:c/d"):
        with pytest.raises(UserError):
            normalize_tag(bad)
