"""Access to one layer directory: fd-relative, never following a symlink out of it.

Paths are ``bytes`` relative to the layer root, b"" being the root. Every access goes through a
directory fd opened with :func:`open_beneath`; those fds are kept in a small LRU so a lookup
costs one ``fstatat`` rather than a walk.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
from collections import OrderedDict
from collections.abc import Iterator

from unionfs.core.merge import LayerListing, pack_dirent
from unionfs.core.paths import join
from unionfs.core.whiteout import (
    Kind,
    XattrNamespace,
    translate_entries,
)
from unionfs.layers import ondisk
from unionfs.layers.syscalls import open_beneath, proc_path

DIR_FD_CACHE = 512
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY


@contextlib.contextmanager
def keeping_times(dir_fd: int) -> Iterator[None]:
    """Housekeeping in directory ``dir_fd`` (a copy-up, a link, removing markers) that is no
    change of it, as overlayfs sees it: its atime and mtime are put back once the block
    succeeds. Works on the cached O_PATH dir fds."""
    before = os.stat(dir_fd)
    yield
    os.utime(b".", ns=(before.st_atime_ns, before.st_mtime_ns), dir_fd=dir_fd)


class Layer:
    """One directory of the stack, opened once; reached only fd-relative."""

    def __init__(self, path: str, index: int, *, writable: bool = False) -> None:
        self.path = path
        self.index = index
        self.writable = writable
        self.root_fd = os.open(path, _DIR_FLAGS | os.O_CLOEXEC)
        self.dev = os.fstat(self.root_fd).st_dev
        self._dirs: OrderedDict[bytes, int] = OrderedDict()
        self._names_by_inode: dict[int, list[bytes]] | None = None

    def close(self) -> None:
        self.forget_dirs(b"")
        os.close(self.root_fd)

    def dir_fd(self, rel: bytes) -> int:
        """An O_PATH fd of the directory ``rel`` (cached; do not close it)."""
        if not rel:
            return self.root_fd
        fd = self._dirs.get(rel)
        if fd is not None:
            self._dirs.move_to_end(rel)
            return fd
        fd = open_beneath(self.root_fd, rel, _DIR_FLAGS)
        self._dirs[rel] = fd
        if len(self._dirs) > DIR_FD_CACHE:
            _, old = self._dirs.popitem(last=False)
            os.close(old)
        return fd

    @property
    def cached_fds(self) -> int:
        """How many directory fds the cache holds (the server reports it in its stats)."""
        return len(self._dirs)

    def forget_dirs(self, prefix: bytes) -> None:
        """Drop cached fds of ``prefix`` and everything below it (after a rename or rmdir)."""
        if not prefix:
            doomed = list(self._dirs)
        else:
            below = prefix + b"/"
            doomed = [p for p in self._dirs if p == prefix or p.startswith(below)]
        for p in doomed:
            os.close(self._dirs.pop(p))

    def lstat(self, parent: bytes, name: bytes) -> os.stat_result:
        return os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)

    def stat_path(self, rel: bytes) -> os.stat_result:
        """lstat of ``rel`` (b"" for the layer root)."""
        if not rel:
            return os.stat(self.root_fd)
        parent, _, name = rel.rpartition(b"/")
        return self.lstat(parent, name)

    def open(self, rel: bytes, flags: int, mode: int = 0) -> int:
        """Open ``rel`` in this layer; the final component is never followed."""
        return self._open_reading(rel, flags | os.O_NOFOLLOW, mode)

    def open_in(self, parent: bytes, name: bytes, flags: int) -> int:
        """Open ``name`` in directory ``parent`` (one component, never followed)."""
        dir_fd = self.dir_fd(parent)
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if self._noatime(flags):
            try:
                return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
            except PermissionError:
                pass
        return os.open(name, flags, dir_fd=dir_fd)

    def _noatime(self, flags: int) -> bool:
        """Reading a lower layer must not change even its atimes: O_NOATIME, as the kernel's
        overlayfs opens its lower files, where this user may (owner, or CAP_FOWNER)."""
        return not self.writable and flags & os.O_ACCMODE == os.O_RDONLY

    def _open_reading(self, rel: bytes, flags: int, mode: int = 0) -> int:
        """open_beneath, with O_NOATIME in a lower layer where the kernel allows it."""
        if self._noatime(flags):
            try:
                return open_beneath(self.root_fd, rel, flags | os.O_NOATIME, mode)
            except PermissionError:
                pass  # not the owner: an ordinary open (the atime may then move)
        return open_beneath(self.root_fd, rel, flags, mode)

    def getxattr(self, rel: bytes, name: bytes) -> bytes | None:
        """An xattr of ``rel`` (not following a final symlink), or None when it has none."""
        path = self.xattr_path(rel)
        try:
            return os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                return None
            raise

    def xattr_path(self, rel: bytes) -> bytes:
        """A path for the xattr calls that reaches ``rel`` without following it."""
        parent, _, base = rel.rpartition(b"/")
        # The root: "/proc/self/fd/N/.", so the l*xattr calls act on the directory, not on
        # the /proc magic link itself (which has no user xattrs and refuses them: EPERM).
        return proc_path(self.dir_fd(parent), base) if rel else proc_path(self.root_fd, b".")

    def names_of(self, ino: int) -> list[bytes]:
        """Every path of non-directory inode ``ino`` in this layer (its hard links).

        The first call walks the whole layer (names and inode numbers only, no stat); a
        layer never changes while mounted, so the map is kept.
        """
        if self._names_by_inode is None:
            self._names_by_inode = self._index_names()
        return self._names_by_inode.get(ino, [])

    def _index_names(self) -> dict[int, list[bytes]]:
        names: dict[int, list[bytes]] = {}
        pending = [b""]
        while pending:
            rel = pending.pop()
            fd = self._open_reading(rel, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        path = join(rel, os.fsencode(e.name))
                        if e.is_dir(follow_symlinks=False):
                            pending.append(path)
                        else:
                            names.setdefault(e.inode(), []).append(path)
            finally:
                os.close(fd)
        return names

    def listing(self, rel: bytes, *, redirects: bool = False,
                impure: XattrNamespace | None = None) -> LayerListing:
        """The directory ``rel`` in union terms: kinds by name, and its opacity; with
        ``redirects``, also its ``trusted.overlay.redirect`` (the kernel follows redirects
        only in trusted mode: a user could forge a ``user.`` one); with ``impure`` (the
        upper's namespace), whether it is marked impure."""
        fd = self._open_reading(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            entries, dirents = _scan(fd, self.index)
            get = _xattr_reader(fd)
            marks = ondisk.dir_marks(get)
            if marks.xattr_whiteouts:
                _mark_xattr_whiteouts(fd, entries)
            redirect = ondisk.redirect(get) if redirects and rel else None
            is_impure = impure is not None and ondisk.is_impure(get, impure)
        finally:
            os.close(fd)
        entries, oci_opaque = translate_entries(entries)
        opaque = oci_opaque or marks.opaque
        return LayerListing(entries, opaque, redirect, is_impure, dirents)


    def dirents(self, rel: bytes) -> dict[bytes, tuple[int, int]]:
        """Directory ``rel`` as readdir(3) sees it: each name's inode number and ``DT_*``
        type, from the directory alone (an lstat only where the filesystem gives no type)."""
        fd = self._open_reading(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return _scan_dirents(fd)
        finally:
            os.close(fd)


_DT_DIR = stat.S_IFDIR >> 12
_DT_REG = stat.S_IFREG >> 12
_DT_LNK = stat.S_IFLNK >> 12


_FS_ENCODING = sys.getfilesystemencoding()  # names as os.fsencode gives them, inline: faster


def _scan_dirents(fd: int) -> dict[bytes, tuple[int, int]]:
    found: dict[bytes, tuple[int, int]] = {}
    codec = _FS_ENCODING
    with os.scandir(fd) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                kind = _DT_DIR
            elif e.is_file(follow_symlinks=False):
                kind = _DT_REG
            elif e.is_symlink():
                kind = _DT_LNK
            else:
                kind = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
            found[e.name.encode(codec, "surrogateescape")] = (e.inode(), kind)
    return found


def _scan(fd: int, layer: int) -> tuple[dict[bytes, Kind], dict[bytes, int]]:
    """The kinds of the names in directory ``fd`` and, from the same pass, their readdir
    entries (packed inode number and type: what a names-only listing answers)."""
    entries: dict[bytes, Kind] = {}
    dirents: dict[bytes, int] = {}
    pack, codec = pack_dirent, _FS_ENCODING
    with os.scandir(fd) as it:
        for e in it:
            name = e.name.encode(codec, "surrogateescape")
            if e.is_dir(follow_symlinks=False):
                entries[name] = Kind.DIR
                dirents[name] = pack(layer, e.inode(), _DT_DIR)
            elif e.is_file(follow_symlinks=False):
                entries[name] = Kind.OTHER
                dirents[name] = pack(layer, e.inode(), _DT_REG)
            elif e.is_symlink():
                entries[name] = Kind.OTHER
                dirents[name] = pack(layer, e.inode(), _DT_LNK)
            else:
                st = e.stat(follow_symlinks=False)
                whiteout = ondisk.is_device_whiteout(st)
                entries[name] = Kind.WHITEOUT if whiteout else Kind.OTHER
                dirents[name] = pack(layer, e.inode(), stat.S_IFMT(st.st_mode) >> 12)
    return entries, dirents


def _xattr_reader(fd: int) -> ondisk.GetXattr:
    """Reads the xattrs of directory ``fd``: one listxattr, then a getxattr only of the
    names it has (most directories have none: one system call for all their marks)."""
    try:
        present = {os.fsencode(n) for n in os.listxattr(fd)}
    except OSError:
        present = set()

    def get(name: bytes) -> bytes | None:
        if name not in present:
            return None
        try:
            return os.getxattr(fd, name)
        except OSError:
            return None

    return get


def _mark_xattr_whiteouts(dir_fd: int, entries: dict[bytes, Kind]) -> None:
    """Find the kernel's xattr whiteouts: empty regular files with ``overlay.whiteout``."""
    for name, kind in entries.items():
        if kind is not Kind.OTHER:
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        has_xattr = functools.partial(_has_xattr, proc_path(dir_fd, name))
        with contextlib.suppress(OSError):
            if ondisk.is_xattr_whiteout(st, has_xattr):
                entries[name] = Kind.WHITEOUT


def _has_xattr(path: bytes, name: bytes) -> bool:
    try:
        os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return False
    return True
