"""``stats``: one row per running container, CPU % between two samples, MEM % of the limit
(or of the host's memory), streaming by default as docker does."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from unionfs.errors import UserError
from unionfs.runtime import cgroups, lifecycle, state

INTERVAL = 1.0
HEADER = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS / LIMIT")


def host_memory() -> int:
    """Total memory of the machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _sample(containers: list[state.Container]) -> dict[str, cgroups.Stats]:
    out = {}
    for c in containers:
        try:
            out[c.id] = lifecycle.stats(c)
        except (OSError, UserError):
            continue  # it stopped meanwhile, or has no cgroup
    return out


def rows(containers: list[state.Container], size: Callable[[int], str],
         interval: float = INTERVAL) -> list[tuple[str, ...]]:
    """Two samples ``interval`` apart, as table rows."""
    first, t0 = _sample(containers), time.monotonic()
    time.sleep(interval)  # CPU % is usage over an interval: the interval is the measurement
    second, elapsed = _sample(containers), time.monotonic() - t0
    table: list[tuple[str, ...]] = []
    for c in containers:
        if c.id not in second:
            continue
        s = second[c.id]
        before = first.get(c.id, s)
        cpu = 100.0 * (s.cpu_usec - before.cpu_usec) / 1e6 / elapsed
        limit = s.memory_limit if s.memory_limit else host_memory()
        pids_limit = str(s.pids_limit) if s.pids_limit is not None else "unlimited"
        table.append((c.id[:12], c.name, f"{cpu:.2f}%", f"{size(s.memory_bytes)} / "
                      f"{size(limit)}", f"{100.0 * s.memory_bytes / limit:.2f}%",
                      f"{s.pids} / {pids_limit}"))
    return table


def show(pick: Callable[[], list[state.Container]], print_table: Callable[..., None],
         size: Callable[[int], str], *, stream: bool) -> None:
    """Print the table once, or (``stream``) again every interval until interrupted."""
    while True:
        table = rows(pick(), size)
        if stream and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")
        print_table(HEADER, table)
        sys.stdout.flush()
        if not stream:
            return
