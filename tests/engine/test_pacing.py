"""Writeback pacing (unionfs.layers.pacing) on plain files, and copy-ups that use it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unionfs.core.whiteout import TRUSTED
from unionfs.layers import pacing
from unionfs.layers.copyup import CopyUp, WorkDir
from unionfs.layers.layer import Layer
from unionfs.layers.pacing import WritebackPacer
from unionfs.layers.syscalls import SYNC_FILE_RANGE_WRITE

KIB = 1 << 10


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every sync_file_range the pacer makes (offset, length, flags), still made for real."""
    made: list[tuple[int, int, int]] = []
    real = pacing.sync_file_range

    def recorded(fd: int, offset: int, length: int, flags: int) -> None:
        made.append((offset, length, flags))
        real(fd, offset, length, flags)

    monkeypatch.setattr(pacing, "sync_file_range", recorded)
    return made


def test_each_window_is_started_then_waited_for_one_window_later(
        tmp_path: Path, calls: list[tuple[int, int, int]]) -> None:
    window = 64 * KIB
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pacer = WritebackPacer(fd, window)
        for piece in range(10):  # 10 pieces of half a window: 5 windows
            os.pwrite(fd, b"x" * (window // 2), piece * window // 2)
            pacer.wrote(piece * window // 2, window // 2)
    finally:
        os.close(fd)
    starts = [(o, n) for o, n, f in calls if f == SYNC_FILE_RANGE_WRITE]
    waits = [(o, n) for o, n, f in calls if f != SYNC_FILE_RANGE_WRITE]
    assert starts == [(i * window, window) for i in range(5)]
    assert waits == [(i * window, window) for i in range(4)]  # the last is the fsync's
    # A wait always comes after the start of the next window (the disk never runs dry).
    assert calls.index((window, window, SYNC_FILE_RANGE_WRITE)) < calls.index(
        next(c for c in calls if c[2] != SYNC_FILE_RANGE_WRITE))
    assert (tmp_path / "f").read_bytes() == b"x" * 5 * window


def test_less_than_a_window_is_left_to_the_fsync(
        tmp_path: Path, calls: list[tuple[int, int, int]]) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pacer = WritebackPacer(fd, 1 << 20)
        os.write(fd, b"y" * 4096)
        pacer.wrote(0, 4096)
    finally:
        os.close(fd)
    assert calls == []


def test_a_file_that_cannot_be_paced_is_only_written(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()  # sync_file_range of a pipe: ESPIPE
    try:
        pacer = WritebackPacer(write_end, 4096)
        os.write(write_end, b"z" * 8192)
        pacer.wrote(0, 8192)
        pacer.wrote(8192, 8192)
        assert not pacer.active
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.fixture
def copier(tmp_path: Path) -> CopyUp:
    for d in ("lower/d", "upper/d", "work"):
        (tmp_path / d).mkdir(parents=True)
    return CopyUp(Layer(str(tmp_path / "upper"), 0, writable=True),
                  WorkDir(str(tmp_path / "work")), TRUSTED, sync=True)


def test_paced_copy_up_keeps_data_and_holes(
        tmp_path: Path, copier: CopyUp, calls: list[tuple[int, int, int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "WINDOW", 64 * KIB)
    src = tmp_path / "lower/d/sparse"
    pieces = {0: os.urandom(300 * KIB), 2 << 20: os.urandom(200 * KIB),
              5 << 20: os.urandom(70 * KIB)}
    with open(src, "wb") as f:
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
        f.truncate(7 << 20)  # ends in a hole
    copier.copy(Layer(str(tmp_path / "lower"), 1), b"d", b"sparse", 77)
    dst = tmp_path / "upper/d/sparse"
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks + 64  # holes stay holes
    assert any(f == SYNC_FILE_RANGE_WRITE for _, _, f in calls)  # it was paced


def test_volatile_copy_up_is_not_paced(
        tmp_path: Path, calls: list[tuple[int, int, int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "WINDOW", 64 * KIB)
    for d in ("lower/d", "upper/d", "work"):
        (tmp_path / d).mkdir(parents=True)
    copier = CopyUp(Layer(str(tmp_path / "upper"), 0, writable=True),
                    WorkDir(str(tmp_path / "work")), TRUSTED, sync=False)
    data = os.urandom(1 << 20)
    (tmp_path / "lower/d/f").write_bytes(data)
    copier.copy(Layer(str(tmp_path / "lower"), 1), b"d", b"f", 77)
    assert (tmp_path / "upper/d/f").read_bytes() == data
    assert calls == []


def test_pieces_out_of_order_are_started_as_the_range_they_span(
        tmp_path: Path, calls: list[tuple[int, int, int]]) -> None:
    window = 64 * KIB
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pacer = WritebackPacer(fd, window)
        for offset in (3, 1, 2, 0, 7, 5, 6, 4):  # two windows, each written backwards-ish
            os.pwrite(fd, b"w" * (window // 4), offset * window // 4)
            pacer.wrote(offset * window // 4, window // 4)
    finally:
        os.close(fd)
    assert calls[0] == (0, window, SYNC_FILE_RANGE_WRITE)
    assert calls[1] == (window, window, SYNC_FILE_RANGE_WRITE)
    assert calls[2][:2] == (0, window) and calls[2][2] != SYNC_FILE_RANGE_WRITE
