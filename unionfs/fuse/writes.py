"""WRITE requests answered from libfuse's dispatch, written by writer threads where they wait.

pyfuse3's WRITE copies each request's data into a bytes object on the trio thread and runs a
coroutine for it; a large write of a streaming file then pays a trio thread hop both ways,
and its worker thread waits for the GIL after each system call while the trio thread copies
the next request. The kernel sends a writer's data as 1 MiB WRITEs, a dozen at once, so a
probe's LOOKUP queues behind that work (issue 11: p99 of a stat elsewhere during a 1 GiB
write + fsync). Here (through the ``write_buf`` slot of :mod:`unionfs.fuse.lowlevel`):

* the union's part stays on the trio thread: :data:`RouteOf` says which fd a handle writes
  to and whether the write may wait on the trio thread (a small write of a file that is
  not streaming) or must go to a writer thread (it then holds the union's gate, so that a
  live commit waits for it, and counts as the node's work in threads);
* the data is copied once from libfuse's request buffer (which the next request reuses)
  into a buffer of the server's own, with ``memmove`` (the GIL released);
* an inline write is written and replied at once; a threaded one goes to a queue served by
  :data:`WRITERS` plain threads, each of which writes and replies (``fuse_reply_write``)
  itself, then hands the route's ``done`` back (the union's side, run on the trio thread).

A writer thread touches no union state: the fd (the kernel sends RELEASE only once every
WRITE of the handle is answered), :data:`WriteAt` (system calls only) and libfuse's reply
functions, which are thread-safe. :meth:`WriteServer.close` lets the queued writes finish
and stops the threads before the session is destroyed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from unionfs.fuse.reads import Buffer, stop_threads

log = logging.getLogger(__name__)

WRITERS = 4  # writer threads: a dozen WRITEs in flight, two cores
MAX_WRITE = 1 << 20  # the largest WRITE served here (max_pages 256); larger go to pyfuse3
SPARE_BUFFERS = 16  # buffers kept for reuse (about the kernel's background WRITEs)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a WRITE goes: ``fd``; ``done`` None: written on the trio thread; else it is
    written in a writer thread, which calls ``done()`` (thread-safe) once it is answered."""

    fd: int
    done: Callable[[], object] | None = None


RouteOf = Callable[[int, int], Route | None]
"""(fh, size) -> its Route, or None: pyfuse3's handler serves it (watched requests, an
unknown handle, a live commit waiting). Runs on the trio thread; may raise OSError."""

WriteAt = Callable[[int, memoryview, int], int]
"""(fd, data, offset) -> bytes written; system calls only, so safe in any thread."""

ReplyWrite = Callable[[int, int], int]  # fuse_reply_write(req, count)
ReplyErr = Callable[[int, int], int]  # fuse_reply_err(req, errno)
Hold = Callable[[], None]  # a test hold point in a writer thread, before its write


@dataclass
class WriteSource:
    """What the union gives the WRITE slot."""

    route: RouteOf
    write_at: WriteAt
    hold: Hold | None = None


@dataclass(slots=True)
class _Job:
    req: int
    route: Route
    buffer: Buffer
    size: int
    offset: int


class WriteServer:
    """Serves WRITE requests outside pyfuse3's request loop (see the module docstring)."""

    def __init__(self, source: WriteSource, reply_write: ReplyWrite, reply_err: ReplyErr,
                 writers: int = WRITERS) -> None:
        self.source = source
        self.reply_write = reply_write
        self.reply_err = reply_err
        self.inline = Buffer(MAX_WRITE)  # the trio thread's own
        self.spare: queue.SimpleQueue[Buffer] = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.abandoned = False  # set at close() when a writer did not finish in time
        self.threads = [threading.Thread(target=self._writer, name=f"unionfs-write-{i}",
                                         daemon=True) for i in range(writers)]

    def start(self) -> None:
        """Start the writer threads (once the slot is installed)."""
        for thread in self.threads:
            thread.start()

    def __call__(self, req: int, fh: int, address: int, size: int, offset: int) -> bool:
        """Serve one WRITE of ``size`` bytes at ``address`` (on the trio thread, inside
        libfuse's dispatch). False: not taken, pyfuse3's handler must serve it. True:
        answered, or a writer thread will answer."""
        if size > MAX_WRITE:
            return False
        try:
            route = self.source.route(fh, size)
            if route is None:
                return False
            if route.done is None:
                self._write_inline(req, route.fd, address, size, offset)
            else:
                self._queue(req, route, address, size, offset)
        except OSError as exc:
            self._reply_error(req, exc, (fh, size, offset))
        except Exception:  # never unwinds into libfuse; the daemon goes on
            log.exception("write(%d, %d, %d) failed unexpectedly; returning EIO", fh, size,
                          offset)
            self.reply_err(req, errno.EIO)
        return True

    def _write_inline(self, req: int, fd: int, address: int, size: int, offset: int) -> None:
        buffer = self.inline
        ctypes.memmove(buffer.address, address, size)
        self._reply(req, self.source.write_at(fd, buffer.view[:size], offset))

    def _queue(self, req: int, route: Route, address: int, size: int, offset: int) -> None:
        """Hand a copy of the data to a writer thread. If that fails, the route is handed
        back at once: it holds the gate, and a live commit would wait for it forever."""
        try:
            try:
                buffer = self.spare.get_nowait()
            except queue.Empty:
                buffer = Buffer(MAX_WRITE)
            ctypes.memmove(buffer.address, address, size)
            self.jobs.put(_Job(req, route, buffer, size, offset))
        except BaseException:
            assert route.done is not None
            route.done()
            raise

    def _reply(self, req: int, written: int) -> None:
        code = self.reply_write(req, written)
        if code and code != -errno.ENOENT:  # ENOENT: the kernel no longer waits for it
            log.error("write: fuse_reply_write failed with %s", os.strerror(-code))

    def _reply_error(self, req: int, exc: OSError, args: tuple[int, int, int]) -> None:
        log.debug("write%r: %s", args, exc)
        self.reply_err(req, exc.errno or errno.EIO)

    def _writer(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                self._write_job(job)
            finally:
                if self.spare.qsize() < SPARE_BUFFERS:
                    self.spare.put(job.buffer)
                done = job.route.done
                assert done is not None
                try:
                    done()
                except Exception:  # the trio loop has ended (shutting down)
                    log.debug("write: the route's done callback failed", exc_info=True)

    def _write_job(self, job: _Job) -> None:
        try:
            if self.source.hold is not None:
                self.source.hold()
            written = self.source.write_at(job.route.fd, job.buffer.view[:job.size],
                                           job.offset)
            if not self.abandoned:  # shut down without it: the session may be gone
                self._reply(job.req, written)
        except OSError as exc:
            self._reply_error(job.req, exc, (job.route.fd, job.size, job.offset))
        except Exception:  # a writer thread never dies; the request gets EIO
            log.exception("write to fd %d failed unexpectedly; returning EIO", job.route.fd)
            self.reply_err(job.req, errno.EIO)

    def close(self) -> None:
        """Stop the writer threads once the queued writes are answered (before the session
        is destroyed: a writer replies through it)."""
        if not stop_threads(self.threads, lambda: self.jobs.put(None), "write"):
            self.abandoned = True
