"""Atomic copy-up: build the copy in the work dir, then rename it into the upper.

A crash at any instant leaves either no upper entry or a complete one; what is left in the work
dir is removed at the next mount (:meth:`WorkDir.clean`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from itertools import count

from unionfs.core.whiteout import XattrNamespace, is_private_xattr
from unionfs.layers import ondisk
from unionfs.layers.layer import Layer, keeping_times
from unionfs.layers.pacing import WritebackPacer
from unionfs.layers.syscalls import RENAME_NOREPLACE, proc_path, renameat2

log = logging.getLogger(__name__)

FICLONE = 0x40049409
_CHUNK = 1 << 30
_STOP_CHUNK = 1 << 25  # between two looks at a copy's stop flag
_BUF = 1 << 20
_SMALL = 1 << 16  # files up to this size without holes are copied with one read and write
_NO_CLONE = (errno.EOPNOTSUPP, errno.EXDEV, errno.ENOTTY)  # for any file of the two fs
XattrTarget = int | bytes  # an open fd, or a path that is not followed
Stop = Callable[[], bool]  # True: abandon the copy (the server is shutting down)
TMP_SUBDIR = "unionfs-tmp"
SHARED_WHITEOUT = b"whiteout"  # in TMP_SUBDIR: every whiteout made is a link to it
_NO_SHARING = (errno.EPERM, errno.EOPNOTSUPP)  # hard links to it refused: mknod each one


class WorkDir:
    """The scratch directory beside the upper, on the same filesystem.

    Everything inside it is reached through directory fds, never following a symlink: a
    ``unionfs-tmp`` that someone replaced with a symlink is removed (the link, not its
    target) and made again, and cleaning never leaves the work dir.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp_path = os.path.join(path, TMP_SUBDIR)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)  # its parent must exist (checked by the mount request)
        base = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.fd = _open_own_subdir(base, os.fsencode(TMP_SUBDIR))
        finally:
            os.close(base)
        self._names = count()
        self._pid = os.getpid()
        self.new_owner = _owner_of_new_files(self.fd)
        self._shared: bool | None = None  # the shared whiteout: made (True), refused (False)

    def new_name(self) -> bytes:
        return b"tmp-%d-%d" % (self._pid, next(self._names))

    def clean(self) -> int:
        """Remove leftovers of interrupted copy-ups; returns how many there were."""
        kept = (SHARED_WHITEOUT, ondisk.FORMAT_RECORD)
        leftovers = [n for n in _list(self.fd) if n not in kept]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SHARED_WHITEOUT, dir_fd=self.fd)
        for name in leftovers:
            self.remove(name)
        return len(leftovers)

    def make_whiteout(self, dir_fd: int, name: bytes) -> None:
        """A whiteout at ``name`` in ``dir_fd``: a new hard link to one shared whiteout, as
        the kernel's overlayfs makes them (allocating an inode per whiteout costs ~20 times
        more), or a char device 0/0 of its own where links to it are refused."""
        if self._shared is None:
            self._new_shared()
        if self._shared:
            try:
                self._link_shared(dir_fd, name)
                return
            except OSError as exc:
                if exc.errno not in _NO_SHARING:
                    raise
                self._shared = False
        ondisk.make_device_whiteout(name, dir_fd)

    def _link_shared(self, dir_fd: int, name: bytes) -> None:
        try:
            os.link(SHARED_WHITEOUT, name, src_dir_fd=self.fd, dst_dir_fd=dir_fd,
                    follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EMLINK:  # EMLINK: as many links as the filesystem allows
                raise
            self._new_shared()
            os.link(SHARED_WHITEOUT, name, src_dir_fd=self.fd, dst_dir_fd=dir_fd,
                    follow_symlinks=False)

    def _new_shared(self) -> None:
        """(Re)make the shared whiteout, atomically."""
        tmp = self.new_name()
        ondisk.make_device_whiteout(tmp, self.fd)
        os.rename(tmp, SHARED_WHITEOUT, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        self._shared = True

    def remove(self, name: bytes) -> None:
        """Remove one work entry (a whole tree for a directory), never following a link."""
        remove_tree_at(self.fd, name)

    def close(self) -> None:
        os.close(self.fd)


def _owner_of_new_files(dir_fd: int) -> tuple[int, int] | None:
    """(uid, gid) that a file created in directory ``dir_fd`` gets, where that is certain:
    the server's own ids, unless the directory's group is another one (with set-gid or the
    ``grpid`` mount option new files would take it) or its set-gid bit is on."""
    st = os.fstat(dir_fd)
    if st.st_mode & stat.S_ISGID or st.st_gid != os.getegid():
        return None
    return os.geteuid(), os.getegid()


def _open_own_subdir(base_fd: int, name: bytes) -> int:
    """An O_PATH fd of directory ``name`` in ``base_fd``, made (0700) if missing; anything
    else found there (a symlink, a file) is removed first, never followed."""
    for _ in range(3):
        try:
            return os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=base_fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=base_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            log.warning("work dir entry %r is not a directory (a symlink?): removing it", name)
            os.unlink(name, dir_fd=base_fd)
    raise OSError(errno.EAGAIN, "work dir keeps changing", name)


def _list(dir_fd: int) -> list[bytes]:
    """The names in directory ``dir_fd`` (an O_PATH fd is fine)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return [os.fsencode(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)


def remove_tree_at(dir_fd: int, name: bytes) -> None:
    """Remove ``name`` in ``dir_fd`` and, for a directory, everything below it, reaching
    each level through an fd opened with O_NOFOLLOW: a symlink is removed, never entered."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    try:
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        for child in os.listdir(sub):
            remove_tree_at(sub, os.fsencode(child))
    finally:
        os.close(sub)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)


class CopyUp:
    """Copies entries of lower layers into the upper, preserving everything overlayfs does."""

    def __init__(self, upper: Layer, work: WorkDir, ns: XattrNamespace, *, sync: bool) -> None:
        self.upper = upper
        self.work = work
        self.ns = ns
        self.sync = sync
        self.can_chown = os.geteuid() == 0
        self._warned_chown = False
        self._no_clone: set[tuple[int, int]] = set()  # (src, dst) st_dev pairs: no reflink

    def copy(self, src: Layer, parent: bytes, name: bytes, origin: int, *,
             src_parent: bytes | None = None) -> tuple[os.stat_result, list[bytes] | None]:
        """Copy ``src_parent/name`` of ``src`` to ``parent/name`` in the upper (the same
        place unless a redirected directory keeps its lower content elsewhere); returns its
        stat and, for a regular file, the xattrs copied (None: not known). The upper's
        ``parent`` must exist already. A directory is copied without its
        children."""
        where = parent if src_parent is None else src_parent
        st = src.lstat(where, name)
        if stat.S_ISREG(st.st_mode):
            sfd, st = self.open_source(src, where, name)
            try:
                tmp = self.work.new_name()
                copied = self.build_file(sfd, st, tmp, origin)
            finally:
                os.close(sfd)
            self.install(tmp, parent, name)
            return st, copied
        tmp = self.work.new_name()
        pfd = self.upper.dir_fd(parent)
        with keeping_times(pfd):  # a copy-up is no change of the parent, as for overlayfs
            try:
                self._make(src, where, name, st, tmp)
                self._copy_metadata(src, where, name, st, tmp, origin)
                renameat2(self.work.fd, tmp, pfd, name, RENAME_NOREPLACE)
            except BaseException:
                self.work.remove(tmp)
                raise
        return st, None

    # A regular file's copy-up in three steps, so that the slow middle one can run in a
    # worker thread: open the source, build the copy in the work dir, rename it into place.

    def open_source(self, src: Layer, parent: bytes, name: bytes) -> tuple[int, os.stat_result]:
        """Open regular file ``parent/name`` of ``src`` for copying: its fd and its stat."""
        sfd = src.open_in(parent, name, os.O_RDONLY)  # O_NOATIME where permitted
        return sfd, os.fstat(sfd)

    def build_file(self, sfd: int, st: os.stat_result, tmp: bytes, origin: int,
                   stop: Stop | None = None,
                   before_sync: Callable[[], None] | None = None) -> list[bytes]:
        """The complete copy of ``sfd`` as work entry ``tmp``: data, metadata, one fsync;
        returns the names of the xattrs copied (not the overlay's own).

        Touches only ``sfd`` and the work dir, so it may run in a worker thread; ``stop``
        abandons the copy (EINTR) between chunks; ``before_sync`` is called once all is
        written, before the sync (a test holds a copy there). Nothing is left behind on
        failure.

        The one fsync is what makes the copy-up durable before it is visible: the rename
        that publishes it (:meth:`install`) comes after, so a crash leaves the lower file
        or a complete copy, never an empty or partial one. A full fsync, not fdatasync:
        the owner, mode, xattrs and times are part of the copy, and for a new file
        fdatasync must commit its size and blocks anyway (measured: no cheaper). No
        directory is synced: the rename need not be durable at once (lost in a crash, it
        leaves the lower file, as before the copy-up), and the kernel's overlayfs syncs
        none either; a later fsync of the file commits the journal that holds it."""
        try:
            dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                          dir_fd=self.work.fd)
            try:
                self._copy_data(sfd, dfd, st, stop)
                if (st.st_uid, st.st_gid) != self.work.new_owner:  # else: already theirs
                    self.fchown(dfd, st.st_uid, st.st_gid)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                copied = copy_xattrs(sfd, dfd, is_link=False)
                set_xattr(dfd, *ondisk.origin_xattr(self.ns, origin))
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                if before_sync is not None:
                    before_sync()
                if self.sync:
                    os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            self.work.remove(tmp)
            raise
        return copied

    def install(self, tmp: bytes, parent: bytes, name: bytes) -> None:
        """Rename the finished work entry ``tmp`` to ``parent/name`` in the upper (whose
        ``parent`` exists); ``tmp`` is removed if that fails."""
        pfd = self.upper.dir_fd(parent)
        try:
            with keeping_times(pfd):  # a copy-up is no change of the parent, as for overlayfs
                renameat2(self.work.fd, tmp, pfd, name, RENAME_NOREPLACE)
        except BaseException:
            self.work.remove(tmp)
            raise

    def chown(self, dir_fd: int, name: bytes, uid: int, gid: int) -> None:
        """lchown, skipped (with one warning) where an unprivileged server cannot do it."""
        try:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except PermissionError:
            if self.can_chown:
                raise
            self._warn_chown()

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        """:meth:`chown` of an open file."""
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            if self.can_chown:
                raise
            self._warn_chown()

    def _warn_chown(self) -> None:
        if not self._warned_chown:
            log.warning("running unprivileged: copied-up files are owned by uid %d, not by "
                        "the owners of the lower files", os.geteuid())
            self._warned_chown = True

    def _make(self, src: Layer, parent: bytes, name: bytes, st: os.stat_result,
              tmp: bytes) -> None:
        wfd = self.work.fd
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(tmp, 0o700, dir_fd=wfd)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src.dir_fd(parent)), tmp, dir_fd=wfd)
        else:
            os.mknod(tmp, mode, st.st_rdev, dir_fd=wfd)

    def _copy_data(self, sfd: int, dfd: int, st: os.stat_result,
                   stop: Stop | None = None) -> None:
        """Reflink where the filesystems can; else a small dense file by hand, else in the
        kernel, keeping holes."""
        devs = (st.st_dev, self.upper.dev)
        if devs not in self._no_clone:
            try:
                fcntl.ioctl(dfd, FICLONE, sfd)
                return
            except OSError as exc:
                if exc.errno in _NO_CLONE:
                    self._no_clone.add(devs)
        size = st.st_size
        if size > _SMALL or st.st_blocks * 512 < size:
            # Paced when an fsync follows: it then finds the data on the disk already.
            copy_file(sfd, dfd, size, clone=False, stop=stop,
                      pacer=WritebackPacer(dfd) if self.sync else None)
        elif _copy_by_hand(sfd, dfd, 0, size) < size:
            os.ftruncate(dfd, size)

    def _copy_metadata(self, src: Layer, parent: bytes, name: bytes, st: os.stat_result,
                       tmp: bytes, origin: int) -> None:
        wfd = self.work.fd
        is_link = stat.S_ISLNK(st.st_mode)
        self.chown(wfd, tmp, st.st_uid, st.st_gid)
        if not is_link:
            os.chmod(tmp, stat.S_IMODE(st.st_mode), dir_fd=wfd)
        copy_xattrs(proc_path(src.dir_fd(parent), name), proc_path(wfd, tmp), is_link)
        # Symlinks too (trusted.* is allowed on them; user.* is not, and is then skipped), or
        # a copied-up symlink would change its inode number.
        set_xattr(proc_path(wfd, tmp), *ondisk.origin_xattr(self.ns, origin))
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=wfd, follow_symlinks=False)


def copy_file(sfd: int, dfd: int, size: int, *, clone: bool = True,
              stop: Stop | None = None, pacer: WritebackPacer | None = None) -> None:
    """Copy ``size`` bytes in the kernel, keeping holes: reflink (unless ``clone`` is
    False), else copy_file_range (in chunks, checking ``stop`` between them; with a
    ``pacer``, chunks of its window, each sent on its way to the disk as it is done)."""
    if clone:
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            return
        except OSError:
            pass
    pos = 0
    while pos < size:
        try:
            data = os.lseek(sfd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: only a hole remains
                raise
            break
        hole = os.lseek(sfd, data, os.SEEK_HOLE)
        _copy_range(sfd, dfd, data, hole - data, stop, pacer)
        pos = hole
    os.ftruncate(dfd, size)


def _copy_range(sfd: int, dfd: int, offset: int, length: int, stop: Stop | None,
                pacer: WritebackPacer | None = None) -> None:
    end = offset + length
    chunk = _CHUNK if stop is None else _STOP_CHUNK
    if pacer is not None:
        chunk = min(chunk, pacer.window)
    while offset < end:
        if stop is not None and stop():
            raise InterruptedError(errno.EINTR, "copy-up abandoned")
        try:
            n = os.copy_file_range(sfd, dfd, min(chunk, end - offset), offset, offset)
        except OSError as exc:
            # Since Linux 5.19 copy_file_range between different filesystem types (an ext4
            # lower, a tmpfs upper) is EXDEV; some filesystems do not implement it at all.
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            _copy_by_hand(sfd, dfd, offset, end, stop, pacer)
            return
        if n == 0:
            break
        if pacer is not None:
            pacer.wrote(offset, n)
        offset += n


def _copy_by_hand(sfd: int, dfd: int, offset: int, end: int, stop: Stop | None = None,
                  pacer: WritebackPacer | None = None) -> int:
    """pread/pwrite what copy_file_range would not copy (offsets as given, holes kept);
    returns the offset reached (``end`` unless the source ends first)."""
    while offset < end:
        if stop is not None and stop():
            raise InterruptedError(errno.EINTR, "copy-up abandoned")
        data = os.pread(sfd, min(_BUF, end - offset), offset)
        if not data:
            break
        view = memoryview(data)
        while view:
            n = os.pwrite(dfd, view, offset)
            view = view[n:]
            offset += n
        if pacer is not None:
            pacer.wrote(offset - len(data), len(data))
    return offset


def copy_xattrs(src: XattrTarget, dst: XattrTarget, is_link: bool) -> list[bytes]:
    """Copy all xattrs but the overlay's own; ones the target cannot hold are skipped.
    Returns the names copied."""
    copied: list[bytes] = []
    try:
        names = os.listxattr(src, **_nofollow(src))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return copied
        raise
    for xname in names:
        bname = os.fsencode(xname)
        if is_private_xattr(bname):
            continue
        try:
            value = os.getxattr(src, bname, **_nofollow(src))
            os.setxattr(dst, bname, value, **_nofollow(dst))
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.ENODATA) or (
                is_link and exc.errno == errno.EACCES
            ):
                log.debug("xattr %r not copied: %s", xname, exc)
                continue
            raise
        copied.append(bname)
    return copied


def set_xattr(target: XattrTarget, name: bytes, value: bytes) -> None:
    """Set an xattr, ignoring a filesystem that does not take it (origin is best effort)."""
    try:
        os.setxattr(target, name, value, **_nofollow(target))
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


def _nofollow(target: XattrTarget) -> dict[str, bool]:
    """The keyword that keeps a path's final symlink unfollowed (an fd takes none)."""
    return {} if isinstance(target, int) else {"follow_symlinks": False}
