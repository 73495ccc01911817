"""The write path on real mounts: copy-up and what it preserves, removal, rename, links."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.conftest import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

StackFactory = Callable[..., Stack]
TRUSTED_OPAQUE = "trusted.overlay.opaque"
TIMES = (1_111_111_111_123_456_789, 1_222_222_222_987_654_321)


def meta(path: Path) -> tuple[int, int, int, int, dict[str, bytes]]:
    """mode, uid, gid, mtime_ns and the user xattrs of ``path`` (not following it)."""
    s = os.lstat(path)
    xattrs = {} if stat.S_ISLNK(s.st_mode) else {
        n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("user.")}
    return s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns, xattrs


def dress(path: Path, mode: int, uid: int, xattr: bytes) -> None:
    """Give ``path`` distinctive metadata that a copy-up must keep."""
    os.chmod(path, mode)
    os.chown(path, uid, uid + 1)
    os.setxattr(path, "user.tag", xattr)
    os.utime(path, ns=TIMES)


def is_whiteout(path: Path) -> bool:
    """True when ``path`` is the overlayfs whiteout: char device 0/0."""
    s = os.lstat(path)
    return stat.S_ISCHR(s.st_mode) and s.st_rdev == 0


@pytest.fixture
def dressed(stack: StackFactory) -> Stack:
    """A lower ``a/b/f`` whose file and parents have their own mode, owner, times, xattrs."""
    st = stack({"a/b/f": "lower data", "a/b/other": "o"}, {"a/b/f": "hidden"})
    low = st.lowers[0]
    dress(low / "a/b/f", 0o640, 1001, b"file")
    dress(low / "a/b", 0o751, 1002, b"b")
    dress(low / "a", 0o705, 1003, b"a")
    return st


# ---- copy-up preserves everything ---------------------------------------------------------


def _write(p: Path) -> None:
    with open(p, "r+b") as f:
        f.seek(0, os.SEEK_END)


def _set_and_remove_xattr(p: Path) -> None:
    os.setxattr(p, "user.new", b"1")
    os.removexattr(p, "user.new")


COPY_UP_OPS: dict[str, Callable[[Path], object]] = {
    "open_for_write": _write,
    "setxattr": lambda p: os.setxattr(p, "user.new", b"1"),  # type: ignore[func-returns-value]
    "removexattr_other": _set_and_remove_xattr,
    "link": lambda p: os.link(p, p.parent / "hard"),
    "rename": lambda p: os.rename(p, p.parent / "renamed"),
}


@pytest.mark.parametrize("op", sorted(COPY_UP_OPS))
def test_copy_up_preserves_data_and_metadata(dressed: Stack, mounts: Mounts, op: str) -> None:
    """Each change that copies up keeps data, mode, owner, ns times and xattrs of the file
    and of every parent copied up with it."""
    mnt = mounts.unionfs(dressed)
    low, up = dressed.lowers[0], dressed.upper
    want = {rel: meta(low / rel) for rel in ("a", "a/b", "a/b/f")}
    COPY_UP_OPS[op](mnt / "a/b/f")
    name = "a/b/renamed" if op == "rename" else "a/b/f"
    assert (up / name).read_text() == "lower data"
    got = {"a": meta(up / "a"), "a/b": meta(up / "a/b"), "a/b/f": meta(up / name)}
    if op in ("setxattr",):
        got["a/b/f"][4].pop("user.new")
    for rel in ("a", "a/b", "a/b/f"):
        w, g = want[rel], got[rel]
        assert g[:3] == w[:3] and g[4] == w[4], rel
        if rel == "a/b/f" or op not in ("link", "rename"):  # dir mtimes move on link/rename
            assert g[3] == w[3], rel
    assert (low / "a/b/f").read_text() == "lower data"
    assert meta(low / "a/b/f") == want["a/b/f"]


def test_truncate_chmod_chown_utimens_copy_up(dressed: Stack, mounts: Mounts) -> None:
    """Attribute changes copy up and change only what they are asked to."""
    mnt = mounts.unionfs(dressed)
    f, up = mnt / "a/b/f", dressed.upper / "a/b/f"
    os.chmod(f, 0o600)
    assert stat.S_IMODE(os.stat(up).st_mode) == 0o600
    assert up.read_text() == "lower data"
    assert os.stat(up).st_mtime_ns == TIMES[1]
    os.chown(f, 2000, -1)
    assert (os.stat(up).st_uid, os.stat(up).st_gid) == (2000, 1002)
    os.utime(f, ns=(5_000_000_001, 6_000_000_002))
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (5_000_000_001, 6_000_000_002)
    os.truncate(f, 5)
    assert up.read_text() == "lower"
    assert (dressed.lowers[0] / "a/b/f").read_text() == "lower data"


def test_truncate_alone_copies_up(dressed: Stack, mounts: Mounts) -> None:
    """truncate(2) on a lower file copies it up with its metadata, then truncates."""
    mnt = mounts.unionfs(dressed)
    os.truncate(mnt / "a/b/f", 3)
    up = dressed.upper / "a/b/f"
    assert up.read_text() == "low"
    s = os.stat(up)
    assert (stat.S_IMODE(s.st_mode), s.st_uid) == (0o640, 1001)
    assert os.getxattr(up, "user.tag") == b"file"


def test_sparse_file_keeps_holes(stack: StackFactory, mounts: Mounts) -> None:
    """A sparse lower file is sparse in the upper: few blocks, same data and hole map."""
    st = stack({})
    size, data_at = 64 << 20, 32 << 20
    with open(st.lowers[0] / "sparse", "wb") as f:
        f.truncate(size)
        f.seek(data_at)
        f.write(b"x" * 4096)
    mnt = mounts.unionfs(st)
    with open(mnt / "sparse", "r+b") as f:
        f.seek(0)
    up = st.upper / "sparse"
    s = os.stat(up)
    assert s.st_size == size
    assert s.st_blocks * 512 <= 64 * 1024
    fd = os.open(up, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == data_at
        assert os.lseek(fd, data_at, os.SEEK_HOLE) == data_at + 4096
        assert os.pread(fd, 4, data_at) == b"xxxx"
    finally:
        os.close(fd)


def test_special_files_copy_up(stack: StackFactory, mounts: Mounts) -> None:
    """Symlinks (lchown), FIFOs and device nodes (chmod) copy up as themselves."""
    st = stack({"l": ("symlink", "/some/target")})
    low = st.lowers[0]
    os.mkfifo(low / "fifo", 0o600)
    os.mknod(low / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 7))
    os.chown(low / "l", 1500, 1500, follow_symlinks=False)
    mnt = mounts.unionfs(st)
    os.chown(mnt / "l", 1600, -1, follow_symlinks=False)
    os.chmod(mnt / "fifo", 0o644)
    os.chmod(mnt / "dev", 0o644)
    up = st.upper
    assert os.readlink(up / "l") == "/some/target"
    assert (os.lstat(up / "l").st_uid, os.lstat(up / "l").st_gid) == (1600, 1500)
    assert stat.S_ISFIFO(os.lstat(up / "fifo").st_mode)
    s = os.lstat(up / "dev")
    assert stat.S_ISCHR(s.st_mode) and s.st_rdev == os.makedev(1, 7)
    assert stat.S_IMODE(s.st_mode) == 0o644


# ---- open handles across copy-up and unlink -----------------------------------------------


def test_reader_sees_data_written_after_copy_up(stack: StackFactory, mounts: Mounts) -> None:
    """A file opened read-only before another opener copies it up reads the new data."""
    st = stack({"f": "old data"})
    mnt = mounts.unionfs(st)
    reader = os.open(mnt / "f", os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == b"old data"
        with open(mnt / "f", "r+b") as w:
            w.write(b"NEW")
        assert os.pread(reader, 100, 0) == b"NEW data"
    finally:
        os.close(reader)
    assert (st.lowers[0] / "f").read_text() == "old data"


def test_unlink_while_open(stack: StackFactory, mounts: Mounts) -> None:
    """An unlinked file stays readable and writable through its open handle."""
    st = stack({"f": "lower"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.unlink(mnt / "f")
        assert not os.path.lexists(mnt / "f")
        assert os.pread(fd, 100, 0) == b"lower"
        os.pwrite(fd, b"still here", 0)
        assert os.pread(fd, 100, 0) == b"still here"
        assert os.fstat(fd).st_size == 10
    finally:
        os.close(fd)
    assert is_whiteout(st.upper / "f")


def test_unlink_while_open_readonly_lower(stack: StackFactory, mounts: Mounts) -> None:
    """A lower file open read-only stays readable after it is deleted from the union."""
    st = stack({"f": "lower"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        os.unlink(mnt / "f")
        assert os.pread(fd, 100, 0) == b"lower"
        assert os.fstat(fd).st_size == 5
    finally:
        os.close(fd)


# ---- removing and re-creating -------------------------------------------------------------


def test_delete_lower_name_leaves_whiteout(stack: StackFactory, mounts: Mounts) -> None:
    """Deleting a lower file or dir leaves a char 0/0 whiteout; upper-only names just go."""
    st = stack({"f": "x", "d/": None}, upper={"u": "y"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "f")
    os.rmdir(mnt / "d")
    os.unlink(mnt / "u")
    assert is_whiteout(st.upper / "f") and is_whiteout(st.upper / "d")
    assert not os.path.lexists(st.upper / "u")
    assert os.listdir(mnt) == []


def test_rmdir_checks_emptiness_across_layers(stack: StackFactory, mounts: Mounts) -> None:
    """A merged dir with content only in a lower is not empty; emptied, it can go."""
    st = stack({"d/": None}, {"d/below": "x"}, upper={"d/": None})
    mnt = mounts.unionfs(st)
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt / "d")
    assert exc.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "d/below")
    os.rmdir(mnt / "d")
    assert is_whiteout(st.upper / "d")
    assert not os.path.lexists(mnt / "d")


def test_mkdir_over_whiteout_is_opaque(stack: StackFactory, mounts: Mounts) -> None:
    """A dir made where a whiteout stands is opaque: the old content stays hidden."""
    st = stack({"d/old": "x"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "d/old")
    os.rmdir(mnt / "d")
    os.mkdir(mnt / "d")
    assert os.listdir(mnt / "d") == []
    assert os.getxattr(st.upper / "d", TRUSTED_OPAQUE) == b"y"
    assert os.listxattr(mnt / "d") == []


def test_recreate_deleted_file_replaces_whiteout(stack: StackFactory, mounts: Mounts) -> None:
    """Creating a deleted name again puts a regular file where the whiteout was."""
    st = stack({"f": "old"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "f")
    (mnt / "f").write_text("new")
    assert (mnt / "f").read_text() == "new"
    assert stat.S_ISREG(os.lstat(st.upper / "f").st_mode)
    assert (st.upper / "f").read_text() == "new"


# ---- rename -------------------------------------------------------------------------------


def test_rename_deep_lower_dir_keeps_content(stack: StackFactory, mounts: Mounts) -> None:
    """A lower dir three levels deep renames (no EXDEV) with all its content, merged."""
    st = stack({"a/b/c/top": "t", "a/b/c/sub/x": "x"}, {"a/b/c/low": "l"})
    mnt = mounts.unionfs(st)
    os.rename(mnt / "a/b/c", mnt / "moved")
    assert not os.path.lexists(mnt / "a/b/c")
    got = {str(p.relative_to(mnt / "moved")): p.read_text()
           for p in (mnt / "moved").rglob("*") if p.is_file()}
    assert got == {"top": "t", "sub/x": "x", "low": "l"}
    mounts.unmount(mnt)
    mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "moved")) == ["low", "sub", "top"]
    assert not os.path.lexists(mnt / "a/b/c")


def test_rename_noreplace(stack: StackFactory, mounts: Mounts) -> None:
    """RENAME_NOREPLACE: EEXIST over a lower name, a plain move otherwise."""
    st = stack({"a": "a", "b": "b"})
    mnt = mounts.unionfs(st)
    with pytest.raises(OSError) as exc:
        renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE)
    assert exc.value.errno == errno.EEXIST
    renameat2(mnt / "a", mnt / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(mnt)) == ["b", "c"]
    assert (mnt / "c").read_text() == "a"


def test_rename_exchange(stack: StackFactory, mounts: Mounts) -> None:
    """RENAME_EXCHANGE swaps a lower file and a lower dir, both ways visible."""
    st = stack({"f": "file", "d/in": "inside"})
    mnt = mounts.unionfs(st)
    renameat2(mnt / "f", mnt / "d", RENAME_EXCHANGE)
    assert (mnt / "d").read_text() == "file"
    assert (mnt / "f/in").read_text() == "inside"
    mounts.unmount(mnt)
    mounts.unionfs(st)
    assert (mnt / "d").read_text() == "file"
    assert os.listdir(mnt / "f") == ["in"]


def test_rename_over_lower_file(stack: StackFactory, mounts: Mounts) -> None:
    """rename over an existing lower name replaces it; the old name is whited out."""
    st = stack({"a": "a", "b": "b"})
    mnt = mounts.unionfs(st)
    os.rename(mnt / "a", mnt / "b")
    assert os.listdir(mnt) == ["b"]
    assert (mnt / "b").read_text() == "a"
    assert is_whiteout(st.upper / "a")


# ---- links and inode numbers --------------------------------------------------------------


def test_hard_link_to_lower_file(stack: StackFactory, mounts: Mounts) -> None:
    """link copies up once: both names one inode, nlink 2, and still so after remount."""
    st = stack({"f": "data"})
    mnt = mounts.unionfs(st)
    ino = os.stat(mnt / "f").st_ino
    os.link(mnt / "f", mnt / "g")
    for _ in range(2):
        f, g = os.stat(mnt / "f"), os.stat(mnt / "g")
        assert f.st_ino == g.st_ino == ino
        assert f.st_nlink == g.st_nlink == 2
        assert os.stat(st.upper / "f").st_ino == os.stat(st.upper / "g").st_ino
        mounts.unmount(mnt)
        mounts.unionfs(st)
    (mnt / "g").write_text("via g")
    assert (mnt / "f").read_text() == "via g"


def test_st_ino_stable_across_copy_up_and_remount(stack: StackFactory,
                                                  mounts: Mounts) -> None:
    """A file's and a dir's inode numbers do not change when they are copied up."""
    st = stack({"d/f": "x"})
    mnt = mounts.unionfs(st)
    before = (os.stat(mnt / "d").st_ino, os.stat(mnt / "d/f").st_ino)
    with open(mnt / "d/f", "a") as f:
        f.write("y")
    assert (os.stat(mnt / "d").st_ino, os.stat(mnt / "d/f").st_ino) == before
    mounts.unmount(mnt)
    mounts.unionfs(st)
    assert (os.stat(mnt / "d").st_ino, os.stat(mnt / "d/f").st_ino) == before


# ---- timestamps ---------------------------------------------------------------------------


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
_libc = ctypes.CDLL(None, use_errno=True)


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(2) with (sec, nsec) pairs; nsec may be UTIME_NOW or UTIME_OMIT."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if _libc.utimensat(-100, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def test_utimensat_omit_and_now(stack: StackFactory, mounts: Mounts) -> None:
    """UTIME_OMIT keeps a time exactly; UTIME_NOW sets it to the present."""
    st = stack({"f": "x"})
    os.utime(st.lowers[0] / "f", ns=TIMES)
    mnt = mounts.unionfs(st)
    f = mnt / "f"
    utimensat(f, (0, UTIME_OMIT), (7, 123))
    s = os.stat(f)
    assert (s.st_atime_ns, s.st_mtime_ns) == (TIMES[0], 7_000_000_123)
    start = time.time_ns()
    utimensat(f, (0, UTIME_NOW), (0, UTIME_OMIT))
    s = os.stat(f)
    assert s.st_atime_ns >= start - 10_000_000 and s.st_mtime_ns == 7_000_000_123
    up = os.stat(st.upper / "f")
    assert (up.st_atime_ns, up.st_mtime_ns) == (s.st_atime_ns, s.st_mtime_ns)


def test_ctime_and_mtime_move(stack: StackFactory, mounts: Mounts) -> None:
    """A write moves mtime and ctime; chmod moves ctime only."""
    st = stack({"f": "x"})
    os.utime(st.lowers[0] / "f", ns=TIMES)
    mnt = mounts.unionfs(st)
    f = mnt / "f"
    before = os.stat(f)
    with open(f, "a") as h:
        h.write("more")
        h.flush()
        os.fsync(h.fileno())
    after = os.stat(f)
    assert after.st_mtime_ns > before.st_mtime_ns
    assert after.st_ctime_ns > before.st_ctime_ns
    time.sleep(0.01)
    os.chmod(f, 0o600)
    third = os.stat(f)
    assert third.st_ctime_ns > after.st_ctime_ns
    assert third.st_mtime_ns == after.st_mtime_ns


def test_fsync_and_fdatasync(stack: StackFactory, mounts: Mounts) -> None:
    """fsync and fdatasync on a union file succeed, and the data is in the upper."""
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"synced", 0)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert (st.upper / "f").read_text() == "synced"
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def test_copy_up_to_upper_on_another_filesystem(stack: StackFactory, mounts: Mounts,
                                                tmpfs: Callable[..., Path]) -> None:
    """Lower on the tmp dir's filesystem, upper on a tmpfs: data and holes copy up
    (copy_file_range across filesystem types is EXDEV since Linux 5.19)."""
    st = stack({"f": "lower data"})
    with open(st.lowers[0] / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"y" * 4096)
    other = tmpfs("up", "64m")
    st = dataclasses.replace(st, upper=other / "upper", work=other / "work")
    st.upper.mkdir()
    mnt = mounts.unionfs(st)
    with open(mnt / "f", "a") as h:
        h.write("!")
    assert (st.upper / "f").read_text() == "lower data!"
    os.truncate(mnt / "sparse", 8 << 20)
    fd = os.open(st.upper / "sparse", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 4 << 20
        assert os.pread(fd, 4096, 4 << 20) == b"y" * 4096
    finally:
        os.close(fd)


def test_userxattr_writes_user_namespace_markers(stack: StackFactory, mounts: Mounts) -> None:
    """With userxattr the markers the union writes are ``user.overlay.*``, never trusted."""
    st = stack({"d/old": "x"})
    mnt = mounts.unionfs(st, userxattr=True)
    os.unlink(mnt / "d/old")
    os.rmdir(mnt / "d")
    os.mkdir(mnt / "d")
    (mnt / "d/f").write_text("new")
    assert os.getxattr(st.upper / "d", "user.overlay.opaque") == b"y"
    assert not [n for n in os.listxattr(st.upper / "d") if n.startswith("trusted.")]
    assert os.listxattr(mnt / "d") == []
    mounts.unmount(mnt)
    mounts.unionfs(st, userxattr=True)
    assert os.listdir(mnt / "d") == ["f"]


def test_st_ino_of_special_files_stable_across_copy_up(stack: StackFactory,
                                                       mounts: Mounts) -> None:
    """Symlinks, FIFOs and device nodes keep their inode number when copied up."""
    st = stack({"l": ("symlink", "target")})
    os.mkfifo(st.lowers[0] / "fifo")
    os.mknod(st.lowers[0] / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 7))
    mnt = mounts.unionfs(st)
    names = ("l", "fifo", "dev")
    before = [os.lstat(mnt / n).st_ino for n in names]
    for n in names:
        os.chown(mnt / n, 7, 7, follow_symlinks=False)
    assert [os.lstat(mnt / n).st_ino for n in names] == before
    mounts.unmount(mnt)
    mounts.unionfs(st)
    assert [os.lstat(mnt / n).st_ino for n in names] == before


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_fallocate_modes(stack: StackFactory, mounts: Mounts) -> None:
    """fallocate reaches the upper file: allocate, keep size, punch a hole, zero a range."""
    mnt = mounts.unionfs(stack({}))
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fallocate(fd, 0, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        assert os.fstat(fd).st_blocks * 512 >= 1 << 20
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        assert os.fstat(fd).st_blocks * 512 >= 2 << 20
        os.pwrite(fd, b"x" * 16384, 0)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096)
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 12288, 4096)
        assert os.pread(fd, 16384, 0) == b"x" * 4096 + bytes(4096) + b"x" * 4096 + bytes(4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    up = os.open(mnt.parent / "upper" / "f", os.O_RDONLY)
    try:
        assert os.lseek(up, 0, os.SEEK_HOLE) == 4096  # the punched hole is a real hole
        assert os.pread(up, 16384, 0)[4096:8192] == bytes(4096)
    finally:
        os.close(up)


def test_fallocate_of_lower_file_copies_up(stack: StackFactory, mounts: Mounts) -> None:
    """A lower file opened for writing is copied up first; the lower never changes."""
    st = stack({"f": "lower data"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        fallocate(fd, 0, 0, 8192)
        assert os.fstat(fd).st_size == 8192
    finally:
        os.close(fd)
    assert (mnt / "f").read_bytes() == b"lower data" + bytes(8192 - 10)
    assert (st.lowers[0] / "f").read_bytes() == b"lower data"
    assert (st.upper / "f").stat().st_size == 8192


def test_fallocate_read_only_handle_is_refused(stack: StackFactory, mounts: Mounts) -> None:
    mnt = mounts.unionfs(stack({"f": "data"}))
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            fallocate(fd, 0, 0, 4096)
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_fallocate_keeps_the_mtime_the_mount_shows(stack: StackFactory, mounts: Mounts) -> None:
    """Under the writeback cache the kernel owns mtime (fallocate stamps it, as write does):
    what the mount shows is what the upper holds once the file is closed, so a remount shows
    the same (differential seed 70)."""
    st = stack({})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.utime(fd, ns=TIMES)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8192)
        shown = os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
    assert (st.upper / "f").stat().st_mtime_ns == shown
    assert os.stat(mnt / "f").st_mtime_ns == shown
