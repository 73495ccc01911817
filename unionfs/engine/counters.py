"""What the engine counts for ``unionfs watch``: plain integers, always on (each is bumped only
where the work it counts is far slower than the bump).

The FUSE adapter reads these (the engine never imports the adapter). The thread gauges are
for the engine's worker threads: whoever runs slow work in a thread calls
:meth:`EngineCounters.queued_work` when it asks for a thread, :meth:`started_work` when the
thread takes it and :meth:`finished_work` when done; ``workers`` is how many threads there are.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from os import stat_result


@dataclass(slots=True)
class EngineCounters:
    copy_ups: int = 0  # files, directories and symlinks copied up
    copy_up_bytes: int = 0  # data bytes copied up (regular files)
    views_built: int = 0  # merged directory views read from the layers (scandir per layer)
    workers: int = 0  # worker threads for slow work (0: everything on the request thread)
    busy: int = 0  # worker threads running slow work now
    queued: int = 0  # slow work waiting for a worker thread

    def copied_up(self, st: stat_result) -> None:
        self.copy_ups += 1
        if stat.S_ISREG(st.st_mode):
            self.copy_up_bytes += st.st_size

    def queued_work(self) -> None:
        self.queued += 1

    def started_work(self) -> None:
        self.queued -= 1
        self.busy += 1

    def finished_work(self) -> None:
        self.busy -= 1
