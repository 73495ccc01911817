"""What the engine counts for ``unionfs watch``: plain integers, always on (each is bumped
only where the work it counts is far slower than the bump).

The FUSE adapter reads these (the engine never imports the adapter). Worker threads are
reported by :attr:`EngineCounters.threads`, which :class:`unionfs.engine.slow.SlowWork` sets to
a function that reads its limiter: how many threads there are, how many are busy and how much
work waits for one. It is only called on the trio thread, at a ``unionfs watch`` sample.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from os import stat_result
from typing import NamedTuple


class ThreadGauge(NamedTuple):
    workers: int  # worker threads for slow work
    busy: int  # of them running slow work now
    queued: int  # slow work waiting for a thread


def no_threads() -> ThreadGauge:
    return ThreadGauge(0, 0, 0)


@dataclass(slots=True)
class EngineCounters:
    copy_ups: int = 0  # files, directories and symlinks copied up
    copy_up_bytes: int = 0  # data bytes copied up (regular files)
    views_built: int = 0  # merged directory views read from the layers (scandir per layer)
    views_read_ahead: int = 0  # subdirectories of listed directories read ahead (engine/ahead)
    views_from_read_ahead: int = 0  # lookups that found their directory read ahead
    threads: Callable[[], ThreadGauge] = no_threads

    def copied_up(self, st: stat_result) -> None:
        self.copy_ups += 1
        if stat.S_ISREG(st.st_mode):
            self.copy_up_bytes += st.st_size
