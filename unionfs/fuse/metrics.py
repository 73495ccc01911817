"""Request accounting for ``unionfs watch``: counts, latency histograms, bytes, cache hits, and
the slowest recent requests.

Everything a request costs here is O(1) and makes no objects of its own: a latency goes into
one of :data:`BUCKETS` fixed log-scale buckets (four per power of two of nanoseconds, so a
percentile is known within an eighth of its value), counters are plain integers. Only a
request slower than the slowest few of the current window is remembered with its path.
The snapshot (:meth:`Metrics.snapshot`) is plain JSON data.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

from unionfs.engine.counters import EngineCounters

BUCKETS = 172  # bucket_of(2**44 - 1) + 1: up to ~4.9 hours
PERCENTILES = (50, 90, 99)
SLOWEST_KEPT = 10
SLOW_WINDOW_NS = 30 * 10**9  # "recent": this window and the one before


def bucket_of(ns: int) -> int:
    """The histogram bucket of a duration: exact below 8 ns, then 4 per power of two."""
    if ns < 8:
        return max(ns, 0)
    bits = ns.bit_length()
    index = ((bits - 2) << 2) | ((ns >> (bits - 3)) & 3)
    return index if index < BUCKETS else BUCKETS - 1


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) nanoseconds of a bucket."""
    if index < 8:
        return index, index + 1
    shift = (index >> 2) - 1
    mantissa = 4 | (index & 3)
    return mantissa << shift, (mantissa + 1) << shift


def percentile(buckets: list[int], total: int, pct: float) -> float:
    """The ``pct`` percentile (ns, the middle of its bucket) of a histogram of ``total``."""
    if total <= 0:
        return 0.0
    rank = pct / 100 * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if count and seen >= rank:
            low, high = bucket_bounds(index)
            return (low + high) / 2
    return float(bucket_bounds(len(buckets) - 1)[1])


class RequestStats:
    """One request type: how many, how many failed, and how long they took."""

    __slots__ = ("buckets", "count", "errors", "max_ns", "total_ns")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total_ns = 0
        self.max_ns = 0
        self.buckets = [0] * BUCKETS

    def add(self, ns: int, failed: bool) -> None:
        self.count += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        self.buckets[bucket_of(ns)] += 1
        if failed:
            self.errors += 1

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "errors": self.errors,
                               "mean_us": round(self.total_ns / self.count / 1e3, 2)
                               if self.count else 0.0,
                               "max_us": round(self.max_ns / 1e3, 2)}
        for pct in PERCENTILES:
            value = min(percentile(self.buckets, self.count, pct), self.max_ns)
            out[f"p{pct}_us"] = round(value / 1e3, 2)
        return out


class SlowestRecent:
    """The slowest requests of the last one or two windows: a min-heap of a few per window,
    so a request faster than the slowest kept ones costs one comparison."""

    def __init__(self, kept: int = SLOWEST_KEPT, window_ns: int = SLOW_WINDOW_NS) -> None:
        self.kept = kept
        self.window_ns = window_ns
        self.window_start = time.perf_counter_ns()
        self.current: list[tuple[int, int, dict[str, Any]]] = []
        self.previous: list[tuple[int, int, dict[str, Any]]] = []
        self._order = itertools.count()
        self.floor = 0  # a request must take longer than this to be considered

    def wants(self, ns: int, now: int) -> bool:
        """Whether a request that took ``ns`` and ended at ``now`` (perf_counter_ns) is among
        the slowest of its window; O(1), and False for nearly every request."""
        if now - self.window_start > self.window_ns:
            self.previous, self.current = self.current, []
            self.window_start = now
            self.floor = 0
        return ns > self.floor

    def keep(self, request: str, ns: int, code: int, target: str) -> None:
        """Remember a request :meth:`wants` said yes to, with its node and path."""
        item = {"request": request, "us": round(ns / 1e3, 1), "result": code,
                "target": target, "at": time.time()}
        entry = (ns, next(self._order), item)
        if len(self.current) < self.kept:
            heapq.heappush(self.current, entry)
        else:
            heapq.heapreplace(self.current, entry)
        if len(self.current) >= self.kept:
            self.floor = self.current[0][0]

    def snapshot(self) -> list[dict[str, Any]]:
        both = sorted(self.current + self.previous, key=lambda e: -e[0])
        return [item for _, _, item in both[:self.kept]]


class Metrics:
    """Accounting of every request while attached (see :mod:`unionfs.fuse.watch`)."""

    def __init__(self, engine: EngineCounters, *, pinned: bool = False) -> None:
        self.engine = engine
        self.pinned = pinned  # -o metrics: on from the mount on, never detached when idle
        self.by_request: dict[str, RequestStats] = {}
        self.bytes_read = 0
        self.bytes_written = 0
        self.lookups = 0
        self.lookups_from_view = 0  # answered from a merged view already built
        self.negative = 0  # lookups answered with a negative entry (the name is absent)
        self.readdirs = 0
        self.readdirs_from_view = 0
        self.in_flight = 0  # requests being served now (more than 1 while one waits)
        self.slowest = SlowestRecent()
        self.since = time.time()
        self.last_asked = time.monotonic()

    def stats_of(self, request: str) -> RequestStats:
        stats = self.by_request.get(request)
        if stats is None:
            stats = self.by_request[request] = RequestStats()
        return stats

    def snapshot(self, requests_since_mount: dict[str, int]) -> dict[str, Any]:
        """Everything, as JSON data; ``requests_since_mount`` are the adapter's own counts."""
        self.last_asked = time.monotonic()
        engine = self.engine
        return {
            "time": time.time(),
            "since": self.since,
            "requests_since_mount": requests_since_mount,
            "requests": {name: s.snapshot() for name, s in sorted(self.by_request.items())},
            "bytes": {"read": self.bytes_read, "written": self.bytes_written},
            "copy_ups": {"count": engine.copy_ups, "bytes": engine.copy_up_bytes},
            "cache": {"lookups": self.lookups, "lookups_from_view": self.lookups_from_view,
                      "negative_entries": self.negative, "readdirs": self.readdirs,
                      "readdirs_from_view": self.readdirs_from_view,
                      "views_built": engine.views_built,
                      "views_read_ahead": engine.views_read_ahead,
                      "views_from_read_ahead": engine.views_from_read_ahead},
            "threads": {**engine.threads()._asdict(), "requests_in_flight": self.in_flight},
            "slowest": self.slowest.snapshot(),
        }
