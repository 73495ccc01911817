"""What the engine remembers between requests stays right when the union changes."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable

import pytest

from tests.conftest import Mounts, Stack

StackFactory = Callable[..., Stack]


def test_setgid_follows_chmod_and_chown_of_the_dir(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    """Set-gid inheritance sees the directory's mode and group as changed through the mount."""
    st = stack({"g/": None})
    os.chown(st.lowers[0] / "g", 0, 1234)
    os.chmod(st.lowers[0] / "g", 0o2775)
    mnt = mounts.unionfs(st)
    (mnt / "g/sgid").write_text("x")
    os.chmod(mnt / "g", 0o775)
    (mnt / "g/plain").write_text("x")
    os.chown(mnt / "g", 0, 4321)
    os.chmod(mnt / "g", 0o2775)
    os.mkdir(mnt / "g/sub")
    gids = {n: os.stat(mnt / "g" / n).st_gid for n in ("sgid", "plain", "sub")}
    assert gids == {"sgid": 1234, "plain": 0, "sub": 4321}
    assert os.stat(mnt / "g/sub").st_mode & stat.S_ISGID


def test_setgid_of_a_recreated_dir(stack: StackFactory, mounts: Mounts) -> None:
    """A directory removed and made again under the same name is asked afresh."""
    st = stack({})
    mnt = mounts.unionfs(st)
    os.mkdir(mnt / "g")
    os.chown(mnt / "g", 0, 1234)
    os.chmod(mnt / "g", 0o2775)
    (mnt / "g/f").write_text("x")
    os.unlink(mnt / "g/f")
    os.rmdir(mnt / "g")
    os.mkdir(mnt / "g", 0o755)
    (mnt / "g/f").write_text("x")
    assert os.stat(mnt / "g/f").st_gid == 0


def test_new_file_numbers_survive_remount(stack: StackFactory, mounts: Mounts) -> None:
    """Inode numbers of files created through the mount are the same after a remount."""
    st = stack({"d/a": "a"})
    mnt = mounts.unionfs(st)
    (mnt / "d/new").write_text("n")
    os.mkdir(mnt / "d/dir")
    os.symlink("t", mnt / "d/link")
    with open(mnt / "d/a", "a") as f:
        f.write("more")
    names = ("a", "new", "dir", "link")
    before = {n: os.lstat(mnt / "d" / n).st_ino for n in names}
    mounts.unmount(st.mnt)
    mnt = mounts.unionfs(st)
    assert {n: os.lstat(mnt / "d" / n).st_ino for n in names} == before


def test_absent_xattr_then_set(stack: StackFactory, mounts: Mounts) -> None:
    """An xattr found missing shows up once set through the mount (also on an open,
    unlinked file and on another name of the same file), and is gone once removed."""
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    for _ in range(2):
        with pytest.raises(OSError):
            os.getxattr(mnt / "f", "user.k")
    os.link(mnt / "f", mnt / "g")
    os.setxattr(mnt / "g", "user.k", b"1")
    assert os.getxattr(mnt / "f", "user.k") == b"1"
    os.removexattr(mnt / "f", "user.k")
    with pytest.raises(OSError):
        os.getxattr(mnt / "g", "user.k")
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.unlink(mnt / "f")
        os.unlink(mnt / "g")
        with pytest.raises(OSError):
            os.getxattr(fd, "user.k")
        os.setxattr(fd, "user.k", b"2")
        assert os.getxattr(fd, "user.k") == b"2"
    finally:
        os.close(fd)


def test_capability_of_a_new_file(stack: StackFactory, mounts: Mounts) -> None:
    """A new file has no file capabilities until they are set through the mount."""
    st = stack({})
    mnt = mounts.unionfs(st)
    (mnt / "tool").write_text("x")
    with pytest.raises(OSError):
        os.getxattr(mnt / "tool", "security.capability")
    # VFS_CAP_REVISION_2, effective, permitted = CAP_NET_BIND_SERVICE
    caps = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    os.setxattr(mnt / "tool", "security.capability", caps)
    assert os.getxattr(mnt / "tool", "security.capability") == caps
