"""What the engine remembers between requests stays right when the union changes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

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
