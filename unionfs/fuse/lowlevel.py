"""Requests pyfuse3 does not expose, served through libfuse's own dispatch table.

pyfuse3 gives libfuse a static ``struct fuse_lowlevel_ops`` and libfuse copies it into the
session at ``pyfuse3.init``. What the union needs and pyfuse3's table lacks:

* ``fallocate`` (FUSE_FALLOCATE): without a handler the kernel answers EOPNOTSUPP;
* ``cache_readdir`` on opendir (FOPEN_CACHE_DIR): without it every listing reaches the server,
  with it the kernel keeps a listing in its page cache until the directory changes;
* ``FUSE_CAP_CACHE_SYMLINKS`` at init: the kernel then caches symlink targets (the same init
  drops ``FUSE_CAP_SPLICE_READ``, a syscall per request that buys pyfuse3 nothing);
* plain ``readdir`` (FUSE_READDIR) with ``FUSE_CAP_READDIRPLUS_AUTO``: pyfuse3 only serves
  READDIRPLUS, which answers every entry with its attributes. With a readdir handler the
  kernel asks for names only when its heuristic says the caller does not stat the entries
  (``ls -U``, ``find``, globs: every chunk after the first unless the caller looks entries
  up). Its answer is served like pyfuse3's own handlers: the callback hands a coroutine to
  pyfuse3's request loop (its ``py_retval`` slot), which awaits it in the same worker task;
* ``getxattr`` of a name the union knows a file lacks (``ls -l`` asks ``security.selinux``
  of every file, each time): answered ENODATA in the callback, pyfuse3's own handler is
  called for everything else;
* ``lseek`` (FUSE_LSEEK: SEEK_DATA and SEEK_HOLE): without a handler the kernel treats every
  file as data up to its end, so ``cp --sparse`` and tar read holes as zeros. Served the same
  way as plain READDIR (a coroutine handed to pyfuse3's request loop), since an answer may
  first have to make the kernel write its dirty pages back (``UnionOperations.lseek``);
* ``read`` (FUSE_READ): served by :class:`unionfs.fuse.reads.ReadServer` in the callback,
  from the page cache at once, and by its reader threads (which reply themselves, the GIL
  released) where the disk must be waited for; pyfuse3's own handler serves what it gives
  back (while requests are watched, a handle it does not know, a READ over 1 MiB);
* ``write_buf`` (FUSE_WRITE; libfuse calls it rather than ``write`` when it is set, as
  pyfuse3 sets both): served by :class:`unionfs.fuse.writes.WriteServer`, which copies the
  data once and writes it on the trio thread or in its writer threads (which reply
  themselves); pyfuse3's own handler serves what it gives back, and a buffer that is not in
  memory (spliced from a pipe: never, as our init drops ``FUSE_CAP_SPLICE_READ``).

It also replaces pyfuse3's wait for the next request (:func:`_lean_wait`): pyfuse3 takes a
trio lock and parks in epoll before every request, which costs more than most of our handlers.
Here one worker task at a time is the *reader*: it polls the FUSE fd and serves what comes,
back to back, without yielding. Only when a request is about to wait (slow I/O in a worker
thread, a lock) does its task hand reading on (:meth:`Installed.hand_off`) to one of the other
worker tasks, parked until then; so a request that waits never stalls the others, and the
fast path costs no more than with one task. After a request the reader keeps polling for up
to ``poll_us`` microseconds before it sleeps: a process that works through a tree sends its
next request within a few microseconds, and a sleeping server (a halted vCPU, on a VM) takes
tens of microseconds to wake.

Last, :mod:`unionfs.fuse.handshake` answers the kernel's INIT with parallel directory
operations granted (libfuse before 3.17.1 never passes that flag on, and the kernel then lets
one lookup of a directory at a time reach the server).

The extensions are used only with the pyfuse3 and libfuse versions they were checked against
(:data:`PYFUSE3_VERSIONS`, :data:`LIBFUSE_MINORS`); ``-o no_extensions`` leaves them out, so
that the plain pyfuse3 path is served (and tested) too.

:func:`install` fills those slots of the session's copy of the table, after pyfuse3.init and
before the first request. It writes only after every check passed: pyfuse3's symbols are found
in its extension's symbol table, the table holds pyfuse3's own ``opendir`` and ``init`` at the
slots the libfuse 3 ABI gives them and nothing at ``fallocate`` (nor at ``copy_file_range`` and
``lseek``, for lseek), and the session's copy equals the table byte for byte. Otherwise nothing
is written and the mount runs without these features (a warning says why). The callbacks run in
the trio thread, inside libfuse's dispatch of the request, with the GIL held; they never raise,
and every request they take gets a reply.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3
import trio

from unionfs.fuse import handshake
from unionfs.fuse.reads import ReadServer, ReadSource
from unionfs.fuse.writes import WriteServer, WriteSource

log = logging.getLogger(__name__)
T = TypeVar("T")

# Slots of struct fuse_lowlevel_ops (libfuse 3 ABI: fields are only ever appended).
SLOT_INIT = 0
SLOT_READ = 15
SLOT_WRITE_BUF = 36
SLOT_GETXATTR = 26
SLOT_OPENDIR = 20
SLOT_READDIR = 21
SLOT_FLOCK = 39
SLOT_FALLOCATE = 40
SLOT_READDIRPLUS = 41
SLOT_COPY_FILE_RANGE = 42
SLOT_LSEEK = 43
_MIN_SLOTS = SLOT_READDIRPLUS + 1
_PTR = ctypes.sizeof(ctypes.c_void_p)
_SESSION_SCAN = 256  # bytes of struct fuse_session searched for the ops copy

# struct fuse_file_info: int flags, then the bit fields (keep_cache bit 2, cache_readdir bit 6).
_FI_BITS_OFFSET = 4
_FI_KEEP_CACHE = 1 << 2
_FI_CACHE_READDIR = 1 << 6
_FI_FH_OFFSET = 16
_FUSE_BUF_IS_FD = 1 << 1  # enum fuse_buf_flags: the buffer is a file descriptor
# struct fuse_conn_info: proto_major, proto_minor, max_write, max_read, max_readahead,
# capable, want (unsigned each).
_CONN_MAX_READAHEAD = 4
_CONN_CAPABLE = 5
_CONN_WANT = 6
FUSE_CAP_SPLICE_READ = 1 << 9
FUSE_CAP_READDIRPLUS = 1 << 13
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14
FUSE_CAP_CACHE_SYMLINKS = 1 << 23

_OPENDIR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)
_OPENDIR_CALL = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)
_INIT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_INIT_CALL = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
PYFUSE3_VERSIONS = ("3.3", "3.4", "3.5")  # major.minor whose ops table layout was checked
LIBFUSE_MINORS = range(10, 18)  # libfuse 3.10 .. 3.17
LIBFUSE = "libfuse3.so.3"
WORKERS = 32  # worker tasks: one reads, the others wait in slow requests or are parked

_FALLOCATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_READDIR_ARGS = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int64,
                 ctypes.c_void_p)
_READDIR = ctypes.CFUNCTYPE(None, *_READDIR_ARGS)
_GETXATTR_ARGS = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t)
_GETXATTR = ctypes.CFUNCTYPE(None, *_GETXATTR_ARGS)
_GETXATTR_CALL = ctypes.PYFUNCTYPE(None, *_GETXATTR_ARGS)
_READ = _READDIR  # (req, ino, size, off, fi), as readdir's
_READ_CALL = ctypes.PYFUNCTYPE(None, *_READDIR_ARGS)
# write_buf(req, ino, struct fuse_bufvec *bufv, off, fi)
_WRITE_BUF_ARGS = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_void_p)
_WRITE_BUF = ctypes.CFUNCTYPE(None, *_WRITE_BUF_ARGS)
_WRITE_BUF_CALL = ctypes.PYFUNCTYPE(None, *_WRITE_BUF_ARGS)
_LSEEK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                          ctypes.c_int, ctypes.c_void_p)
_INCREF = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_IncRef", ctypes.pythonapi))
_DECREF = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_DecRef", ctypes.pythonapi))

FallocateHandler = Callable[[int, int, int, int], int]
"""(fh, mode, offset, length) -> 0 or a positive errno; must not raise."""

XattrAbsent = Callable[[int, bytes], bool]
"""(inode, name) -> True when that inode is known to have no such xattr (answered ENODATA
at once, without pyfuse3's request machinery); must not raise."""

ReaddirNames = Callable[[int, int, int], Coroutine[Any, Any, bytes]]
"""(fh, offset, size) -> the ``struct fuse_dirent`` records of a plain READDIR answer;
raises pyfuse3.FUSEError for an error answer."""

Lseek = Callable[[int, int, int], Coroutine[Any, Any, int]]
"""(fh, offset, whence) -> the offset SEEK_DATA/SEEK_HOLE found; raises pyfuse3.FUSEError
for an error answer (ENXIO: no data at or after offset)."""


class Unsupported(Exception):
    """A check failed: the extension table cannot be installed safely."""


@dataclass
class Installed:
    """What :func:`install` put in place (kept alive for as long as the session runs)."""

    callbacks: list[Any]  # ctypes function objects: they must outlive the session
    readers: _Readers
    features: tuple[str, ...] = ("fallocate", "cache_readdir", "cache_symlinks", "lean_wait")
    workers: int = WORKERS
    reads: ReadServer | None = None
    writes: WriteServer | None = None

    def hand_off(self) -> None:
        """The calling request is about to wait: another worker task reads requests."""
        self.readers.hand_off()

    def close(self) -> None:
        """After the request loop, before the session is destroyed: stop the reader
        threads (they reply through the session)."""
        if self.reads is not None:
            self.reads.close()
        if self.writes is not None:
            self.writes.close()


def install(fallocate: FallocateHandler, *, poll_us: int = 0,
            readdir_names: ReaddirNames | None = None,
            max_readahead: int = 0, xattr_absent: XattrAbsent | None = None,
            lseek: Lseek | None = None, reads: ReadSource | None = None,
            writes: WriteSource | None = None) -> Installed | None:
    """Add fallocate, cached directory listings and symlinks, and the lean request wait
    (polling ``poll_us`` microseconds before it sleeps) to the live session; with
    ``readdir_names``, plain READDIR; with ``max_readahead``, that read-ahead window in
    the INIT reply (the kernel keeps the smaller of it and the mount's ``read_ahead_kb``);
    with ``xattr_absent``, a getxattr it knows the answer of is answered ENODATA at once;
    with ``lseek``, SEEK_DATA/SEEK_HOLE (left out, with a warning, when its slot or
    ``fuse_reply_lseek`` cannot be checked; the rest is installed all the same); with
    ``reads``, READ served by a :class:`ReadServer` (reader threads that reply themselves);
    with ``writes``, WRITE served by a :class:`WriteServer` (the same, for writes).

    Call after ``pyfuse3.init`` and before ``pyfuse3.main``. Returns None (after logging
    why) when this pyfuse3/libfuse build cannot be extended safely; nothing is changed then.
    """
    try:
        check_versions()
        table = _Table.locate()
        libfuse = _libfuse()
        installed = _install(table, libfuse, fallocate, poll_us, readdir_names, max_readahead,
                             xattr_absent, lseek, reads, writes)
    except (Unsupported, OSError, AttributeError, ValueError, AssertionError) as exc:
        log.warning("running without fallocate and cached directory listings: %s", exc)
        return None
    # After the slots are written, so that our init callback takes part in the handshake.
    if handshake.grant_parallel_dirops(LIBFUSE, table.session):
        installed.features += ("parallel_dirops",)
    return installed


def check_versions() -> None:
    """Refuse pyfuse3 and libfuse versions the table layout was not checked against."""
    version = getattr(pyfuse3, "__version__", "")
    if ".".join(version.split(".")[:2]) not in PYFUSE3_VERSIONS:
        raise Unsupported(f"pyfuse3 {version or '(unknown)'} is not one of the checked "
                          f"versions {', '.join(PYFUSE3_VERSIONS)}")
    libfuse = _libfuse()
    libfuse.fuse_pkgversion.restype = ctypes.c_char_p
    text = (libfuse.fuse_pkgversion() or b"").decode()
    parts = text.split(".")
    if len(parts) < 2 or parts[0] != "3" or not parts[1].isdigit() or (
            int(parts[1]) not in LIBFUSE_MINORS):
        raise Unsupported(f"libfuse {text or '(unknown)'} is not one of the checked versions "
                          f"3.{LIBFUSE_MINORS.start}..3.{LIBFUSE_MINORS.stop - 1}")


def _libfuse() -> ctypes.CDLL:
    try:
        return ctypes.CDLL(LIBFUSE)
    except OSError as exc:
        raise Unsupported(f"cannot load libfuse3: {exc}") from None


def _install(table: _Table, libfuse: ctypes.CDLL, fallocate: FallocateHandler,
             poll_us: int, readdir_names: ReaddirNames | None = None,
             max_readahead: int = 0, xattr_absent: XattrAbsent | None = None,
             lseek: Lseek | None = None, reads: ReadSource | None = None,
             writes: WriteSource | None = None) -> Installed:
    reply_err = libfuse.fuse_reply_err
    reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
    reply_err.restype = ctypes.c_int
    readers = _Readers()
    wait = _lean_wait(libfuse, table.session, poll_us * 1000, readers)
    names = readdir_names is not None
    slots = [SLOT_OPENDIR, SLOT_INIT, SLOT_FALLOCATE]
    callbacks: list[Any] = [
        _OPENDIR(_opendir_with_cache(_OPENDIR_CALL(table.session_slot(SLOT_OPENDIR)))),
        _INIT(_init_with_symlink_cache(_INIT_CALL(table.session_slot(SLOT_INIT)), names,
                                       max_readahead)),
        _FALLOCATE(_fallocate_replying(fallocate, reply_err)),
    ]
    features = Installed.features
    if readdir_names is not None:
        reply_buf = libfuse.fuse_reply_buf
        reply_buf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        reply_buf.restype = ctypes.c_int
        submit = _request_slot(table.retval)
        slots.append(SLOT_READDIR)
        callbacks.append(_READDIR(_submitting(
            "readdir", lambda fh, size, off: readdir_names(fh, off, size), submit,
            lambda req, data: reply_buf(req, data, len(data)), reply_err)))
        features = (*features, "readdir_names")
    if xattr_absent is not None:
        original = _GETXATTR_CALL(table.session_slot(SLOT_GETXATTR))
        slots.append(SLOT_GETXATTR)
        callbacks.append(_GETXATTR(_getxattr_known(original, xattr_absent, reply_err)))
        features = (*features, "getxattr_known")
    if lseek is not None:
        reply_lseek = _reply_lseek(libfuse, table)
        if reply_lseek is not None:
            submit = _request_slot(table.retval)
            slots.append(SLOT_LSEEK)
            callbacks.append(_LSEEK(_submitting("lseek", lseek, submit, reply_lseek,
                                                reply_err)))
            features = (*features, "lseek")
    server = None
    if reads is not None:
        reply_at = libfuse["fuse_reply_buf"]  # its own function object: (req, address, size)
        reply_at.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        reply_at.restype = ctypes.c_int
        original_read = _READ_CALL(table.session_slot(SLOT_READ))
        server = ReadServer(reads.fd_of, reply_at, reply_err, reads.wait, reads.hold)
        slots.append(SLOT_READ)
        callbacks.append(_READ(_read_served(original_read, server, reply_err)))
        features = (*features, "reads")
    writer = None
    if writes is not None:
        reply_write = libfuse.fuse_reply_write
        reply_write.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        reply_write.restype = ctypes.c_int
        original_write = _WRITE_BUF_CALL(table.session_slot(SLOT_WRITE_BUF))
        writer = WriteServer(writes, reply_write, reply_err)
        slots.append(SLOT_WRITE_BUF)
        callbacks.append(_WRITE_BUF(_write_served(original_write, writer, reply_err)))
        features = (*features, "writes")
    addresses = [ctypes.cast(callback, ctypes.c_void_p).value or 0 for callback in callbacks]
    # Everything that can fail has been done: from here on, only writes.
    for slot, address in zip(slots, addresses, strict=True):
        table.set_session_slot(slot, address)
    setattr(pyfuse3, "_wait_fuse_readable", wait)  # noqa: B010 (not declared by pyfuse3)
    if server is not None:
        server.start()
    if writer is not None:
        writer.start()
    return Installed(callbacks, readers, features, reads=server, writes=writer)


def _reply_lseek(libfuse: ctypes.CDLL, table: _Table) -> Callable[[int, int], int] | None:
    """libfuse's ``fuse_reply_lseek`` when the lseek slot is known to be free; else None
    (after a warning: the mount then runs without SEEK_DATA/SEEK_HOLE, as before)."""
    if table.lseek_problem is not None:
        log.warning("running without SEEK_DATA/SEEK_HOLE: %s", table.lseek_problem)
        return None
    try:
        reply = libfuse.fuse_reply_lseek
    except AttributeError:
        log.warning("running without SEEK_DATA/SEEK_HOLE: libfuse has no fuse_reply_lseek")
        return None
    reply.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    reply.restype = ctypes.c_int
    return reply  # type: ignore[no-any-return]


YIELD_EVERY = 32  # requests served back to back before other trio tasks get a turn
PARKED_CHECK = 1.0  # seconds between a parked worker task's looks at the session's end
_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _Readers:
    """Which worker task reads the next request: one at a time (trio lets one task wait on
    an fd), the others parked until the reader hands off or the session ends."""

    def __init__(self) -> None:
        self.reader: trio.lowlevel.Task | None = None
        self.parked = trio.lowlevel.ParkingLot()

    def hand_off(self) -> None:
        if self.reader is trio.lowlevel.current_task():
            self.reader = None
            self.parked.unpark()

    async def take(self, exited: Callable[[], bool]) -> bool:
        """Become the reader (False: the session ended meanwhile).

        A parked task looks at the session every :data:`PARKED_CHECK` seconds too: a reader
        whose read of the device found the session gone (ENODEV between the poll and the
        read: a lazy unmount's last close) leaves pyfuse3's loop without handing off, and
        ``pyfuse3.terminate()`` only wakes a task that waits on the device; without the look
        the parked tasks would keep the server alive for ever, SIGTERM included."""
        task = trio.lowlevel.current_task()
        while self.reader is not None and self.reader is not task:
            with trio.move_on_after(PARKED_CHECK):
                await self.parked.park()
            if exited():
                return False
        self.reader = task
        return not exited()

    def finish(self) -> None:
        """The session is over: every parked task wakes and sees it."""
        self.reader = None
        self.parked.unpark_all()


def _lean_wait(libfuse: ctypes.CDLL, session: int, poll_ns: int,
               readers: _Readers) -> Callable[[], object]:
    """pyfuse3's ``_wait_fuse_readable`` for our worker tasks: True when a request is
    waiting (for this task to serve), False when the session ends. pyfuse3's session loop
    looks the function up in its module on every request, so replacing the module attribute
    is enough."""
    libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
    libfuse.fuse_session_exited.argtypes = [ctypes.c_void_p]
    exited = libfuse.fuse_session_exited
    fd = libfuse.fuse_session_fd(session)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    clock = time.perf_counter_ns
    served = 0

    def ready_soon() -> list[tuple[int, int]]:
        ready = poller.poll(0)
        if ready:
            return ready
        deadline = clock() + poll_ns
        while clock() < deadline:
            ready = poller.poll(0)
            if ready:
                return ready
        return ready

    def ended() -> bool:
        return bool(exited(session))

    def serve_next(ready: list[tuple[int, int]]) -> bool:
        """A request is waiting, or the device is gone (unmounted: POLLERR). Then the read
        that follows ends this task's loop, and the parked tasks must wake to see it."""
        if ready[0][1] & _GONE:
            readers.finish()
        return True

    async def wait_fuse_readable() -> bool:
        nonlocal served
        if readers.reader is not trio.lowlevel.current_task() and not await readers.take(
                ended):
            readers.finish()
            return False
        if ended():
            readers.finish()
            return False
        ready = ready_soon()
        if ready:
            served += 1
            if served % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()  # signals, the control socket
            return serve_next(ready)
        try:
            await trio.lowlevel.wait_readable(fd)
        except trio.ClosedResourceError:  # pyfuse3.terminate()
            readers.finish()
            return False
        if ended():
            readers.finish()
            return False
        return serve_next(poller.poll(0) or [(fd, 0)])

    return wait_fuse_readable


def _opendir_with_cache(original: Callable[[int, int, int], None]) -> Callable[..., None]:
    def opendir(req: int, ino: int, fi: int) -> None:
        bits = ctypes.c_uint32.from_address(fi + _FI_BITS_OFFSET)
        bits.value |= _FI_KEEP_CACHE | _FI_CACHE_READDIR
        original(req, ino, fi)  # pyfuse3 copies *fi, bits included, and replies with it

    return opendir


def _init_with_symlink_cache(original: Callable[[int, int], None], names: bool = False,
                             max_readahead: int = 0) -> Callable[..., None]:
    def init(userdata: int, conn: int) -> None:
        original(userdata, conn)
        fields = (ctypes.c_uint32 * (_CONN_WANT + 1)).from_address(conn)
        # libfuse answers with the kernel's offer (128 KiB); the kernel then keeps the
        # smaller of the answer and the mount's read_ahead_kb (unionfs.fuse.readahead).
        fields[_CONN_MAX_READAHEAD] = max(fields[_CONN_MAX_READAHEAD], max_readahead)
        if fields[_CONN_CAPABLE] & FUSE_CAP_CACHE_SYMLINKS:
            fields[_CONN_WANT] |= FUSE_CAP_CACHE_SYMLINKS
        # Plain READDIR when the caller does not stat the entries (libfuse's default once
        # both handlers exist; said here so that it does not depend on that default).
        auto = FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO
        if names and fields[_CONN_CAPABLE] & auto == auto:
            fields[_CONN_WANT] |= auto
        # pyfuse3 copies every write into a bytes object anyway: splicing requests through a
        # pipe only adds a syscall to each of them.
        fields[_CONN_WANT] &= ~FUSE_CAP_SPLICE_READ

    return init


def _request_slot(address: int) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Hands a request's coroutine to pyfuse3's request loop, as its own handlers do: its
    ``py_retval`` (a C global holding a reference) is awaited right after the callback."""
    cell = ctypes.c_void_p.from_address(address)
    none = id(None)

    def submit(coroutine: Coroutine[Any, Any, None]) -> None:
        if cell.value != none:
            coroutine.close()
            raise RuntimeError("pyfuse3's request slot is not free")
        _INCREF(coroutine)
        cell.value = id(coroutine)
        _DECREF(None)  # the reference the slot held

    return submit


def _submitting(request: str, answer: Callable[[int, int, int], Coroutine[Any, Any, T]],
                submit: Callable[[Coroutine[Any, Any, None]], None],
                reply: Callable[[int, T], int],
                reply_err: Callable[[int, int], int]) -> Callable[..., None]:
    """A libfuse callback ``(req, ino, a, b, fi)`` that hands ``answer(fh, a, b)`` to
    pyfuse3's request loop, which awaits it; its result is sent with ``reply(req, result)``
    and a FUSEError with ``reply_err`` (plain READDIR's and lseek's slots)."""
    def callback(req: int, ino: int, a: int, b: int, fi: int) -> None:
        try:
            fh = ctypes.c_uint64.from_address(fi + _FI_FH_OFFSET).value
            submit(_answered(request, answer(fh, a, b), req, reply, reply_err))
        except BaseException:  # a callback must never unwind into libfuse
            log.exception("%s failed unexpectedly; returning EIO", request)
            reply_err(req, errno.EIO)

    return callback


async def _answered(request: str, answer: Coroutine[Any, Any, T], req: int,
                    reply: Callable[[int, T], int],
                    reply_err: Callable[[int, int], int]) -> None:
    try:
        result = await answer
    except pyfuse3.FUSEError as exc:
        _replied(reply_err(req, exc.errno), request)
        return
    except Exception:
        log.exception("%s failed unexpectedly; returning EIO", request)
        _replied(reply_err(req, errno.EIO), request)
        return
    except BaseException:  # cancelled: the session ends
        reply_err(req, errno.EINTR)
        raise
    _replied(reply(req, result), request)


def _replied(code: int, request: str) -> None:
    if code == -errno.ENOENT:  # the kernel no longer waits (interrupted, unmounting)
        log.info("%s: the reply was not wanted any more", request)
    elif code:
        log.error("%s: fuse_reply_* failed with %s", request, os.strerror(-code))


def _getxattr_known(original: Callable[[int, int, int, int], None], absent: XattrAbsent,
                    reply_err: Callable[[int, int], int]) -> Callable[..., None]:
    """getxattr: ENODATA at once where ``absent`` knows it (ls asks two xattrs of every
    file it lists long), else pyfuse3's own handler."""
    def getxattr(req: int, ino: int, name: int, size: int) -> None:
        try:
            known = absent(ino, ctypes.string_at(name))
        except BaseException:  # a callback must never unwind into libfuse
            log.exception("getxattr check failed unexpectedly")
            known = False
        if known:
            reply_err(req, errno.ENODATA)
        else:
            original(req, ino, name, size)

    return getxattr


def _read_served(original: Callable[[int, int, int, int, int], None], server: ReadServer,
                 reply_err: Callable[[int, int], int]) -> Callable[..., None]:
    """read: served by ``server`` (which replies, now or from a reader thread), or by
    pyfuse3's own handler where the server gives the request back."""
    def read(req: int, ino: int, size: int, off: int, fi: int) -> None:
        try:
            fh = ctypes.c_uint64.from_address(fi + _FI_FH_OFFSET).value
            taken = server(req, fh, size, off)
        except BaseException:  # a callback must never unwind into libfuse
            log.exception("read failed unexpectedly; returning EIO")
            reply_err(req, errno.EIO)
            return
        if not taken:
            original(req, ino, size, off, fi)

    return read


def _write_served(original: Callable[[int, int, int, int, int], None], server: WriteServer,
                  reply_err: Callable[[int, int], int]) -> Callable[..., None]:
    """write_buf: served by ``server`` where the data is one buffer in memory (the only kind
    without splicing), else (or where the server gives it back) by pyfuse3's handler."""
    def write_buf(req: int, ino: int, bufv: int, off: int, fi: int) -> None:
        try:
            data = _in_memory(bufv)
            taken = data is not None and server(
                req, ctypes.c_uint64.from_address(fi + _FI_FH_OFFSET).value, data[0],
                data[1], off)
        except BaseException:  # a callback must never unwind into libfuse
            log.exception("write failed unexpectedly; returning EIO")
            reply_err(req, errno.EIO)
            return
        if not taken:
            original(req, ino, bufv, off, fi)

    return write_buf


def _in_memory(bufv: int) -> tuple[int, int] | None:
    """(address, size) of the data of a ``struct fuse_bufvec`` that is one buffer in memory;
    None otherwise. The vector: count, idx, off (size_t each), then ``struct fuse_buf``:
    size (size_t), flags (enum, padded), mem (pointer), fd, pos."""
    count, index, skip, size, flags, mem = (ctypes.c_size_t * 6).from_address(bufv)
    if count != 1 or index != 0 or flags & _FUSE_BUF_IS_FD or not mem or skip > size:
        return None
    return mem + skip, size - skip


def _fallocate_replying(handler: FallocateHandler,
                        reply_err: Callable[[int, int], int]) -> Callable[..., None]:
    def fallocate(req: int, ino: int, mode: int, offset: int, length: int, fi: int) -> None:
        code = 5  # EIO unless the handler says otherwise
        try:
            fh = ctypes.c_uint64.from_address(fi + _FI_FH_OFFSET).value
            code = handler(fh, mode, offset, length)
        except BaseException:  # a callback must never unwind into libfuse
            log.exception("fallocate failed unexpectedly; returning EIO")
        finally:
            reply_err(req, code)

    return fallocate


class _Table:
    """pyfuse3's ops table and the session's copy of it, checked before any write."""

    def __init__(self, table: int, size: int, session: int, session_ops: int,
                 retval: int = 0, lseek_problem: str | None = None) -> None:
        self.table = table
        self.size = size
        self.session = session
        self.session_ops = session_ops
        self.retval = retval  # pyfuse3's py_retval: the coroutine its request loop awaits
        self.lseek_problem = lseek_problem  # why the lseek slot cannot be filled (None: it can)

    @classmethod
    def locate(cls) -> _Table:
        symbols = _Symbols(pyfuse3.__file__)
        table = symbols.address("__pyx_v_7pyfuse3_fuse_ops")
        size = symbols.size("__pyx_v_7pyfuse3_fuse_ops")
        if size < _MIN_SLOTS * _PTR:
            raise Unsupported(f"pyfuse3's ops table is {size} bytes, expected a libfuse 3 one")
        slots = (ctypes.c_void_p * (size // _PTR)).from_address(table)
        expected = {
            SLOT_OPENDIR: symbols.address("__pyx_f_7pyfuse3_fuse_opendir"),
            SLOT_INIT: symbols.address("__pyx_f_7pyfuse3_fuse_init"),
            SLOT_READDIRPLUS: symbols.address("__pyx_f_7pyfuse3_fuse_readdirplus"),
            SLOT_GETXATTR: symbols.address("__pyx_f_7pyfuse3_fuse_getxattr"),
            SLOT_READ: symbols.address("__pyx_f_7pyfuse3_fuse_read"),
            SLOT_WRITE_BUF: symbols.address("__pyx_f_7pyfuse3_fuse_write_buf"),
            SLOT_READDIR: None, SLOT_FLOCK: None, SLOT_FALLOCATE: None,
        }
        for slot, address in expected.items():
            if slots[slot] != address:
                raise Unsupported(f"pyfuse3's ops table has an unexpected layout (slot {slot})")
        session = ctypes.c_void_p.from_address(symbols.address("__pyx_v_7pyfuse3_session"))
        if not session.value:
            raise Unsupported("no FUSE session yet (call after pyfuse3.init)")
        copy = _find_copy(session.value, ctypes.string_at(table, size))
        retval = symbols.address("__pyx_v_7pyfuse3_py_retval")
        if symbols.size("__pyx_v_7pyfuse3_py_retval") != _PTR:
            raise Unsupported("pyfuse3's py_retval is not one object pointer")
        return cls(table, size, session.value, copy, retval, _lseek_problem(slots, size))

    def session_slot(self, slot: int) -> int:
        value = ctypes.c_void_p.from_address(self.session_ops + slot * _PTR).value
        assert value, f"empty session slot {slot}"
        return value

    def set_session_slot(self, slot: int, address: int) -> None:
        ctypes.c_void_p.from_address(self.session_ops + slot * _PTR).value = address


def _lseek_problem(slots: ctypes.Array[ctypes.c_void_p], size: int) -> str | None:
    """Why ``lseek`` cannot go into this table (None: pyfuse3's table has the libfuse 3.8+
    layout up to lseek, with neither copy_file_range nor lseek of its own)."""
    if size < (SLOT_LSEEK + 1) * _PTR:
        return f"pyfuse3's ops table ({size} bytes) ends before the lseek slot"
    if slots[SLOT_COPY_FILE_RANGE] is not None or slots[SLOT_LSEEK] is not None:
        return "pyfuse3's ops table already fills copy_file_range or lseek"
    return None


def _find_copy(session: int, table_bytes: bytes) -> int:
    """The address of the ops table's copy inside libfuse's session struct."""
    head = ctypes.string_at(session, _SESSION_SCAN + len(table_bytes))
    found = [offset for offset in range(0, _SESSION_SCAN, _PTR)
             if head[offset:offset + len(table_bytes)] == table_bytes]
    if len(found) != 1:
        raise Unsupported("cannot find libfuse's copy of the ops table in the session")
    return session + found[0]


class _Symbols:
    """Addresses of (local) symbols of a loaded shared object, from its ELF symbol table."""

    def __init__(self, path: str) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        self.path = os.path.realpath(path)
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                symtab = elf.get_section_by_name(".symtab")
                if not isinstance(symtab, SymbolTableSection):
                    raise Unsupported(f"{self.path} has no symbol table (stripped build)")
                self._symbols = {s.name: (s["st_value"], s["st_size"])
                                 for s in symtab.iter_symbols() if s.name.startswith("__pyx_")}
                first_load = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
                if first_load["p_vaddr"] != 0:
                    raise Unsupported(f"{self.path} is not loaded at offset 0")
        except (OSError, ELFError) as exc:
            raise Unsupported(f"cannot read {self.path}: {exc}") from None
        self.base = _load_base(self.path)

    def address(self, name: str) -> int:
        return self.base + self._symbol(name)[0]

    def size(self, name: str) -> int:
        return self._symbol(name)[1]

    def _symbol(self, name: str) -> tuple[int, int]:
        try:
            return self._symbols[name]
        except KeyError:
            raise Unsupported(f"symbol {name} not found in {self.path}") from None


def _load_base(path: str) -> int:
    """Where ``path`` is mapped in this process (its mapping of file offset 0)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == path and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    raise Unsupported(f"{path} is not mapped in this process")
