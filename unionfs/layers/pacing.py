"""Writeback pacing: a big file written in one go reaches the disk while it is written.

Without it, a copy-up of a 1 GiB file leaves 1 GiB of dirty pages that its fsync then
writes in one burst: the disk's queue fills, and every other read of the mount (a cold
``lstat`` of an unrelated file) waits behind it (tens of milliseconds). A
:class:`WritebackPacer` starts the writeback of each ``window`` of data as soon as it is
written (``SYNC_FILE_RANGE_WRITE``) and waits for the window before it (:data:`LAG`), so
that at most two windows are on their way to the disk at any time, the writer is held back
to the disk's pace, and the final fsync has little left to do. The writer waits for the
disk a little at a time instead of all at the end; the total is no longer (the copy and
the writeback overlap).

sync_file_range neither writes metadata nor flushes the disk's cache: durability is still
the fsync's job.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading

from unionfs.layers.syscalls import (
    SYNC_FILE_RANGE_WAIT_AFTER,
    SYNC_FILE_RANGE_WAIT_BEFORE,
    SYNC_FILE_RANGE_WRITE,
    sync_file_range,
)

log = logging.getLogger(__name__)

# Measured on the benchmark VM (virtio disk), 2026-12-02, frozen variants in the same runs
# (benchmarks/README.md, "the pacing window, again"), medians: a 1 GiB copy-up + fsync took
# 1.96 s with 1 MiB windows, about 1.2 s with 4 MiB (the kernel's overlayfs 1.6 s) and 1.04 s
# with 16 MiB; the p99 of a cold probe elsewhere during it was 20-18-25 ms, and during a
# 1 GiB write + fsync 74-40-48 ms. 4 MiB is the fastest without a worse p99.
WINDOW = 4 << 20  # bytes written per writeback started
LAG = 1  # windows on their way to the disk besides the newest one
_WAIT = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ESPIPE)


class WritebackPacer:
    """Paces the writeback of what is written to ``fd``.

    Call :meth:`wrote` after each piece written: once a ``window`` of bytes was written
    since the last writeback started, the writeback of the range they span starts and the
    range started the time before is waited for. Pieces may come in any order and from
    several threads (the kernel's writeback of a FUSE file sends them in parallel); a range
    may span holes or bytes written before (nothing or little to write there)."""

    def __init__(self, fd: int, window: int | None = None) -> None:
        self.fd = fd
        self.window = window or WINDOW
        self.active = True
        self._lock = threading.Lock()
        self._pending = 0  # bytes written since the last writeback started
        self._low = self._high = -1  # the range they span (-1: none yet)
        self._started: collections.deque[tuple[int, int]] = collections.deque()  # in flight

    def wrote(self, offset: int, length: int) -> None:
        """``length`` bytes were written at ``offset``: start or wait for writeback as due."""
        if not self.active or length <= 0:
            return
        with self._lock:
            end = offset + length
            self._low = offset if self._low < 0 else min(self._low, offset)
            self._high = max(self._high, end)
            self._pending += length
            if self._pending < self.window:
                return
            start = (self._low, self._high)
            self._started.append(start)
            previous = self._started.popleft() if len(self._started) > LAG else None
            self._pending, self._low, self._high = 0, -1, -1
        self._call(start[0], start[1] - start[0], SYNC_FILE_RANGE_WRITE)
        if previous is not None:
            self._call(previous[0], previous[1] - previous[0], _WAIT)

    def _call(self, offset: int, length: int, flags: int) -> None:
        if not self.active:
            return
        try:
            sync_file_range(self.fd, offset, length, flags)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            log.debug("no writeback pacing for fd %d: %s", self.fd, exc)
            self.active = False  # the file cannot be paced: its fsync does all of it

