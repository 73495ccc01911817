"""Which xattrs the union knows a file lacks (getxattr's fast path answers those at once)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from unionfs.core.whiteout import TRUSTED
from unionfs.engine.changes import Changes
from unionfs.engine.nodes import Node
from unionfs.engine.union import CAPABILITY, StackConfig, Union


def _union(tmp_path: Path, name: bytes, xattr: str, value: bytes) -> Union:
    """A union over one lower of two files: ``bare`` without xattrs, ``name`` with one."""
    (tmp_path / "lower").mkdir()
    (tmp_path / "lower/bare").write_text("x")
    (tmp_path / "lower" / os.fsdecode(name)).write_text("y")
    os.setxattr(tmp_path / "lower" / os.fsdecode(name), xattr, value)
    (tmp_path / "upper").mkdir()
    return Union(StackConfig([str(tmp_path / "lower")], str(tmp_path / "upper"),
                             str(tmp_path / "work"), TRUSTED))


def _files(u: Union, *names: bytes) -> list[Node]:
    """The nodes of files in the union's root."""
    found = [u.lookup(u.root, name) for name in names]
    return [f[0] for f in found if f is not None]


def test_a_file_without_xattrs_is_known_to_lack_every_name(tmp_path: Path) -> None:
    u = _union(tmp_path, b"labelled", "user.kept", b"v")
    try:
        bare, labelled = _files(u, b"bare", b"labelled")
        assert not u.knows_absent(bare, b"security.selinux")
        assert u.getxattr(bare, b"security.selinux") is None
        assert u.knows_absent(bare, b"system.posix_acl_access")  # listxattr: none at all
        assert u.getxattr(labelled, b"security.selinux") is None
        assert u.knows_absent(labelled, b"security.selinux")
        assert not u.knows_absent(labelled, b"user.kept")
        assert u.getxattr(labelled, b"user.kept") == b"v"
        Changes(u).setxattr(bare, b"user.new", b"w")
        assert not u.knows_absent(bare, b"user.new")
        assert u.getxattr(bare, b"user.new") == b"w"
    finally:
        u.close()


def test_a_copy_up_knows_whether_the_copy_has_file_capabilities(tmp_path: Path) -> None:
    """The kernel asks for security.capability before every write: after a copy-up that
    copied none, the answer is known (no system call); a copied one is read."""
    cap = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # v2, effective, cap_net_raw
    u = _union(tmp_path, b"capable", "security.capability", cap)
    try:
        bare, capable = _files(u, b"bare", b"capable")
        for node in (bare, capable):
            u.copy_up(node)
        assert u.knows_absent(bare, CAPABILITY)
        assert u.getxattr(bare, CAPABILITY) is None
        assert not u.knows_absent(capable, CAPABILITY)
        assert u.getxattr(capable, CAPABILITY) == cap
        Changes(u).setxattr(bare, CAPABILITY, cap)
        assert not u.knows_absent(bare, CAPABILITY)
        assert u.getxattr(bare, CAPABILITY) == cap
    finally:
        u.close()
