"""A file the kernel still holds after its last name went (unlinked, or renamed over).

A process may have looked a file up and not opened it yet when another process removes it
(``open(O_CREAT)`` does its lookup, then the open, with nothing held between the two); an
O_PATH fd is the same state made to last. On the kernel's overlayfs the file lives on
until that inode goes: it can be opened and changed, and no new file gets its inode number.
unionfs must do the same: a new file with the old number would make the kernel declare the
old inode bad, and whoever uses it gets EIO (the EIO the stress test used to see).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack

StackFactory = Callable[..., Stack]
NEW_FILES = 30  # enough that a freed inode number is reused (ext4 hands it out again)


def mount(kind: str, stack: StackFactory, mounts: Mounts) -> Path:
    st = stack({"d/lower": "l"}, upper={"d/f": "old", "d/g": "replacing"})
    return mounts.overlay(st) if kind == "overlay" else mounts.unionfs(st)


def removed_while_held(mnt: Path, remove: Callable[[], None]) -> tuple[int, int, list[int]]:
    """An O_PATH fd of d/f, then ``remove()`` and new files made: (fd, old st_ino, the new
    files' st_ino)."""
    fd = os.open(mnt / "d" / "f", os.O_PATH)
    old_ino = os.fstat(fd).st_ino
    remove()
    new = []
    for i in range(NEW_FILES):
        path = mnt / "d" / f"new{i}"
        path.write_text("new")
        new.append(os.stat(path).st_ino)
    return fd, old_ino, new


@pytest.mark.parametrize("kind", ["overlay", "unionfs"])
@pytest.mark.parametrize("how", ["unlink", "rename-over"])
def test_removed_file_lives_on_while_held(stack: StackFactory, mounts: Mounts, kind: str,
                                          how: str) -> None:
    mnt = mount(kind, stack, mounts)
    if how == "unlink":
        def remove() -> None:
            os.unlink(mnt / "d" / "f")
    else:
        def remove() -> None:
            os.rename(mnt / "d" / "g", mnt / "d" / "f")
    fd, old_ino, new = removed_while_held(mnt, remove)
    try:
        assert old_ino not in new
        st = os.fstat(fd)
        assert (st.st_ino, st.st_nlink, st.st_size) == (old_ino, 0, 3)
        opened = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        try:
            assert os.read(opened, 10) == b"old"
            os.write(opened, b" and more")
            assert os.fstat(opened).st_size == len("old and more")
        finally:
            os.close(opened)
    finally:
        os.close(fd)
    if how == "unlink":
        assert not (mnt / "d" / "f").exists()
    else:
        assert (mnt / "d" / "f").read_text() == "replacing"
