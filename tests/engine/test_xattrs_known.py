"""Which xattrs the union knows a file lacks (getxattr's fast path answers those at once)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from unionfs.core.whiteout import TRUSTED
from unionfs.engine.changes import Changes
from unionfs.engine.union import CAPABILITY, StackConfig, Union


def test_a_file_without_xattrs_is_known_to_lack_every_name(tmp_path: Path) -> None:
    (tmp_path / "lower").mkdir()
    (tmp_path / "lower/bare").write_text("x")
    (tmp_path / "lower/labelled").write_text("y")
    os.setxattr(tmp_path / "lower/labelled", "user.kept", b"v")
    (tmp_path / "upper").mkdir()
    u = Union(StackConfig([str(tmp_path / "lower")], str(tmp_path / "upper"),
                          str(tmp_path / "work"), TRUSTED))
    try:
        found = {name: u.lookup(u.root, name) for name in (b"bare", b"labelled")}
        bare, labelled = (f[0] for f in found.values() if f is not None)
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
    (tmp_path / "lower").mkdir()
    (tmp_path / "lower/bare").write_text("x")
    (tmp_path / "lower/capable").write_text("y")
    os.setxattr(tmp_path / "lower/capable", "security.capability", cap)
    (tmp_path / "upper").mkdir()
    u = Union(StackConfig([str(tmp_path / "lower")], str(tmp_path / "upper"),
                          str(tmp_path / "work"), TRUSTED))
    try:
        found = {name: u.lookup(u.root, name) for name in (b"bare", b"capable")}
        bare, capable = (f[0] for f in found.values() if f is not None)
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
