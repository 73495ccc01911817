"""The WRITE server of unionfs.fuse.writes without a kernel mount: fake reply functions record
what would reach the kernel, from which thread; a fake route stands for the union."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs.fuse.lowlevel import _in_memory
from unionfs.fuse.writes import MAX_WRITE, Route, WriteServer, WriteSource


class Replies:
    """What the server replied: request -> (count or -errno, the replying thread's name)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, str]] = {}
        self.done = threading.Condition()

    def write(self, req: int, count: int) -> int:
        self._record(req, count)
        return 0

    def err(self, req: int, code: int) -> int:
        self._record(req, -code)
        return 0

    def _record(self, req: int, answer: int) -> None:
        with self.done:
            self.got[req] = (answer, threading.current_thread().name)
            self.done.notify_all()

    def wait(self, req: int) -> tuple[int, str]:
        with self.done:
            assert self.done.wait_for(lambda: req in self.got, timeout=30), req
            return self.got[req]


class Union:
    """A fake union: fh 7 writes inline, fh 8 in a writer thread (``done`` recorded)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done: list[str] = []

    def route(self, fh: int, size: int) -> Route | None:
        if fh == 7:
            return Route(self.fd)
        if fh == 8:
            return Route(self.fd, lambda: self.done.append(threading.current_thread().name))
        if fh == 9:
            raise OSError(errno.EBADF, "bad handle")
        if fh == 10:
            raise RuntimeError("a bug in the union")
        return None

    def write_at(self, fd: int, data: memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    path = tmp_path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield fd, path
    finally:
        os.close(fd)


@pytest.fixture
def replies() -> Replies:
    return Replies()


def _request(data: bytes) -> tuple[ctypes.Array[ctypes.c_char], int]:
    """libfuse's request buffer holding ``data``, and its address."""
    buf = ctypes.create_string_buffer(data, len(data))
    return buf, ctypes.addressof(buf)


def _server(replies: Replies, union: Union) -> WriteServer:
    server = WriteServer(WriteSource(union.route, union.write_at), replies.write, replies.err)
    server.start()
    return server


def test_inline_write_is_replied_on_the_calling_thread(target: tuple[int, Path],
                                                       replies: Replies) -> None:
    fd, path = target
    server = _server(replies, Union(fd))
    try:
        _buf, address = _request(b"hello")
        assert server(1, 7, address, 5, 3) is True
        assert replies.got[1] == (5, threading.current_thread().name)
    finally:
        server.close()
    assert path.read_bytes() == b"\0\0\0hello"


def test_threaded_write_owns_a_copy_and_hands_done_back(target: tuple[int, Path],
                                                        replies: Replies) -> None:
    """The request buffer is reused by libfuse as soon as the callback returns: the writer
    thread writes the copy taken before, and calls the route's done after its reply."""
    fd, path = target
    union = Union(fd)
    server = _server(replies, union)
    data = os.urandom(MAX_WRITE)
    try:
        _buf, address = _request(data)
        assert server(2, 8, address, MAX_WRITE, 0) is True
        ctypes.memset(address, 0, MAX_WRITE)  # libfuse reads the next request into it
        count, thread = replies.wait(2)
    finally:
        server.close()
    assert count == MAX_WRITE and thread.startswith("unionfs-write-")
    assert union.done == [thread]
    assert path.read_bytes() == data


def test_what_the_union_does_not_route_goes_to_pyfuse3(target: tuple[int, Path],
                                                       replies: Replies) -> None:
    fd, _ = target
    server = _server(replies, Union(fd))
    try:
        _buf, address = _request(b"x" * 16)
        assert server(3, 11, address, 16, 0) is False  # route None
        assert server(4, 7, address, MAX_WRITE + 1, 0) is False  # too big for the buffers
    finally:
        server.close()
    assert replies.got == {}


def test_failures_are_errno_replies(target: tuple[int, Path], replies: Replies,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """An OSError is its errno; anything else is EIO and a logged traceback; a write the
    file refuses (here: a read-only fd) is its errno, from the writer thread too."""
    _, path = target
    readonly = os.open(path, os.O_RDONLY)
    server = _server(replies, Union(readonly))
    try:
        _buf, address = _request(b"data")
        assert server(5, 9, address, 4, 0) and replies.got[5][0] == -errno.EBADF
        assert server(6, 10, address, 4, 0) and replies.got[6][0] == -errno.EIO
        assert "a bug in the union" in caplog.text
        assert server(7, 8, address, 4, 0)
        assert replies.wait(7)[0] == -errno.EBADF
    finally:
        server.close()
        os.close(readonly)


def test_a_write_that_cannot_be_queued_hands_its_route_back(
        target: tuple[int, Path], replies: Replies, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No buffer for the copy (memory exhausted): EIO, and the route's done is called at
    once, so the gate it holds is released (else a live commit would wait forever)."""
    fd, _ = target
    union = Union(fd)
    server = _server(replies, union)

    def no_memory(size: int) -> None:
        raise MemoryError(size)

    monkeypatch.setattr("unionfs.fuse.writes.Buffer", no_memory)
    while not server.spare.empty():  # no spare buffer either
        server.spare.get_nowait()
    try:
        _buf, address = _request(b"data")
        assert server(12, 8, address, 4, 0) is True
    finally:
        server.close()
    assert replies.got[12][0] == -errno.EIO
    assert union.done == [threading.current_thread().name]
    assert "failed unexpectedly" in caplog.text


def test_close_answers_queued_writes_first(target: tuple[int, Path], replies: Replies) -> None:
    fd, path = target
    server = _server(replies, Union(fd))
    chunks = [os.urandom(4096) for _ in range(32)]
    keep = []
    for i, chunk in enumerate(chunks):
        buf, address = _request(chunk)
        keep.append(buf)
        assert server(100 + i, 8, address, len(chunk), i * 4096)
    server.close()
    assert all(replies.got[100 + i][0] == 4096 for i in range(32))
    assert path.read_bytes() == b"".join(chunks)
    assert not any(thread.is_alive() for thread in server.threads)


def test_in_memory_reads_a_one_buffer_vector() -> None:
    """struct fuse_bufvec {count, idx, off; struct fuse_buf {size, flags, mem, fd, pos}}."""
    data = ctypes.create_string_buffer(b"abcdef")
    vector = (ctypes.c_size_t * 8)(1, 0, 2, 6, 0, ctypes.addressof(data), 0, 0)
    address = ctypes.addressof(vector)
    assert _in_memory(address) == (ctypes.addressof(data) + 2, 4)
    vector[4] = 1 << 1  # FUSE_BUF_IS_FD: spliced, not in memory
    assert _in_memory(address) is None
    vector[4], vector[0] = 0, 2  # two buffers
    assert _in_memory(address) is None
