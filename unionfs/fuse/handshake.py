"""The INIT handshake, run by us so that the kernel learns it may send parallel lookups.

libfuse before 3.17.1 wants ``FUSE_CAP_PARALLEL_DIROPS`` by default but never puts
``FUSE_PARALLEL_DIROPS`` in its INIT reply (libfuse commit c9905341, "Pass
FUSE_PARALLEL_DIROPS to kernel"). Without that flag the kernel's ``fuse_lookup`` and
``fuse_readdir`` hold a mutex of the directory's FUSE inode (``fuse_lock_inode``) for as long
as the server takes to answer: while one lookup in a directory waits (a fault-rule delay, a
view built from a cold disk) every other lookup and listing of that directory waits too, and
so does every path walk through it.

:func:`grant_parallel_dirops` runs before the request loop, after ``pyfuse3.init`` (the
kernel has queued INIT by then): it reads the INIT request, lets libfuse process it as usual
(pyfuse3's and our init callbacks run, libfuse's session state is set up) with its reply
caught in a pipe put at the session fd's number for the moment, adds the flag when the
kernel offered it, and writes the reply to the kernel. Our handlers keep the merged views
consistent under parallel lookups: every step that changes state runs on the trio thread
between two checkpoints, and the kernel still serialises changes of a directory's entries
against lookups in it (the directory's ``i_rwsem``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import struct

from unionfs.errors import OperationFailed

log = logging.getLogger(__name__)

FUSE_INIT = 26
FUSE_PARALLEL_DIROPS = 1 << 18
_IN_HEADER = 40  # struct fuse_in_header
_IN_FLAGS = _IN_HEADER + 12  # fuse_init_in: major, minor, max_readahead, flags
_OUT_HEADER = 16  # struct fuse_out_header: len, error, unique
_OUT_FLAGS = _OUT_HEADER + 12  # fuse_init_out: major, minor, max_readahead, flags
_READ_SIZE = (1 << 20) + (1 << 13)  # libfuse's own buffer: 256 pages and a header
_WAIT_SECONDS = 5.0


class HandshakeFailed(OperationFailed):
    """INIT was read but could not be answered: the mount cannot serve (the server ends,
    and unmounts)."""


class FuseBuf(ctypes.Structure):
    """libfuse's ``struct fuse_buf`` (a request in memory)."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


def grant_parallel_dirops(library: str, session: int) -> bool:
    """Serve the session's INIT, with ``FUSE_PARALLEL_DIROPS`` granted when the kernel
    offers it. True when granted; False (after logging why) when the kernel did not offer
    it or no INIT was waiting, and then the request loop serves whatever comes as usual.

    Once a request has been read it is always given to libfuse (nothing is lost), and a
    failure from there on raises :class:`HandshakeFailed`."""
    libfuse = ctypes.PyDLL(library)  # the callbacks run Python code: keep the GIL
    libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
    libfuse.fuse_session_process_buf.argtypes = [ctypes.c_void_p, ctypes.POINTER(FuseBuf)]
    libfuse.fuse_session_process_buf.restype = None
    fd = libfuse.fuse_session_fd(session)
    try:
        readable, _, _ = select.select([fd], [], [], _WAIT_SECONDS)
        request = os.read(fd, _READ_SIZE) if readable else b""
    except OSError as exc:
        log.warning("cannot read INIT (%s): lookups of one directory stay serialised", exc)
        return False
    if not request:
        log.warning("no INIT from the kernel yet: lookups of one directory stay serialised")
        return False
    memory = ctypes.create_string_buffer(request, len(request))
    buf = FuseBuf(len(request), 0, ctypes.cast(memory, ctypes.c_void_p), -1, 0)
    opcode, = struct.unpack_from("<I", request, 4) if len(request) >= 8 else (0,)
    offered = len(request) >= _IN_FLAGS + 4 and opcode == FUSE_INIT and bool(
        struct.unpack_from("<I", request, _IN_FLAGS)[0] & FUSE_PARALLEL_DIROPS)
    if not offered:
        libfuse.fuse_session_process_buf(session, ctypes.byref(buf))
        log.info("the kernel does not offer parallel directory operations")
        return False
    try:
        reply = _with_parallel_dirops(_reply_caught(libfuse, session, fd, buf))
        os.write(fd, reply)
    except OSError as exc:
        raise HandshakeFailed(f"cannot answer the kernel's INIT: {exc}") from None
    return _has_flag(reply)


def _reply_caught(libfuse: ctypes.PyDLL, session: int, fd: int, buf: FuseBuf) -> bytes:
    """libfuse's reply to ``buf``, written into a pipe that holds the number ``fd`` for
    the call (libfuse writes its replies to the session's fd number)."""
    saved = os.dup(fd)
    read_end, write_end = os.pipe()
    try:
        os.dup2(write_end, fd)
        try:
            libfuse.fuse_session_process_buf(session, ctypes.byref(buf))
        finally:
            os.dup2(saved, fd)
        os.set_blocking(read_end, False)
        try:
            return os.read(read_end, 1 << 16)
        except BlockingIOError:
            raise HandshakeFailed("libfuse wrote no reply to INIT") from None
    finally:
        for extra in (saved, read_end, write_end):
            os.close(extra)


def _has_flag(reply: bytes) -> bool:
    return len(reply) >= _OUT_FLAGS + 4 and bool(
        struct.unpack_from("<I", reply, _OUT_FLAGS)[0] & FUSE_PARALLEL_DIROPS)


def _with_parallel_dirops(reply: bytes) -> bytes:
    """The INIT reply with the flag set (an error reply is passed on unchanged)."""
    if len(reply) < _OUT_FLAGS + 4 or struct.unpack_from("<i", reply, 4)[0] != 0:
        return reply
    flags, = struct.unpack_from("<I", reply, _OUT_FLAGS)
    patched = bytearray(reply)
    struct.pack_into("<I", patched, _OUT_FLAGS, flags | FUSE_PARALLEL_DIROPS)
    return bytes(patched)
