"""Where a cold read waits for the disk: on the trio thread, or in a worker thread.

A read the page cache cannot answer (the first attempt with RWF_NOWAIT said EAGAIN, and
started the disk I/O as it did) has to wait for the disk somewhere. A worker thread keeps
the trio thread serving other requests meanwhile, but its hop (wake a thread, hand the
result back, wake the trio thread) was measured at 100-300 us on a loaded 2-core VM: more
than the 4 KiB read itself takes from a fast disk (about 60 us there), and a random reader
(fio, a database) waits for both, one read after another (4 KiB random reads: 5.3 s in
threads against 3.2 s inline, native 1.5 s, the same run).

So a small read waits on the trio thread while the disk answers small reads quickly (their
recent average is under :data:`INLINE_LIMIT_NS`): the other requests then wait no longer
than that read. Large reads (a sequential reader's 1 MiB requests, whose read-ahead keeps
several in flight) and every read while the disk is slow (a spinning disk, a busy network
volume) go to a worker thread, as before. Reads in threads are timed too, so a disk that
becomes fast again is seen.
"""

from __future__ import annotations

import errno
import os

SMALL_READ = 128 << 10  # the largest read that may wait on the trio thread
INLINE_LIMIT_NS = 1_000_000  # small reads wait inline while they average less than 1 ms
WEIGHT = 8  # each small read moves the average by 1/WEIGHT of its distance
# One read counts at most OUTLIER limits: a stray long wait (a flush elsewhere on the disk)
# does not send the next reads to threads; three in a row, or a slow disk, do.
OUTLIER = 4


class ReadWait:
    """The recent cost of small cold reads, and what it says about the next one."""

    def __init__(self, small: int = SMALL_READ, limit_ns: int = INLINE_LIMIT_NS) -> None:
        self.small = small
        self.limit_ns = limit_ns
        self.most_ns = OUTLIER * limit_ns
        self.average_ns = 0.0  # nothing measured yet: the first small read is tried inline

    def inline(self, size: int) -> bool:
        """Whether a cold read of ``size`` bytes should wait on the calling (trio) thread."""
        return size <= self.small and self.average_ns < self.limit_ns

    def took(self, size: int, ns: int) -> None:
        """A cold read of ``size`` bytes waited ``ns`` nanoseconds for the disk (inline or
        in a worker thread, the hop not counted). Large reads say nothing of small ones."""
        if size <= self.small:
            self.average_ns += (min(ns, self.most_ns) - self.average_ns) / WEIGHT


def read_cached(fd: int, buffer: memoryview | bytearray, offset: int) -> int | None:
    """Read into ``buffer`` what the page cache has of that many bytes at ``offset``, with
    RWF_NOWAIT: the bytes got (0: nothing cached). The call also starts the disk I/O of the
    rest, with the caller's offsets and sizes, so the file's read-ahead sees the caller's
    pattern. None: the file cannot tell (read it plainly)."""
    try:
        return os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        return None


def read_complete(fd: int, got: int, size: int, offset: int) -> bool:
    """Whether ``got`` bytes of a read of ``size`` at ``offset`` are the whole answer: all
    of it, or all there is before the file ends."""
    return got == size or (got > 0 and offset + got >= os.fstat(fd).st_size)
