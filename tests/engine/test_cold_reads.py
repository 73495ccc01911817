"""Where a cold read waits for the disk (``engine/readwait.py``, ``SlowWork.read``), without a
kernel mount: small reads from a fast disk on the calling thread, large reads and reads from
a slow disk in a worker thread, the same bytes either way."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from unionfs.engine.readwait import INLINE_LIMIT_NS, SMALL_READ, WEIGHT, ReadWait
from unionfs.engine.slow import SlowWork
from unionfs.engine.union import StackConfig, Union

MS = 1_000_000
US = 1_000
SIZE = 4 << 20


def test_small_reads_wait_inline_while_the_disk_is_fast() -> None:
    wait = ReadWait()
    assert wait.inline(4096)  # nothing measured yet
    for _ in range(100):
        wait.took(4096, 60 * US)
    assert wait.inline(4096) and wait.inline(SMALL_READ)
    assert not wait.inline(SMALL_READ + 1)  # a sequential reader's large requests: threads


def test_a_slow_disk_sends_small_reads_to_threads_until_it_is_fast_again() -> None:
    wait = ReadWait()
    wait.took(4096, 60 * US)
    for _ in range(3):  # a spinning disk's seeks
        wait.took(4096, 8 * MS)
    assert not wait.inline(4096)
    for _ in range(WEIGHT * 4):  # timed in the threads: the disk answers quickly again
        wait.took(4096, 60 * US)
    assert wait.inline(4096)


def test_one_stray_wait_does_not_send_reads_to_threads() -> None:
    wait = ReadWait()
    for _ in range(50):
        wait.took(4096, 60 * US)
    wait.took(4096, 500 * MS)  # a flush of someone else's writes on the same disk
    assert wait.inline(4096)
    assert wait.average_ns < INLINE_LIMIT_NS


def test_large_reads_say_nothing_of_small_ones() -> None:
    wait = ReadWait()
    for _ in range(20):
        wait.took(1 << 20, 50 * MS)
    assert wait.inline(4096)


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[SlowWork]:
    (tmp_path / "lower").mkdir()
    union = Union(StackConfig([str(tmp_path / "lower")]))
    try:
        yield SlowWork(union)
    finally:
        union.close()


@pytest.fixture
def cold_file(tmp_path: Path) -> Iterator[tuple[int, bytes, Callable[[], None]]]:
    """An fd of a file, its bytes, and a function that drops its pages from the cache."""
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)

    def drop() -> None:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    drop()
    try:
        yield fd, data, drop
    finally:
        os.close(fd)


def threads_used(slow: SlowWork, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The functions :meth:`SlowWork.run` is asked to run in a worker thread."""
    ran: list[Any] = []
    run = slow.run

    async def counted(func: Callable[..., Any], *args: object, hold: str | None = None) -> Any:
        ran.append(func)
        return await run(func, *args, hold=hold)

    monkeypatch.setattr(slow, "run", counted)
    return ran


def read(slow: SlowWork, fd: int, size: int, offset: int) -> bytes:
    return bytes(trio.run(slow.read, fd, size, offset))


def test_a_small_cold_read_waits_on_the_calling_thread(
        slow: SlowWork, cold_file: tuple[int, bytes, Callable[[], None]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fd, data, _ = cold_file
    ran = threads_used(slow, monkeypatch)
    for offset in (3 << 20, 123 * 4096, 0):
        assert read(slow, fd, 4096, offset) == data[offset:offset + 4096]
    assert ran == []
    assert slow.read_wait.average_ns > 0


def test_a_large_cold_read_goes_to_a_worker_thread(
        slow: SlowWork, cold_file: tuple[int, bytes, Callable[[], None]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fd, data, _ = cold_file
    ran = threads_used(slow, monkeypatch)
    assert read(slow, fd, 1 << 20, 1 << 20) == data[1 << 20:2 << 20]
    assert len(ran) == 1


def test_a_slow_disk_sends_small_cold_reads_to_a_worker_thread(
        slow: SlowWork, cold_file: tuple[int, bytes, Callable[[], None]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fd, data, _ = cold_file
    slow.read_wait.average_ns = 2 * INLINE_LIMIT_NS
    ran = threads_used(slow, monkeypatch)
    assert read(slow, fd, 4096, 8192) == data[8192:8192 + 4096]
    assert len(ran) == 1
    # Timed in the thread (the disk's own speed moves it either way: only that it moved).
    assert slow.read_wait.average_ns != 2 * INLINE_LIMIT_NS


def test_a_read_partly_cached_returns_both_parts(
        slow: SlowWork, cold_file: tuple[int, bytes, Callable[[], None]]) -> None:
    fd, data, drop = cold_file
    drop()
    os.pread(fd, 8192, 65536)  # the first half of the next read is cached
    os.posix_fadvise(fd, 65536 + 8192, SIZE, os.POSIX_FADV_DONTNEED)
    assert read(slow, fd, 16384, 65536) == data[65536:65536 + 16384]
    assert read(slow, fd, 65536, SIZE - 4096) == data[SIZE - 4096:]  # short at the end
