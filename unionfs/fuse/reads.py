"""READ requests answered from libfuse's dispatch, replied by reader threads where they wait.

pyfuse3's READ runs a coroutine per request on the trio thread and replies with the bytes it
returns: every byte of every read is copied by Python code holding the GIL, and a read that
misses the page cache pays a trio thread hop (100-300 us on this VM) both ways. So two
processes reading cold files cannot overlap, and a sequential reader spends its time in
hand-offs. Here (through the READ slot of :mod:`unionfs.fuse.lowlevel`):

* the trio thread tries the read with RWF_NOWAIT into one reused buffer, in request order
  (so the layer file's read-ahead sees the caller's pattern and starts the disk I/O), and
  replies at once when the page cache had it all (or the file ended), from that buffer;
* a miss that :class:`ReadWait` says is cheap (a small read from a fast disk) waits on the
  trio thread, as in :meth:`SlowWork.read`;
* every other miss goes to a queue served by :data:`READERS` plain threads: each reads into
  its own buffer and replies to the kernel itself (``fuse_reply_buf``), with the GIL released
  for both the read and the reply. The trio thread only puts the request on the queue.

The reader threads touch no union state: an open file's fd (which the kernel keeps open
until every READ of it is answered: RELEASE comes after) and libfuse's reply functions,
which are thread-safe. Their timings reach :class:`ReadWait` through a queue that the trio
thread empties at the next READ. :meth:`ReadServer.close` stops them before the session is
destroyed.

A READ goes to pyfuse3's own handler when ``fd_of`` says so (None): while something watches
requests (trace, fault rules, ``unionfs watch``), or for a handle this server does not know
(pyfuse3's handler then answers with the right errno).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from unionfs.engine.readwait import ReadWait, read_cached, read_complete
from unionfs.layers.syscalls import page_aligned

log = logging.getLogger(__name__)

READERS = 4  # reader threads: two cores, and a disk that serves several reads at once
MAX_READ = 1 << 20  # the largest READ served here (max_pages 256); larger go to pyfuse3
JOIN_SECONDS = 10.0  # how long close() waits for a reader stuck in a read

ReplyBuf = Callable[[int, int, int], int]  # fuse_reply_buf(req, address, size)
ReplyErr = Callable[[int, int], int]  # fuse_reply_err(req, errno)
FdOf = Callable[[int], int | None]  # fh -> the fd to read, None: pyfuse3 serves it
Hold = Callable[[], None]  # a test hold point in a reader thread, before its read

_STOP = None


@dataclass
class ReadSource:
    """What the union gives the READ slot: the fd of a handle (None: pyfuse3 serves the
    READ), where cold reads wait, and a test hold point for the reader threads."""

    fd_of: FdOf
    wait: ReadWait
    hold: Hold | None = None


class Buffer:
    """A fixed, page-aligned buffer and its address (see ``page_aligned``: the kernel's
    copy into a buffer just past a page boundary is 5x slower on the build VM)."""

    def __init__(self, size: int = MAX_READ) -> None:
        self.view = page_aligned(size)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.view))


class ReadServer:
    """Serves READ requests outside pyfuse3's request loop (see the module docstring)."""

    def __init__(self, fd_of: FdOf, reply_buf: ReplyBuf, reply_err: ReplyErr,
                 wait: ReadWait, hold: Hold | None = None, readers: int = READERS) -> None:
        self.fd_of = fd_of
        self.reply_buf = reply_buf
        self.reply_err = reply_err
        self.wait = wait
        self.hold = hold
        self.buffer = Buffer()
        self.jobs: queue.SimpleQueue[tuple[int, int, int, int] | None] = queue.SimpleQueue()
        self.timings: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self.abandoned = False  # set at close() when a reader did not finish in time
        self.threads = [threading.Thread(target=self._reader, name=f"unionfs-read-{i}",
                                         daemon=True) for i in range(readers)]

    def start(self) -> None:
        """Start the reader threads (once the READ slot is installed)."""
        for thread in self.threads:
            thread.start()

    def __call__(self, req: int, fh: int, size: int, offset: int) -> bool:
        """Serve one READ (on the trio thread, inside libfuse's dispatch). False: not taken,
        pyfuse3's handler must serve it. True: answered, or a reader thread will answer."""
        self._take_timings()
        if size > MAX_READ:
            return False
        try:
            fd = self.fd_of(fh)
            if fd is None:
                return False
            self._serve(req, fd, size, offset)
        except OSError as exc:
            self._reply_error(req, exc, (fh, size, offset))
        except Exception:  # never unwinds into libfuse; the daemon goes on
            log.exception("read(%d, %d, %d) failed unexpectedly; returning EIO", fh, size,
                          offset)
            self.reply_err(req, errno.EIO)
        return True

    def _serve(self, req: int, fd: int, size: int, offset: int) -> None:
        view = self.buffer.view[:size]
        got = read_cached(fd, view, offset)
        if got is None:
            self._queue(req, fd, size, offset)  # the file cannot tell what is cached
            return
        if read_complete(fd, got, size, offset):
            self._reply(req, self.buffer.address, got)
            return
        if self.wait.inline(size):
            start = time.perf_counter_ns()
            got = os.preadv(fd, [view], offset)
            self.wait.took(size, time.perf_counter_ns() - start)
            self._reply(req, self.buffer.address, got)
            return
        self._queue(req, fd, size, offset)

    def _queue(self, req: int, fd: int, size: int, offset: int) -> None:
        self.jobs.put((req, fd, size, offset))

    def _take_timings(self) -> None:
        """The readers' timings, into :class:`ReadWait` (which only the trio thread uses)."""
        timings = self.timings
        while not timings.empty():
            size, ns = timings.get_nowait()
            self.wait.took(size, ns)

    def _reply(self, req: int, address: int, size: int) -> None:
        code = self.reply_buf(req, address, size)
        if code and code != -errno.ENOENT:  # ENOENT: the kernel no longer waits for it
            log.error("read: fuse_reply_buf failed with %s", os.strerror(-code))

    def _reply_error(self, req: int, exc: OSError, args: tuple[int, int, int]) -> None:
        log.debug("read%r: %s", args, exc)
        self.reply_err(req, exc.errno or errno.EIO)

    def _reader(self) -> None:
        buffer = Buffer()
        while (job := self.jobs.get()) is not _STOP:
            req, fd, size, offset = job
            try:
                if self.hold is not None:
                    self.hold()
                start = time.perf_counter_ns()
                got = os.preadv(fd, [buffer.view[:size]], offset)
                if self.abandoned:  # shut down without it: the session may be gone
                    continue
                self.timings.put((size, time.perf_counter_ns() - start))
                self._reply(req, buffer.address, got)
            except OSError as exc:
                self._reply_error(req, exc, (fd, size, offset))
            except Exception:  # a reader thread never dies; the request gets EIO
                log.exception("read of fd %d failed unexpectedly; returning EIO", fd)
                self.reply_err(req, errno.EIO)

    def close(self) -> None:
        """Stop the reader threads once the queued reads are answered (before the session
        is destroyed: a reader replies through it)."""
        if not stop_threads(self.threads, lambda: self.jobs.put(_STOP), "read"):
            self.abandoned = True


def stop_threads(threads: list[threading.Thread], put_stop: Callable[[], None],
                 what: str) -> bool:
    """Queue one stop per started thread (after the work already queued) and join them
    within :data:`JOIN_SECONDS` in all. False when one is still in its ``what`` (a hung
    disk): it must then not reply once the session is destroyed (the caller's
    ``abandoned``); the kernel's side ends with the unmount anyway."""
    started = [thread for thread in threads if thread.ident is not None]
    for _ in started:
        put_stop()
    deadline = time.monotonic() + JOIN_SECONDS
    stopped = True
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stopped = False
            log.warning("%s is still in a %s at shutdown", thread.name, what)
    return stopped
