"""The pyfuse3 adapter: short handlers that check, delegate to the engine, and reply.

Every handler goes through :func:`_errors`, the one place where an ``OSError`` becomes the
caller's errno and anything unexpected is logged and becomes EIO: the daemon never dies of a
request.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import struct
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyfuse3

from unionfs.core.rename import Move, how_to_move
from unionfs.engine.changes import Caller, Changes
from unionfs.engine.dirents import DT_DIR, NameLister, dot_number
from unionfs.engine.nodes import Node
from unionfs.engine.slow import SlowWork
from unionfs.engine.union import Union
from unionfs.fuse.writes import Route
from unionfs.layers.pacing import WritebackPacer
from unionfs.layers.syscalls import RENAME_EXCHANGE, fallocate, proc_path

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from unionfs.fuse.watch import Watch

T = TypeVar("T")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
_FMODE_EXEC = 0o40  # the kernel marks opens for execve; openat2 rejects the bit
# O_DIRECT: the kernel already sends such a file's I/O straight to us, bypassing its page
# cache, with the caller's sizes and offsets; our buffers are not aligned, so the layer file
# is opened without it (as a buffered file), and O_DIRECT I/O of any alignment works.
_OPEN_IGNORED = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | _FMODE_EXEC | os.O_DIRECT
# Writes of a handle that has written this much are streaming: the kernel may throttle them
# (dirty page limits), so its large writes go to a worker thread.
STREAMING = 16 << 20
LARGE_WRITE = 64 << 10


def write_whole(fd: int, data: bytes | memoryview, offset: int) -> int:
    """pwrite all of ``data``, or raise the error that stopped it (a full disk: ENOSPC). The
    kernel turns a short WRITE reply into EIO for the caller, where the upper itself would
    have given ENOSPC at the next write."""
    view = memoryview(data)
    done = os.pwrite(fd, view, offset)
    while 0 < done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _errors(func: Callable[..., Coroutine[Any, Any, T]],
            request: str | None = None) -> Callable[..., Coroutine[Any, Any, T]]:
    """Map failures of a handler to FUSE errors; log the unexpected ones. ``request``: the
    request's name for counts, fault rules and the trace (default: the handler's)."""

    name = request or func.__name__

    @functools.wraps(func)
    async def handler(*args: Any) -> T:
        ops = args[0]
        ops.requests[name] += 1
        try:
            if ops.watch is not None:  # trace, fail rules or `unionfs watch` (fuse/watch.py)
                return await ops.watch.around(name, func, args)
            return await func(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise pyfuse3.FUSEError(errno_of(exc, name, args[1:3])) from None
        finally:
            if ops.union.stale:
                ops.invalidate_stale()

    return handler


def errno_of(exc: Exception, request: str, args: object) -> int:
    """The errno a failed request returns: the OSError's own, else EIO (and a log line)."""
    if not isinstance(exc, OSError):
        log.error("%s%r failed unexpectedly; returning EIO", request, args, exc_info=exc)
        return errno.EIO
    code = exc.errno or errno.EIO
    if code == errno.ELOOP:  # a symlink in a layer path: treat as absent
        code = errno.ENOENT
    log.debug("%s%r: %s", request, args, exc, exc_info=True)
    return code


def _write_back(node_id: int) -> None:
    """Make the kernel write back (and drop) its cached pages of ``node_id``; returns when
    they are written. Blocks until this server has served those WRITEs: never call it on
    the trio thread."""
    try:
        pyfuse3.invalidate_inode(node_id, attr_only=False)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: the kernel holds no inode, so no pages
            raise


@dataclass(slots=True)
class Handle:
    """An open file: its fd, its node, and the layer the fd is in."""

    fd: int
    node: Node
    layer: int
    flags: int
    written: int = 0  # bytes written through large writes (see STREAMING)
    pacer: WritebackPacer | None = None  # a streaming file's writeback pacing


@dataclass(slots=True)
class DirHandle:
    """An open directory; its listing is taken at the first readdir (the kernel may serve
    the whole listing from its cache and never ask)."""

    node: Node
    entries: list[tuple[bytes, Any]] | None = None
    statted: int = 0  # entries [0, statted) were stat'ed ahead in a worker thread
    names: NameLister | None = None  # for plain READDIR (names, inode numbers, types)


# struct fuse_dirent (the kernel's ABI): ino, off (the next entry's), namelen, type, name,
# padded to 8 bytes.
_DIRENT = struct.Struct("<QQII")
_PADDING = [b"\0" * ((8 - n % 8) % 8) for n in range(8)]
FIRST_PLUS = 16  # entries of a listing's first READDIRPLUS once plain READDIR is served, at most


def _first_plus_end(entries: list[tuple[bytes, Any]], most: int) -> int:
    """Where the first READDIRPLUS answer of a listing ends (see :data:`FIRST_PLUS`).

    The kernel asks for attributes at the start of every listing, whether the caller wants
    them or not. The answer carries "." and "..", then entries up to the first name not
    starting with a dot: a caller that stats what it reads (ls -l skips hidden names) stats
    that one, the kernel sees it (its dentry came with attributes) and asks READDIRPLUS
    for the rest of the listing; a caller that only reads names (find) gets the rest by
    plain READDIR, and pays one lstat per directory instead of one per entry."""
    end = 2
    while end < len(entries) and end < most:
        end += 1
        if not entries[end - 1][0].startswith(b"."):
            break
    return end


@dataclass
class Timeouts:
    entry: float = 300.0
    attr: float = 300.0
    negative: float = 300.0


class UnionOperations(pyfuse3.Operations):
    """FUSE requests onto a :class:`Union`."""

    supports_dot_lookup = False
    enable_acl = True  # the kernel checks and caches POSIX ACLs (stored as xattrs)

    def __init__(self, union: Union, timeouts: Timeouts | None = None) -> None:
        super().__init__()
        self.union = union
        self.changes = Changes(union)
        self.slow = SlowWork(union)
        self.timeouts = timeouts or Timeouts()
        self.enable_writeback_cache = union.writable
        self.requests: Counter[str] = Counter()  # by request type, for `stats` and tests
        self.watch: Watch | None = None  # set while anything watches requests (fuse/watch.py)
        self.files: dict[int, Handle] = {}
        # Per node: its writes and syncs running in worker threads now. Changes of that
        # file's data or attributes go to a worker thread too while any run (they would
        # wait for the file's inode lock on the trio thread).
        self.bulk: Counter[int] = Counter()
        # Thread-safe: run a function on the trio thread soon (set once trio runs; the
        # WRITE slot's writer threads hand their end back through it).
        self.call_soon: Callable[[Callable[[], None]], object] | None = None
        self.dirs: dict[int, DirHandle] = {}
        # With plain READDIR served (unionfs.fuse.lowlevel): the most entries the first
        # READDIRPLUS of a listing answers (0: as many as fit).
        self.first_plus = 0
        self._next_dir = 1

    # ---- helpers -------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.union.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def _attrs(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.id
        a.generation = node.generation
        a.entry_timeout = self.timeouts.entry
        a.attr_timeout = self.timeouts.attr
        a.st_mode = st.st_mode
        a.st_nlink = self.union.dir_nlink(node, st) if node.is_dir else st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _entry(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        """Reply to a request that hands the kernel a new reference to ``node``."""
        node.lookups += 1
        return self._attrs(node, st)

    def _negative(self) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        a.entry_timeout = self.timeouts.negative
        return a

    def invalidate_stale(self) -> None:
        """Tell the kernel to drop the cached attributes of nodes the engine changed as a side
        effect (attributes only: never blocks on writeback)."""
        stale, self.union.stale = self.union.stale, set()
        for node_id in stale:
            if node_id in self.union.table.nodes:
                try:
                    pyfuse3.invalidate_inode(node_id, attr_only=True)
                except OSError as exc:  # ENOENT: the kernel already forgot it
                    log.debug("invalidate_inode(%#x): %s", node_id, exc)

    async def switch_upper_exclusively(self) -> str:
        """:meth:`switch_upper` once every writer that waits mid-change is done (the gate)."""
        async with self.slow.gate.exclusive():
            return self.switch_upper()

    def switch_upper(self) -> str:
        """Commit support: freeze the upper, continue on a fresh one (see Union.switch_upper).

        Runs between two requests (handlers never yield mid-change), so no writer is halfway.
        Files open for writing are copied up into the new upper and their fds moved there, so
        writes after the switch land in the new upper and the frozen one stays unchanged.
        """
        frozen = self.union.switch_upper()
        for handle in self.files.values():
            handle.layer += 1
            if handle.flags & _WRITE_FLAGS and handle.node.parent is not None:
                self.union.copy_up(handle.node)
                fd = self.union.layers[0].open(handle.node.path(), os.O_RDWR)
                os.dup2(fd, handle.fd)
                os.close(fd)
                handle.layer = 0
        log.info("upper frozen as %s; continuing on a fresh upper", frozen)
        return frozen

    # ---- reading -------------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._entry(parent, self.union.stat(parent))
        if name == b"..":
            up = parent.parent or parent
            return self._entry(up, self.union.stat(up))
        if parent.merged is None:
            await self.slow.view(parent)
        view = await self.slow.child_view(parent, name)
        found = self.union.lookup(parent, name)
        if found is None:
            return self._negative()
        if view is not None:
            self.slow.install_child(found[0], view)
        return self._entry(*found)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        table = self.union.table
        try:
            for inode, count in inode_list:
                table.forget(inode, count)
        except Exception:  # forget has no reply: log it, the server goes on
            log.exception("forget%r failed unexpectedly", inode_list[:4])

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        fd = self._upper_fd(node)
        if fd is not None:  # open in the upper (the kernel asks before a chown of it)
            return self._attrs(node, os.fstat(fd))
        return self._attrs(node, self.union.stat(node))

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.union.readlink(self._node(inode))

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_dir
        self._next_dir += 1
        self.dirs[fh] = DirHandle(node)
        return fh

    async def _listing(self, handle: DirHandle, start_id: int) -> list[tuple[bytes, Any]]:
        """The entries a listing of ``handle`` answers from, taken at its start."""
        entries = handle.entries
        if entries is None or start_id == 0:
            parent = handle.node
            if parent.merged is None:
                await self.slow.view(parent)
            entries = handle.entries = [(b".", None), (b"..", None),
                                        *self.union.merged(parent).items()]
            handle.statted = 0
            self.slow.ahead.start(parent)  # a walk looks its subdirectories up next
        return entries

    async def _stat_ahead(self, handle: DirHandle, entries: list[tuple[bytes, Any]],
                          start_id: int, end: int) -> None:
        """Before a READDIRPLUS answer: stat its entries in a worker thread, so the answer
        does not wait for the disk on the trio thread; from a second READDIRPLUS of the
        listing on (the caller stats the entries), all the rest at once."""
        if start_id < handle.statted:
            return
        if start_id:
            end = len(entries)
        names = [name for name, entry in entries[start_id:end] if entry is not None]
        handle.statted = end
        await self.slow.stat_entries(handle.node, names)

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        parent = handle.node
        union = self.union
        entries = await self._listing(handle, start_id)
        end = len(entries)
        if start_id == 0 and self.first_plus:
            end = _first_plus_end(entries, self.first_plus)
        await self._stat_ahead(handle, entries, start_id, end)
        for index in range(start_id, end):
            name, entry = entries[index]
            if entry is None:  # "." and "..": the kernel takes no reference to them
                dot = parent if name == b"." else (parent.parent or parent)
                attrs = self._attrs(dot, union.stat(dot))
                if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                    return
                continue
            try:
                found = union.lookup(parent, name)
            except FileNotFoundError:
                found = None
            # Any other failure (an I/O error of a layer) reaches the caller: never a name
            # silently missing from the listing.
            if found is None:  # removed since opendir
                continue
            node, st = found
            if node.is_dir and node.merged is None:  # its attributes need its view
                view = self.slow.ahead.ready(parent, name)
                if view is not None:
                    self.slow.install_child(node, view)
            if not pyfuse3.readdir_reply(token, name, self._attrs(node, st), index + 1):
                return
            node.lookups += 1

    async def _readdir_names(self, fh: int, start_id: int, size: int) -> bytes:
        """A plain READDIR (names, inode numbers and types: no lstat per entry): the
        ``struct fuse_dirent`` records from ``start_id`` that fit in ``size`` bytes."""
        self.requests["readdir_names"] += 1
        handle = self.dirs[fh]
        parent = handle.node
        entries = await self._listing(handle, start_id)
        lister = handle.names
        if lister is None or start_id == 0:
            lister = handle.names = NameLister(self.union, parent)
        pack = _DIRENT.pack
        records: list[bytes] = []
        used = 0
        for index in range(start_id, len(entries)):
            name, entry = entries[index]
            if entry is None:
                ino, kind = dot_number(parent, name), DT_DIR
            else:
                found = lister.dirent(name, entry)
                if found is None:  # removed since the listing began
                    continue
                ino, kind = found
            length = len(name)
            record = pack(ino, index + 1, length, kind) + name + _PADDING[length % 8]
            used += len(record)
            if used > size:
                break
            records.append(record)
        return b"".join(records)

    readdir_names = _errors(_readdir_names, "readdir")

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        sv = os.statvfs(self.union.layers[0].path)
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail"):
            setattr(data, field, getattr(sv, field))
        data.f_namemax = 255
        return data

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = self.union.getxattr(self._node(inode), name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    def xattr_known_absent(self, inode: int, name: bytes) -> bool:
        """getxattr's fast path (fuse/lowlevel.py): True when ``inode`` is known to have
        no xattr ``name`` and nothing watches requests (trace, fault rules, metrics: those
        see every request); counted as a getxattr. Never raises."""
        if self.watch is not None:
            return False
        node = self.union.table.nodes.get(inode)
        if node is None or not self.union.knows_absent(node, name):
            return False
        self.requests["getxattr"] += 1
        return True

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return self.union.listxattr(self._node(inode))

    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return True  # default_permissions: the kernel checks

    # ---- files ---------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        union = self.union
        if node.parent is None and node.orphan_fd is not None:  # unlinked, still held
            fd = os.open(proc_path(node.orphan_fd), self._fs_flags(flags) | os.O_CLOEXEC)
            return self._opened(fd, node, 0, flags)
        if flags & _WRITE_FLAGS:
            await self.slow.copy_up(node)
            union.copy_up(node)
        layer = union.top_layer(node)
        fd = layer.open(union.path_in(node, layer.index), self._fs_flags(flags))
        return self._opened(fd, node, layer.index, flags)

    def _fs_flags(self, flags: int) -> int:
        flags &= ~_OPEN_IGNORED
        if self.enable_writeback_cache:
            # The kernel may read to fill pages of a write-only file, and does appends itself.
            flags &= ~os.O_APPEND
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags

    def _opened(self, fd: int, node: Node, layer: int, flags: int) -> pyfuse3.FileInfo:
        self.files[fd] = Handle(fd, node, layer, flags)
        node.handles.append(fd)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    def _fd(self, fh: int) -> int:
        """The fd to read from; a handle opened on a lower follows its file's copy-up."""
        handle = self.files[fh]
        if handle.layer != 0 and self.union.writable and handle.node.parent is not None:
            entry = self.union.entry(handle.node)
            if entry.layer == 0:
                new_fd = self.union.layers[0].open(handle.node.path(), os.O_RDONLY)
                os.dup2(new_fd, handle.fd)
                os.close(new_fd)
                handle.layer = 0
        return handle.fd

    def read_fd(self, fh: int) -> int | None:
        """The fd a READ of ``fh`` is served from by :mod:`unionfs.fuse.reads`, outside
        pyfuse3's request loop (counted here). None: :meth:`read` serves it instead, while
        something watches requests (trace, fault rules, accounting), or for an unknown
        handle (its errno then comes from there). Raises OSError like :meth:`_fd`."""
        if self.watch is not None or fh not in self.files:
            return None
        self.requests["read"] += 1
        return self._fd(fh)

    @_errors
    async def read(  # type: ignore[override]  # pyfuse3 replies with any buffer
            self, fh: int, off: int, size: int) -> bytes | bytearray:
        return await self.slow.read(self._fd(fh), size, off)

    def write_route(self, fh: int, size: int) -> Route | None:
        """Where the WRITE slot (:mod:`unionfs.fuse.writes`) writes ``size`` bytes of ``fh``,
        as :meth:`write` decides: a write of a streaming file, or of a file with writes in
        worker threads, goes to a writer thread, holding the gate (a live commit waits for
        it) and counted in :attr:`bulk` until the thread hands it back. None: :meth:`write`
        serves it (watched requests, an unknown handle, a commit about to switch)."""
        handle = self.files.get(fh)
        if self.watch is not None or handle is None:
            return None
        node_id = handle.node.id
        streaming = size >= LARGE_WRITE and self._streaming(fh, size)
        if not (streaming or self.bulk[node_id]):
            self.requests["write"] += 1
            return Route(fh)
        if self.call_soon is None or not self.slow.gate.share_now():
            return None
        self.requests["write"] += 1
        self.bulk[node_id] += 1
        call_soon = self.call_soon
        return Route(fh, lambda: call_soon(functools.partial(self._written, node_id)))

    def _written(self, node_id: int) -> None:
        """A write of :meth:`write_route` in a writer thread is answered (trio thread)."""
        self._bulk_done(node_id)
        self.slow.gate.unshare()

    def write_at(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        """pwrite of a write in a thread (any thread), keeping the kernel's mtime; a
        streaming file's writeback is paced (see :meth:`_streaming`)."""
        written = self._keeping_mtime(fd, lambda: write_whole(fd, data, offset))
        handle = self.files.get(fd)  # open until its WRITEs are answered (then RELEASE)
        if handle is not None and handle.pacer is not None:
            handle.pacer.wrote(offset, written)
        return written

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files.get(fh)
        streaming = len(buf) >= LARGE_WRITE and self._streaming(fh, len(buf))
        if streaming or (handle is not None and self.bulk[handle.node.id]):
            # A write of a file that has writes in worker threads goes there too: it
            # would wait for their inode lock (held while the kernel throttles them).
            async with self.slow.gate.shared():
                with self._in_bulk(handle):
                    return await self.slow.run(self.write_at, fh, buf, off, hold="write")
        return self._keeping_mtime(fh, lambda: write_whole(fh, buf, off))

    @contextlib.contextmanager
    def _in_bulk(self, handle: Handle | None) -> Iterator[None]:
        """Count the data work of ``handle``'s node that runs in worker threads."""
        if handle is None:
            yield
            return
        node_id = handle.node.id
        self.bulk[node_id] += 1
        try:
            yield
        finally:
            self._bulk_done(node_id)

    def _bulk_done(self, node_id: int) -> None:
        self.bulk[node_id] -= 1
        if not self.bulk[node_id]:
            del self.bulk[node_id]

    def _streaming(self, fh: int, size: int) -> bool:
        handle = self.files.get(fh)
        if handle is None:
            return False
        handle.written += size
        if handle.written <= STREAMING:
            return False
        if handle.pacer is None and self.union.copier is not None and self.union.copier.sync:
            # As a copy-up's: the writeback starts as the file is written, so its fsync
            # does not flood the disk that everyone else's reads wait for (-o volatile:
            # left to the kernel).
            handle.pacer = WritebackPacer(fh)
        return True

    def _keeping_mtime(self, fd: int, change: Callable[[], T]) -> T:
        """Change an open upper file. Under the writeback cache the kernel owns mtime: it
        stamps it at write(2) or fallocate(2) time (or not at all, within one clock tick) and
        sends it with a setattr. Our change reaches the file later and would stamp a different
        time than the mount showed: keep the file's."""
        if not self.enable_writeback_cache:
            return change()
        st = os.fstat(fd)
        result = change()
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        return result

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> int:
        """fallocate(2) on an open file (called by :mod:`unionfs.fuse.lowlevel`): 0 or errno.

        Only a handle open for writing reaches here (the kernel checks), and those live in
        the upper, so the change can never reach a lower layer.
        """
        try:
            handle = self.files.get(fh)
            if handle is None or handle.layer != 0:
                return errno.EBADF
            self._keeping_mtime(handle.fd, lambda: fallocate(handle.fd, mode, offset, length))
        except Exception as exc:
            return errno_of(exc, "fallocate", (fh, mode, offset, length))
        return 0

    @_errors
    async def lseek(self, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA/SEEK_HOLE on an open file (called by :mod:`unionfs.fuse.lowlevel`),
        answered by the layer file the handle reads (a lower's, or the upper's after copy-up).

        The layer file may lag behind the caller's writes: the kernel sends FUSE_LSEEK
        without writing its dirty pages back first. It holds the inode lock meanwhile, so no
        write(2) can come in between, and with no handle of the file open for writing the
        kernel has no dirty pages of it (its release writes them back before RELEASE reaches
        us). With one open, the kernel is first told to invalidate the file's pages, which
        writes the dirty ones back (WRITE requests, served by the trio thread meanwhile:
        the notification waits for them in a thread of its own), and only then is the
        layer file asked. Node numbers are per file, so these are all of its handles.
        """
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise pyfuse3.FUSEError(errno.EINVAL)
        handle = self.files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        node = handle.node
        if any(self.files[f].flags & _WRITE_FLAGS for f in node.handles):
            await self.slow.run_apart(_write_back, node.id)
        # One look at the file's extent map, on the trio thread as the lstat of a lookup is
        # (a thread hop would cost ten times a cached answer; the map of an open file is
        # cached once read).
        return os.lseek(self._fd(fh), offset, whence)

    async def flush(self, fh: int) -> None:
        """Nothing to do at close (data reaches the upper at write, durability is fsync's):
        ENOSYS tells the kernel never to send FLUSH again, saving a round trip per close.
        The kernel still writes its dirty pages back before close returns."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        with self._in_bulk(self.files.get(fh)):
            await self.slow.sync(fh, datasync)

    @_errors
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        os.close(fh)
        node = handle.node
        node.handles.remove(fh)
        if node.lookups <= 0 and not node.handles:
            self.union.table.forget(node.id, 0)

    # ---- creating and removing -----------------------------------------------------------

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                          pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        fd, node, st = self.changes.create(parent, name, mode, self._fs_flags(flags),
                                           Caller(ctx.uid, ctx.gid))
        return self._opened(fd, node, 0, flags), self._entry(node, st)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node, st = self.changes.mkdir(self._node(parent_inode), name, mode,
                                      Caller(ctx.uid, ctx.gid))
        return self._entry(node, st)

    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node, st = self.changes.mknod(self._node(parent_inode), name, mode, rdev,
                                      Caller(ctx.uid, ctx.gid))
        return self._entry(node, st)

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node, st = self.changes.symlink(self._node(parent_inode), name, target,
                                        Caller(ctx.uid, ctx.gid))
        return self._entry(node, st)

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        await self.slow.copy_up(node)
        node, st = self.changes.link(node, self._node(new_parent_inode), new_name)
        return self._entry(node, st)

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        if not self.slow.entries.busy((parent.id, name)):  # the usual case: no copy-up
            self.changes.unlink(parent, name)
            return
        async with self.slow.entries.settled((parent.id, name)):
            self.changes.unlink(parent, name)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        if not self.slow.entries.busy((parent.id, name)):
            self.changes.rmdir(parent, name)
            return
        async with self.slow.entries.settled((parent.id, name)):
            self.changes.rmdir(parent, name)

    @_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        old_parent = self._node(parent_inode_old)
        new_parent = self._node(parent_inode_new)
        if not self.changes.check_rename(old_parent, name_old, new_parent, name_new, flags):
            return
        await self._copy_up_moving(old_parent, name_old)
        if flags & RENAME_EXCHANGE:
            await self._copy_up_moving(new_parent, name_new)
        async with self.slow.entries.settled((old_parent.id, name_old),
                                             (new_parent.id, name_new)):
            self.changes.rename(old_parent, name_old, new_parent, name_new, flags)

    async def _copy_up_moving(self, parent: Node, name: bytes) -> None:
        """Before a rename: copy the data of what moves up in worker threads (a lower file,
        or every file of a merged directory's tree); the rename then finds it done."""
        union = self.union
        if not union.writable:
            return
        entry = union.merged(parent).get(name)
        if entry is None or (entry.layer == 0 and not entry.is_dir):
            return
        node = union.view_of(parent, name)
        if not entry.is_dir:
            await self.slow.copy_up(node)
        elif how_to_move(True, entry.dir_layers, union.make_redirects) is Move.COPY_TREE:
            await self.slow.copy_up_tree(node)  # (a redirect moves the directory alone)

    # ---- attributes ----------------------------------------------------------------------

    @_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        handle = self.files.get(fh) if fh is not None else None
        fd = handle.fd if handle is not None and handle.layer == 0 else None
        if fd is None:
            fd = self._unlinked_upper_fd(node)
        if fd is None and not fields.update_size:
            # chown, chmod, utimens of a file open in the upper (tar sets them before it
            # closes the file it made): through that fd, no path walked, nothing to copy up.
            fd = self._upper_fd(node)
        if fd is None:
            await self.slow.copy_up(node)
        times = None
        if fields.update_atime or fields.update_mtime:
            times = (attr.st_atime_ns if fields.update_atime else None,
                     attr.st_mtime_ns if fields.update_mtime else None)
        change = functools.partial(
            self.changes.setattr, node,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            times=times, fd=fd,
        )
        if fd is not None and self.bulk[node.id]:
            # Through the open fd only (no path, no state of the union but the set-gid
            # cache, reset here first), so it may run in a worker thread.
            node.sgid_gid = None
            async with self.slow.gate.shared():
                with self._in_bulk(self.files.get(fd)):
                    return self._attrs(node, await self.slow.run(change))
        return self._attrs(node, change())

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        await self.slow.copy_up(node)
        self.changes.setxattr(node, name, value, fd=self._unlinked_upper_fd(node))

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        if self.union.getxattr(node, name) is not None:
            await self.slow.copy_up(node)
        self.changes.removexattr(node, name, fd=self._unlinked_upper_fd(node))

    def _upper_fd(self, node: Node) -> int | None:
        """An fd of linked ``node`` open in the upper (the file its name leads to), if any.
        Handles of a lower file are never one: a lower layer must never change."""
        if not node.handles or node.parent is None or not self.union.writable:
            return None
        files = self.files
        return next((f for f in node.handles if files[f].layer == 0), None)

    def _unlinked_upper_fd(self, node: Node) -> int | None:
        """For an unlinked node, an open fd of it in the upper: the only way left to change
        it (an fd in a lower layer must never be changed). None for a linked node."""
        if node.parent is None and node is not self.union.root:
            return next((f for f in node.handles if self.files[f].layer == 0), None)
        return None

