"""The op executor: applies :class:`~tests.differential.gen.Op` values to a mounted tree.

Plain blocking calls from the test process (the servers are other processes). Every call
returns a :class:`Result` holding either a value or the errno's name, so two mounts can be
compared call by call. Opens use ``O_NONBLOCK`` so that a FIFO never blocks the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass

from tests.differential.gen import (
    RENAME_EXCHANGE,
    UTIME_NOW,
    UTIME_OMIT,
    XATTR_CREATE,
    XATTR_REPLACE,
    Op,
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
EXCHANGE_TMP = ".exchange-tmp"


@dataclass(frozen=True)
class Result:
    """What a call gave: ``("ok", value)`` or ``("err", "ENOENT")``; ``note`` is not compared."""

    status: str
    value: object = None
    note: str = ""

    def same(self, other: Result) -> bool:
        return (self.status, self.value) == (other.status, other.value)

    def __str__(self) -> str:
        text = f"{self.status} {self.value!r}"
        if isinstance(self.value, bytes) and len(self.value) > 40:
            text = f"{self.status} <{len(self.value)} bytes {self.value[:20]!r}...>"
        return text + (f" [{self.note}]" if self.note else "")


def apply(root: str, op: Op, *, kernel: bool = False) -> Result:
    """Run ``op`` under ``root``.

    On the ``kernel`` side some answers are brought to what unionfs is designed to give (see
    the docstring of ``test_random.py``): a rename refused with EXDEV (directories that lower
    layers contribute to) is done the way ``mv`` does it, copy then remove; a rename between
    two names of one file does nothing, as rename(2) says; a truncate to
    the current size gets its mtime back, as FUSE's writeback cache leaves it; and setxattr's
    XATTR_CREATE / XATTR_REPLACE are checked before the call, as pyfuse3 does.
    """
    if kernel and op.name == "rename" and _one_file(root, op.path, str(op.args[0])):
        return Result("ok", None, "one file under both names: rename(2) does nothing")
    if kernel and op.name == "truncate":
        return _truncate_keeping_mtime(root, op)
    if kernel and op.name == "setxattr" and op.args[2]:
        return _setxattr_flags_first(root, op)
    try:
        return Result("ok", _CALLS[op.name](root, op))
    except OSError as exc:
        code = exc.errno or 0
        if kernel and op.name == "rename" and code == errno.EXDEV:
            return _move_by_hand(root, op)
        return Result("err", errno.errorcode.get(code, str(code)))


def _one_file(root: str, src: str, dst: str) -> bool:
    """``src`` and ``dst`` are names of one file (hard links): rename(2) then does nothing
    and succeeds, where the kernel's overlay without index=on may say ESTALE (it holds
    two inodes for the file, see :data:`UPPERS`)."""
    try:
        a, b = os.lstat(_p(root, src)), os.lstat(_p(root, dst))
    except OSError:
        return False
    if stat.S_ISDIR(a.st_mode) or stat.S_ISDIR(b.st_mode):
        return False
    return _file_key(root, _p(root, src), a) == _file_key(root, _p(root, dst), b)


def _setxattr_flags_first(root: str, op: Op) -> Result:
    """pyfuse3 answers XATTR_CREATE / XATTR_REPLACE itself, after a getxattr, so a call that
    fails on them never reaches the server. The kernel's overlay copies the file up first."""
    name, _, flags = op.args
    path = _p(root, op.path)
    try:
        st = os.lstat(path)
    except OSError:
        return apply(root, op)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return apply(root, op)  # user.* xattrs: the VFS says EPERM before any flag matters
    if str(name).startswith("trusted.") and not _in_init_user_namespace():
        return apply(root, op)  # without CAP_SYS_ADMIN the VFS says EPERM first, too
    try:
        os.getxattr(path, str(name), follow_symlinks=False)
        exists = True
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            return apply(root, op)
        exists = False
    if int(flags) & XATTR_CREATE and exists:  # type: ignore[call-overload]
        return Result("err", "EEXIST", "checked first, as pyfuse3 does")
    if int(flags) & XATTR_REPLACE and not exists:  # type: ignore[call-overload]
        return Result("err", "ENODATA", "checked first, as pyfuse3 does")
    return apply(root, op)


@functools.cache
def _in_init_user_namespace() -> bool:
    with open("/proc/self/uid_map", encoding="ascii") as f:
        return f.read().split() == ["0", "0", "4294967295"]


def _truncate_keeping_mtime(root: str, op: Op) -> Result:
    try:
        before = os.stat(_p(root, op.path))
    except OSError:
        before = None
    result = apply(root, op)
    if result.status == "ok" and before is not None and before.st_size == op.args[0]:
        utimensat(_p(root, op.path), UTIME_OMIT, before.st_mtime_ns, follow=True)
        return Result(result.status, result.value, "same size: mtime kept")
    return result


def _p(root: str, rel: str) -> str:
    return os.path.join(root, rel) if rel else root


# ---- the calls --------------------------------------------------------------------------

def _create(root: str, op: Op) -> object:
    (mode,) = op.args
    os.close(os.open(_p(root, op.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NONBLOCK,
                     int(mode)))  # type: ignore[call-overload]
    return None


def _write(root: str, op: Op) -> object:
    offset, data, append = op.args
    assert isinstance(offset, int) and isinstance(data, bytes)
    flags = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else 0)
    fd = os.open(_p(root, op.path), flags)
    try:
        return os.write(fd, data) if append else os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _overwrite(root: str, op: Op) -> object:
    (data,) = op.args
    assert isinstance(data, bytes)
    fd = os.open(_p(root, op.path), os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _read(root: str, op: Op) -> object:
    fd = os.open(_p(root, op.path), os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fallocate(root: str, op: Op) -> object:
    mode, offset, length = op.args
    fd = os.open(_p(root, op.path), os.O_WRONLY | os.O_NONBLOCK)
    try:
        if _libc.fallocate(fd, mode, offset, length) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return None


def _truncate(root: str, op: Op) -> object:
    os.truncate(_p(root, op.path), op.args[0])  # type: ignore[arg-type]
    return None


def _rename(root: str, op: Op) -> object:
    dst, flags = op.args
    assert isinstance(dst, str) and isinstance(flags, int)
    renameat2(_p(root, op.path), _p(root, dst), flags)
    return None


def renameat2(src: str, dst: str, flags: int) -> None:
    """rename(2) with flags, via libc."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src)


def _utimens(root: str, op: Op) -> object:
    atime, mtime, nofollow = op.args
    utimensat(_p(root, op.path), atime, mtime, follow=not nofollow)
    return None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(value: object) -> _Timespec:
    if value == UTIME_NOW:
        return _Timespec(0, _UTIME_NOW)
    if value == UTIME_OMIT:
        return _Timespec(0, _UTIME_OMIT)
    assert isinstance(value, int)
    return _Timespec(value // 10**9, value % 10**9)


def utimensat(path: str, atime: object, mtime: object, *, follow: bool) -> None:
    """utimensat(2) with UTIME_NOW / UTIME_OMIT, which ``os.utime`` cannot express."""
    times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def _stat(root: str, op: Op) -> object:
    st = os.lstat(_p(root, op.path))
    size = None if stat.S_ISDIR(st.st_mode) else st.st_size
    return (stat.filemode(st.st_mode), st.st_uid, st.st_gid, size, st.st_nlink)


def _simple(call: Callable[..., object], *, takes_args: bool = True,
            nofollow: bool = False) -> Callable[[str, Op], object]:
    """An op that is one ``os`` call on the path (and the op's args)."""

    def run(root: str, op: Op) -> object:
        kwargs = {"follow_symlinks": False} if nofollow else {}
        args = op.args if takes_args else ()
        value = call(_p(root, op.path), *args, **kwargs)
        return sorted(value) if isinstance(value, list) else value

    return run


def _link(root: str, op: Op) -> object:
    os.link(_p(root, op.path), _p(root, str(op.args[0])), follow_symlinks=False)
    return None


def _symlink(root: str, op: Op) -> object:
    os.symlink(str(op.args[0]), _p(root, op.path))
    return None


def _setxattr(root: str, op: Op) -> object:
    name, value, flags = op.args
    os.setxattr(_p(root, op.path), str(name), value, int(flags),  # type: ignore[arg-type,call-overload]
                follow_symlinks=False)
    return None


_NODE_TYPES = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK,
               "socket": stat.S_IFSOCK}
BLOCK = 4096


def _mknod(root: str, op: Op) -> object:
    kind, major, minor, mode = op.args
    os.mknod(_p(root, op.path), _NODE_TYPES[str(kind)] | int(mode),  # type: ignore[call-overload]
             os.makedev(int(major), int(minor)))  # type: ignore[call-overload]
    st = os.lstat(_p(root, op.path))
    return stat.filemode(st.st_mode), st.st_rdev


def _direct_io(root: str, op: Op) -> object:
    """Aligned O_DIRECT I/O: page-aligned buffers, block-sized and -aligned offsets."""
    offset, blocks, byte = op.args
    assert isinstance(offset, int) and isinstance(blocks, int) and isinstance(byte, int)
    path = _p(root, op.path)
    written = None
    if blocks:
        buf = mmap.mmap(-1, blocks * BLOCK)
        buf.write(bytes([byte]) * (blocks * BLOCK))
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_NONBLOCK)
        try:
            written = os.pwritev(fd, [buf], offset)
        finally:
            os.close(fd)
    rbuf = mmap.mmap(-1, BLOCK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_NONBLOCK)
    try:
        n = os.preadv(fd, [rbuf], offset)
    finally:
        os.close(fd)
    return written, rbuf[:n]


def _lseek(root: str, op: Op) -> object:
    """SEEK_DATA/SEEK_HOLE on a regular file (a directory's answer is its filesystem's own
    size rule), from a read-only fd, while another fd that wrote first is still open.

    An allocated but unwritten range (fallocate) is a hole to ext4 unless its page cache
    holds pages there, and which pages the upper file has cached differs between the two
    mounts (the kernel's overlay reads the upper file itself, unionfs's server only when its
    own page cache misses). So the whole file is read first, through the page cache and
    with O_DIRECT (which reaches unionfs's server): both uppers then have it all cached."""
    whence, offset, write = op.args
    path = _p(root, op.path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        return "not a file"
    _read_everywhere(path)
    writer = None
    written = None
    try:
        if write is not None:
            assert isinstance(write, tuple)
            at, data = write
            assert isinstance(at, int) and isinstance(data, bytes)
            writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            written = os.pwrite(writer, data, at)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            try:
                found: object = os.lseek(fd, int(offset), int(whence))  # type: ignore[call-overload]
            except OSError as exc:
                found = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            return written, found
        finally:
            os.close(fd)
    finally:
        if writer is not None:
            os.close(writer)


def _read_everywhere(path: str) -> None:
    """Read ``path`` whole, buffered and with O_DIRECT (see :func:`_lseek`)."""
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    buf = mmap.mmap(-1, 1 << 20)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_NONBLOCK)
    try:
        pos = 0
        while got := os.preadv(fd, [buf], pos):
            pos += got
    finally:
        os.close(fd)
        buf.close()


def _open_removed(root: str, op: Op) -> object:
    """Calls on a directory or FIFO that is removed while open."""
    kind, mode, uid = op.args
    path = _p(root, op.path)
    if kind == "dir":
        os.mkdir(path, 0o755)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        os.mkfifo(path, 0o644)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        (os.rmdir if kind == "dir" else os.unlink)(path)
        out: list[object] = [os.fstat(fd).st_nlink]
        out.append(sorted(os.listdir(fd)) if kind == "dir" else None)
        os.fchmod(fd, int(mode))  # type: ignore[call-overload]
        os.fchown(fd, int(uid), -1)  # type: ignore[call-overload]
        st = os.fstat(fd)
        out += [stat.filemode(st.st_mode), st.st_uid, os.path.lexists(path)]
        return out
    finally:
        os.close(fd)


DEEP_NAME = "x" * 197


def _deep(root: str, op: Op) -> object:
    """Deeper than PATH_MAX, one component at a time; everything made is removed again."""
    from tests.differential.gen import DEEP_LEVELS

    name, data = op.args
    assert isinstance(data, bytes)
    fds = [os.open(_p(root, op.path), os.O_RDONLY | os.O_DIRECTORY)]
    made: list[str] = []
    try:
        for level in range(DEEP_LEVELS):
            part = f"{level:02d}{name}{DEEP_NAME}"[:200]
            os.mkdir(part, dir_fd=fds[-1])
            made.append(part)
            fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        bottom = fds[-1]
        wfd = os.open("f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=bottom)
        os.write(wfd, data)
        os.close(wfd)
        os.rename("f", "g", src_dir_fd=bottom, dst_dir_fd=bottom)
        rfd = os.open("g", os.O_RDONLY, dir_fd=bottom)
        got = os.read(rfd, 1 << 16)
        os.close(rfd)
        listing = sorted(os.listdir(bottom))
        os.unlink("g", dir_fd=bottom)
        return got == data, listing, len(made)
    finally:
        _remove_chain(fds, made)


def _remove_chain(fds: list[int], made: list[str]) -> None:
    """Undo :func:`_deep`: ``made[i]`` is a directory in ``fds[i]``; bottom-up."""
    if len(fds) == len(made) + 1 and made:
        for leaf in ("f", "g"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leaf, dir_fd=fds[-1])
    while made:
        if len(fds) == len(made) + 1:
            os.close(fds.pop())
        os.rmdir(made.pop(), dir_fd=fds[-1])
    os.close(fds[0])


_CALLS: dict[str, Callable[[str, Op], object]] = {
    "create": _create, "write": _write, "overwrite": _overwrite, "read": _read,
    "truncate": _truncate, "fallocate": _fallocate,
    "rename": _rename, "utimens": _utimens, "stat": _stat, "link": _link,
    "symlink": _symlink, "setxattr": _setxattr,
    "unlink": _simple(os.unlink, takes_args=False),
    "rmdir": _simple(os.rmdir, takes_args=False),
    "mkdir": _simple(os.mkdir),
    "readlink": _simple(os.readlink, takes_args=False),
    "chmod": _simple(os.chmod),
    "chown": _simple(os.chown, nofollow=True),
    "removexattr": _simple(os.removexattr, nofollow=True),
    "getxattr": _simple(os.getxattr, nofollow=True),
    "listxattr": _simple(os.listxattr, takes_args=False, nofollow=True),
    "mkfifo": _simple(os.mkfifo),
    "listdir": _simple(os.listdir, takes_args=False),
    "mknod": _mknod, "direct_io": _direct_io, "open_removed": _open_removed, "deep": _deep,
    "lseek": _lseek,
}


# ---- rename by hand, as mv does on EXDEV ------------------------------------------------

def _move_by_hand(root: str, op: Op) -> Result:
    """The kernel refused to rename a directory lower layers contribute to; do what ``mv``
    does (copy, then remove), keeping hard links to files outside the moved tree."""
    dst, flags = op.args
    src, target = _p(root, op.path), _p(root, str(dst))
    try:
        if int(flags) & RENAME_EXCHANGE:  # type: ignore[call-overload]
            tmp = os.path.join(os.path.dirname(src), EXCHANGE_TMP)
            _move_tree(root, src, tmp)
            _move_tree(root, target, src)
            _move_tree(root, tmp, target)
        else:
            if os.path.lexists(target):  # the kernel checked the types already: a directory
                os.rmdir(target)
            _move_tree(root, src, target)
    except OSError as exc:
        code = exc.errno or 0
        return Result("err", errno.errorcode.get(code, str(code)), "EXDEV, done by hand")
    return Result("ok", None, "EXDEV, done by hand")


# The upper directory of each kernel mount (set by the harness): which names are links of
# one file is read there. Without index=on the kernel's overlay shows the names of a file
# hard-linked through it with different inode numbers (the first keeps its origin's).
UPPERS: dict[str, str] = {}
FileKey = tuple[str, int]


def _file_key(root: str, path: str, st: os.stat_result) -> FileKey:
    """What identifies the file at ``path``: its inode in the upper if it is there."""
    upper = UPPERS.get(root)
    if upper is not None:
        try:
            return "upper", os.lstat(os.path.join(upper, os.path.relpath(path, root))).st_ino
        except OSError:
            pass
    return "mount", st.st_ino


def _move_tree(root: str, src: str, dst: str) -> None:
    outside = _linked_outside(root, src)
    _copy_tree(root, src, dst, outside, {})
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.rmtree(src)
    else:
        os.unlink(src)


def _linked_outside(root: str, subtree: str) -> dict[FileKey, str]:
    """File -> a path outside ``subtree``, for multiply linked non-directories."""
    found: dict[FileKey, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == subtree or dirpath.startswith(subtree + "/"):
            dirnames[:] = []
            continue
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            if path == subtree:
                continue
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                found.setdefault(_file_key(root, path, st), path)
    return found


def _copy_tree(root: str, src: str, dst: str, outside: dict[FileKey, str],
               copied: dict[FileKey, str]) -> None:
    """cp -a, except that a file also linked from outside is linked, not copied."""
    st = os.lstat(src)
    mode = st.st_mode
    if not stat.S_ISDIR(mode) and st.st_nlink > 1:
        key = _file_key(root, src, st)
        existing = outside.get(key) or copied.get(key)
        if existing is not None:
            os.link(existing, dst, follow_symlinks=False)
            return
        copied[key] = dst
    if stat.S_ISDIR(mode):
        os.mkdir(dst, 0o700)
        for name in sorted(os.listdir(src)):
            _copy_tree(root, os.path.join(src, name), os.path.join(dst, name), outside,
                       copied)
    elif stat.S_ISREG(mode):
        _copy_keeping_holes(src, dst)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, 0o600)
    else:
        raise AssertionError(f"unexpected file type to copy: {src}")
    _copy_metadata(src, dst, st)


def _copy_keeping_holes(src: str, dst: str) -> None:
    """Copy a file's data extents only, as ``cp`` does (``--sparse=auto``: SEEK_DATA)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                pos = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                break
            end = os.lseek(fin.fileno(), pos, os.SEEK_HOLE)
            fout.seek(pos)
            fin.seek(pos)
            fout.write(fin.read(end - pos))
            pos = end
        fout.truncate(size)


def _copy_metadata(src: str, dst: str, st: os.stat_result) -> None:
    is_link = stat.S_ISLNK(st.st_mode)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        for name in os.listxattr(src, follow_symlinks=False):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
