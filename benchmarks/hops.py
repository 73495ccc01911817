"""What one hand-off to a worker thread costs on this machine, and where it goes.

``python -m unionfs.benchmarks.hops`` times round trips between two threads of this process:

* **queue**: ``queue.SimpleQueue`` ping-pong (a futex wake each way);
* **socket**: a socketpair, the caller waiting in epoll (a wake each way, as trio's loop is
  woken when a worker thread finishes);
* **to_thread**: ``trio.to_thread.run_sync`` of a function that does nothing, and of one that
  blocks for 300 us without the GIL (the size of a small copy-up with its fsync), which is
  how the server hands slow work to its worker threads (``engine/slow.py``);
* **lane**: the same hand-off without trio's thread cache and limiter (one SimpleQueue, the
  result rescheduled through the trio token): what a leaner hand-off could save.

Each figure is the median over batches of microseconds per round trip. On a VM whose idle
vCPUs halt (no guest halt polling) every wake costs a VM exit and an interrupt, and a hop
costs two: that, not Python, is most of a hop there.
"""

from __future__ import annotations

import argparse
import json
import queue
import select
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio

BLOCKING_WORK = 300e-6  # seconds: a small copy-up's copy and fsync


def _per_trip(trips: int, run: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(trips):
        run()
    return (time.perf_counter() - start) / trips * 1e6


def queue_ping_pong(trips: int) -> float:
    """Microseconds per round trip through two SimpleQueues."""
    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (item := there.get()) is not None:
            back.put(item)

    def trip() -> None:
        there.put(1)
        back.get()

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        return _per_trip(trips, trip)
    finally:
        there.put(None)
        thread.join()


def socket_ping_pong(trips: int) -> float:
    """Microseconds per round trip through two socketpairs, the caller in epoll."""
    there, there_end = socket.socketpair()
    back, back_end = socket.socketpair()
    poller = select.epoll()
    poller.register(back.fileno(), select.EPOLLIN)

    def echo() -> None:
        while (byte := there_end.recv(1)) != b"q":
            back_end.send(byte)

    def trip() -> None:
        there.send(b"x")
        poller.poll()
        back.recv(1)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        return _per_trip(trips, trip)
    finally:
        there.send(b"q")
        thread.join()
        for sock in (there, there_end, back, back_end):
            sock.close()
        poller.close()


class Lane:
    """A hand-off with nothing but a queue: the result comes back through the trio token."""

    def __init__(self, threads: int = 2) -> None:
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, daemon=True)
                        for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            func, task, token = job
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.capture(func))

    async def run(self, func: Callable[[], None]) -> None:
        self.jobs.put((func, trio.lowlevel.current_task(), trio.lowlevel.current_trio_token()))
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


def trio_hops(trips: int) -> dict[str, float]:
    """Microseconds per hop: trio.to_thread and :class:`Lane`, idle and 300 us of work."""

    def idle() -> None:
        pass

    def blocking() -> None:
        time.sleep(BLOCKING_WORK)

    async def timed(hop: Callable[[Callable[[], None]], Awaitable[None]],
                    func: Callable[[], None]) -> float:
        start = time.perf_counter()
        for _ in range(trips):
            await hop(func)
        return (time.perf_counter() - start) / trips * 1e6

    async def measure() -> dict[str, float]:
        limiter = trio.CapacityLimiter(2)
        lane = Lane()

        async def to_thread(func: Callable[[], None]) -> None:
            await trio.to_thread.run_sync(func, limiter=limiter)

        try:
            return {"to_thread": await timed(to_thread, idle),
                    "to_thread_300us": await timed(to_thread, blocking) - BLOCKING_WORK * 1e6,
                    "lane": await timed(lane.run, idle),
                    "lane_300us": await timed(lane.run, blocking) - BLOCKING_WORK * 1e6}
        finally:
            lane.close()

    return trio.run(measure)


def measure(batches: int, trips: int) -> dict[str, float]:
    """Median microseconds per round trip (for the 300 us rows: beyond the work itself)."""
    samples: dict[str, list[float]] = {}
    for _ in range(batches):
        row = {"queue": queue_ping_pong(trips), "socket": socket_ping_pong(trips),
               **trio_hops(trips)}
        for name, value in row.items():
            samples.setdefault(name, []).append(value)
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m unionfs.benchmarks.hops")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--trips", type=int, default=2000, help="round trips per batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.batches, args.trips)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:16s} {value:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
