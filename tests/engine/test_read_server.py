"""The READ server of unionfs.fuse.reads without a kernel mount: fake reply functions record
what would reach the kernel, from which thread."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pagecache import drop_from_cache
from unionfs.engine.readwait import INLINE_LIMIT_NS, ReadWait
from unionfs.fuse import reads
from unionfs.fuse.reads import MAX_READ, ReadServer

SIZE = 4 << 20


class Replies:
    """What the server replied: request -> (bytes or errno, the replying thread's name)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[bytes | int, str]] = {}
        self.done = threading.Condition()

    def buf(self, req: int, address: int, size: int) -> int:
        self._record(req, ctypes.string_at(address, size))
        return 0

    def err(self, req: int, code: int) -> int:
        self._record(req, code)
        return 0

    def _record(self, req: int, answer: bytes | int) -> None:
        with self.done:
            self.got[req] = (answer, threading.current_thread().name)
            self.done.notify_all()

    def wait(self, req: int) -> tuple[bytes | int, str]:
        with self.done:
            assert self.done.wait_for(lambda: req in self.got, timeout=30), req
            return self.got[req]


@pytest.fixture
def file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(SIZE)
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd, data
    finally:
        os.close(fd)


def _drop(fd: int) -> None:
    drop_from_cache(fd, SIZE)


@pytest.fixture
def replies() -> Replies:
    return Replies()


def _server(replies: Replies, fds: dict[int, int], wait: ReadWait | None = None
            ) -> ReadServer:
    server = ReadServer(fds.get, replies.buf, replies.err, wait or ReadWait())
    server.start()
    return server


def test_cached_data_is_replied_on_the_calling_thread(file: tuple[int, bytes],
                                                      replies: Replies) -> None:
    fd, data = file
    server = _server(replies, {7: fd})
    try:
        assert server(1, 7, 65536, 4096)
        assert replies.got[1] == (data[4096:4096 + 65536], threading.current_thread().name)
        assert server(2, 7, 8192, SIZE - 100)  # the file ends: a short answer
        assert replies.got[2][0] == data[-100:]
    finally:
        server.close()


def test_a_large_cold_read_is_replied_by_a_reader_thread(file: tuple[int, bytes],
                                                         replies: Replies) -> None:
    fd, data = file
    server = _server(replies, {7: fd})
    try:
        _drop(fd)
        assert server(1, 7, MAX_READ, MAX_READ)
        answer, thread = replies.wait(1)
        assert answer == data[MAX_READ:2 * MAX_READ]
        assert thread.startswith("unionfs-read-")
    finally:
        server.close()
    assert not any(t.is_alive() for t in server.threads)


def test_a_small_cold_read_from_a_slow_disk_goes_to_a_reader(file: tuple[int, bytes],
                                                             replies: Replies) -> None:
    fd, data = file
    wait = ReadWait()
    wait.average_ns = 2 * INLINE_LIMIT_NS
    server = _server(replies, {7: fd}, wait)
    try:
        _drop(fd)
        assert server(1, 7, 4096, 8192)
        assert replies.wait(1)[1].startswith("unionfs-read-")
        assert replies.got[1][0] == data[8192:8192 + 4096]
        server(2, 7, 4096, 0)  # the next READ hands the reader's timing to ReadWait
        assert wait.average_ns != 2 * INLINE_LIMIT_NS
    finally:
        server.close()


def test_unknown_handles_and_huge_reads_are_given_back(file: tuple[int, bytes],
                                                       replies: Replies) -> None:
    fd, _ = file
    server = _server(replies, {7: fd})
    try:
        assert not server(1, 8, 4096, 0)  # fd_of says None: pyfuse3's handler serves it
        assert not server(2, 7, MAX_READ + 4096, 0)
        assert replies.got == {}
    finally:
        server.close()


def test_errors_become_the_callers_errno(tmp_path: Path, replies: Replies) -> None:
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    server = _server(replies, {7: directory, 9: 10_000})
    try:
        assert server(1, 7, 4096, 0)
        assert replies.wait(1)[0] == errno.EISDIR
        assert server(2, 9, 4096, 0)  # a closed fd
        assert replies.wait(2)[0] == errno.EBADF
    finally:
        server.close()
        os.close(directory)


def test_a_reader_stuck_past_shutdown_never_replies(file: tuple[int, bytes], replies: Replies,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """close() waits JOIN_SECONDS for the readers; one still in its read then must not
    reply through a session that is about to be destroyed."""
    monkeypatch.setattr(reads, "JOIN_SECONDS", 0.0)
    fd, _ = file
    stuck, release = threading.Event(), threading.Event()

    def hold() -> None:
        stuck.set()
        assert release.wait(30)

    server = ReadServer({7: fd}.get, replies.buf, replies.err, ReadWait(), hold, readers=1)
    server.start()
    _drop(fd)
    assert server(1, 7, MAX_READ, 0)
    assert stuck.wait(30)
    server.close()
    assert server.abandoned
    release.set()
    server.threads[0].join(30)
    assert not server.threads[0].is_alive()
    assert replies.got == {}
