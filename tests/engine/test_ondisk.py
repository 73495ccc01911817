"""The union and the store read every on-disk form of the markers the same way.

One directory holds each form of whiteout and opacity (layers/ondisk.py): the union's reader
(``Layer.listing``) and the store's (``store.tree.listing``) must find the same names, kinds
and opacity in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from unionfs.core.whiteout import TRUSTED, USER, Kind, XattrNamespace
from unionfs.layers import ondisk
from unionfs.layers.layer import Layer
from unionfs.store.tree import listing, union_kind


def _forms(root: Path, ns: XattrNamespace) -> None:
    """Every form of marker, in directory ``root/d`` and its subdirectories."""
    d = root / "d"
    d.mkdir(parents=True)
    (d / "file").write_text("x")
    os.mknod(d / "dev_whiteout", stat.S_IFCHR | 0o600, 0)
    (d / ".wh.oci_whiteout").write_text("")
    (d / "xattr_whiteout").write_text("")
    os.setxattr(d / "xattr_whiteout", ns.whiteout, b"")
    os.setxattr(d, ns.opaque, b"x")  # its empty files may be xattr whiteouts
    (d / "opaque_xattr").mkdir()
    ondisk.mark_opaque(os.fsencode(d / "opaque_xattr"), ns)
    (d / "opaque_oci").mkdir()
    (d / "opaque_oci" / ".wh..wh..opq").write_text("")
    (d / "plain").mkdir()


@pytest.mark.parametrize("ns", [TRUSTED, USER], ids=["trusted", "user"])
def test_union_and_store_read_the_same_markers(tmp_path: Path, ns: XattrNamespace) -> None:
    _forms(tmp_path, ns)
    layer = Layer(str(tmp_path), 1)
    try:
        union = layer.listing(b"d")
        children = {name: layer.listing(b"d/" + name).opaque
                    for name in (b"opaque_xattr", b"opaque_oci", b"plain")}
    finally:
        layer.close()
    store = listing(os.fsencode(tmp_path), b"d")
    assert union.entries == {name: union_kind(node) for name, node in store.items()}
    assert union.entries == {
        b"file": Kind.OTHER, b"dev_whiteout": Kind.WHITEOUT, b"oci_whiteout": Kind.WHITEOUT,
        b"xattr_whiteout": Kind.WHITEOUT, b"opaque_xattr": Kind.DIR,
        b"opaque_oci": Kind.DIR, b"plain": Kind.DIR}
    assert children == {name: store[name].opaque for name in children}
    assert children == {b"opaque_xattr": True, b"opaque_oci": True, b"plain": False}
    assert not union.opaque  # "x" means "has xattr whiteouts", not opaque


@pytest.mark.parametrize("ns", [TRUSTED, USER], ids=["trusted", "user"])
def test_what_ondisk_writes_it_reads_back(tmp_path: Path, ns: XattrNamespace) -> None:
    """The writers (whiteout, origin, OCI marker paths) and the readers agree."""
    dfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        ondisk.make_device_whiteout(b"gone", dfd)
    finally:
        os.close(dfd)
    assert ondisk.is_device_whiteout(os.lstat(tmp_path / "gone"))
    (tmp_path / "copied").write_text("x")
    name, value = ondisk.origin_xattr(ns, 4242)
    os.setxattr(tmp_path / "copied", name, value)
    path = os.fsencode(tmp_path / "copied")

    def get(attr: bytes) -> bytes | None:
        try:
            return os.getxattr(path, attr)
        except OSError:
            return None

    assert ondisk.origin(get, ns) == 4242
    assert ondisk.origin(lambda _attr: None, ns) is None
    with pytest.raises(ValueError):
        ondisk.origin(lambda _attr: b"not a number", ns)
    (tmp_path / ".wh.y").write_text("")
    (tmp_path / ".wh..wh..opq").write_text("")
    assert ondisk.oci_whiteout_path(b"a/b", b"y") == b"a/b/.wh.y"
    assert ondisk.has_oci_whiteout(os.fsencode(tmp_path), b"y")
    assert ondisk.has_oci_opaque_marker(os.fsencode(tmp_path))
