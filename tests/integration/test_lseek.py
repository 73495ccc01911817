"""SEEK_DATA / SEEK_HOLE on real mounts (FUSE_LSEEK, served by unionfs.fuse.lowlevel).

The kernel's overlayfs on a copy of the same layers is the oracle where it has an answer;
writes that the kernel still holds as dirty pages must never show as holes.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from unionfs.api import server_stats

StackFactory = Callable[..., Stack]
MIB = 1 << 20
Map = list[tuple[int | str, int | str]]


@dataclass(frozen=True)
class Layout:
    """A sparse file: data extents (offset, bytes), holes between them, and its size."""

    extents: tuple[tuple[int, bytes], ...]
    size: int

    def make(self, path: Path) -> None:
        with open(path, "wb") as f:
            for offset, data in self.extents:
                f.seek(offset)
                f.write(data)
            f.truncate(self.size)

    def expected(self) -> Map:
        """What ext4 (or tmpfs) answers for this layout at each of :data:`PROBES`."""
        data = [(off, off + len(buf)) for off, buf in self.extents]
        out: Map = []
        for off in PROBES:
            if off >= self.size:
                out.append(("ENXIO", "ENXIO"))
                continue
            start = next((max(s, off) for s, e in data if e > off), None)
            hole = next((off if off < s else e for s, e in data if e > off), off)
            out.append((start if start is not None else "ENXIO", hole))
        return out


# data [0, 4K), a hole, data [1 MiB, 1 MiB + 8K), a hole up to 3 MiB.
SPARSE = Layout(((0, b"a" * 4096), (MIB, b"b" * 8192)), 3 * MIB)
# Extents the kernel's copy-up keeps as they are: it copies 1 MiB from where data starts
# (zeros included), so only data in whole MiB, or up to the end, comes out the same.
ALIGNED = Layout(((0, b"a" * MIB), (2 * MIB, b"b" * 8192)), 2 * MIB + 8192)
PROBES = (0, 100, 4096, 5000, MIB - 1, MIB, MIB + 4096, MIB + 8192, 2 * MIB,
          2 * MIB + 8192, 3 * MIB - 1, 3 * MIB, 3 * MIB + 4096)


def seek_map(path: Path) -> Map:
    """(SEEK_DATA, SEEK_HOLE) from each probe offset: an offset, or the errno's name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(_seek(fd, off, os.SEEK_DATA), _seek(fd, off, os.SEEK_HOLE)) for off in PROBES]
    finally:
        os.close(fd)


def _seek(fd: int, offset: int, whence: int) -> int | str:
    try:
        return os.lseek(fd, offset, whence)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


@pytest.fixture
def sparse_stack(stack: StackFactory) -> Stack:
    st = stack({})
    SPARSE.make(st.lowers[0] / "sparse")
    return st


def test_lseek_is_served(sparse_stack: Stack, mounts: Mounts) -> None:
    mnt = mounts.unionfs(sparse_stack)
    assert "lseek" in server_stats(mnt)["features"]


def test_holes_of_a_sparse_lower_file(stack: StackFactory, mounts: Mounts) -> None:
    """Holes of a lower file are found, with the same answers as the kernel's overlayfs on
    the same layers (and as the layer file itself), ENXIO at and after the end."""
    ours, theirs = stack({}, name="ours"), stack({}, name="kernel")
    for st in (ours, theirs):
        SPARSE.make(st.lowers[0] / "sparse")
    mnt = mounts.unionfs(ours)
    kernel = mounts.overlay(theirs)
    assert seek_map(ours.lowers[0] / "sparse") == SPARSE.expected()
    assert seek_map(mnt / "sparse") == seek_map(kernel / "sparse") == SPARSE.expected()
    assert not (ours.upper / "sparse").exists()  # asking did not copy the file up
    assert server_stats(mnt)["requests"]["lseek"] > 0


def test_holes_of_an_upper_file_after_copy_up(stack: StackFactory, mounts: Mounts) -> None:
    """After copy-up, a hole punched and a block written through the mount, the upper file
    answers, as the kernel's overlayfs does."""
    ours, theirs = stack({}, name="ours"), stack({}, name="kernel")
    for st in (ours, theirs):
        ALIGNED.make(st.lowers[0] / "sparse")
    mnt = mounts.unionfs(ours)
    kernel = mounts.overlay(theirs)
    for root in (mnt, kernel):
        fd = os.open(root / "sparse", os.O_RDWR)
        try:
            _punch(fd, 4096, 4096)
            os.pwrite(fd, b"c" * 4096, MIB + 4096)
        finally:
            os.close(fd)
    assert (ours.upper / "sparse").exists()
    got = seek_map(mnt / "sparse")
    assert got == seek_map(kernel / "sparse")
    at = dict(zip(PROBES, got, strict=True))
    assert at[4096] == (8192, 4096)  # the punched hole
    assert at[MIB] == (MIB + 4096, MIB) and at[MIB + 4096] == (MIB + 4096, MIB + 8192)


def test_copy_up_keeps_every_hole(sparse_stack: Stack, mounts: Mounts) -> None:
    """Holes inside the kernel's 1 MiB copy-up chunks stay holes in unionfs's copy."""
    mnt = mounts.unionfs(sparse_stack)
    os.close(os.open(mnt / "sparse", os.O_RDWR))
    assert seek_map(sparse_stack.upper / "sparse") == SPARSE.expected()
    assert seek_map(mnt / "sparse") == SPARSE.expected()


def _punch(fd: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, 0x01 | 0x02, offset, length) != 0:  # KEEP_SIZE | PUNCH_HOLE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_unflushed_writes_are_not_holes(sparse_stack: Stack, mounts: Mounts) -> None:
    """Writes the kernel still holds as dirty pages (writeback cache, no fsync, the writer
    still open): SEEK_DATA/SEEK_HOLE from another fd see them, and no data is lost."""
    st = sparse_stack
    mnt = mounts.unionfs(st)
    writer = os.open(mnt / "new", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(writer, b"x" * 4096, MIB)
        os.pwrite(writer, b"y" * 100, 3 * MIB)
        # The kernel has not written them back yet: the upper file is still empty.
        assert os.stat(st.upper / "new").st_size == 0
        reader = os.open(mnt / "new", os.O_RDONLY)
        try:
            assert os.lseek(reader, 0, os.SEEK_DATA) == MIB
            assert os.lseek(reader, MIB, os.SEEK_HOLE) == MIB + 4096
            assert os.lseek(reader, MIB + 4096, os.SEEK_DATA) == 3 * MIB
            assert os.lseek(reader, 3 * MIB, os.SEEK_HOLE) == 3 * MIB + 100
            assert _seek(reader, 3 * MIB + 100, os.SEEK_DATA) == "ENXIO"
            assert os.pread(reader, 4096, MIB) == b"x" * 4096
            assert os.pread(reader, 200, 3 * MIB) == b"y" * 100
        finally:
            os.close(reader)
        # The answers came from the upper file, now holding what was written.
        assert os.stat(st.upper / "new").st_size == 3 * MIB + 100
        os.pwrite(writer, b"z" * 10, 2 * MIB)  # more writes after the write-back
        assert os.lseek(writer, MIB + 4096, os.SEEK_DATA) == 2 * MIB
    finally:
        os.close(writer)
    data = (mnt / "new").read_bytes()
    assert data[MIB:MIB + 4096] == b"x" * 4096 and data[2 * MIB:2 * MIB + 10] == b"z" * 10
    assert data[3 * MIB:] == b"y" * 100 and data.count(0) == len(data) - 4096 - 10 - 100


def test_dirty_mmap_pages_are_not_holes(sparse_stack: Stack, mounts: Mounts) -> None:
    """Data stored through a shared mapping (dirty pages, nothing written yet) is data."""
    st = sparse_stack
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "mapped", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 8 * MIB)
        with mmap.mmap(fd, 8 * MIB) as mapping:
            mapping[5 * MIB:5 * MIB + 10] = b"q" * 10
            assert os.stat(st.upper / "mapped").st_blocks == 0
            reader = os.open(mnt / "mapped", os.O_RDONLY)
            try:
                assert os.lseek(reader, 0, os.SEEK_DATA) == 5 * MIB
                assert os.lseek(reader, 5 * MIB, os.SEEK_HOLE) == 5 * MIB + 4096
                assert os.pread(reader, 10, 5 * MIB) == b"q" * 10
            finally:
                os.close(reader)
    finally:
        os.close(fd)


@pytest.mark.parametrize("sparse", ["always", "auto"])
def test_cp_sparse_copies_holes(sparse_stack: Stack, mounts: Mounts, tmp_path: Path,
                                sparse: str) -> None:
    """``cp --sparse`` of a sparse lower file through the mount: a sparse, identical copy."""
    mnt = mounts.unionfs(sparse_stack)
    target = tmp_path / f"copy-{sparse}"
    subprocess.run(["cp", f"--sparse={sparse}", str(mnt / "sparse"), str(target)],
                   check=True, timeout=60)
    source = sparse_stack.lowers[0] / "sparse"
    assert target.read_bytes() == source.read_bytes()
    assert seek_map(target) == SPARSE.expected()
    assert os.stat(target).st_blocks * 512 <= 64 * 1024
    if sparse == "auto":  # no zero detection: the holes came from SEEK_HOLE
        assert server_stats(mnt)["requests"]["lseek"] > 0


def test_plain_mount_without_lseek(sparse_stack: Stack, mounts: Mounts, tmp_path: Path) -> None:
    """-o no_extensions: no lseek handler; the kernel falls back to "data up to the end",
    and reads and copies still work."""
    mnt = mounts.unionfs(sparse_stack, extra=["no_extensions"])
    assert "lseek" not in server_stats(mnt)["features"]
    fd = os.open(mnt / "sparse", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == SPARSE.size
        assert _seek(fd, SPARSE.size, os.SEEK_DATA) == "ENXIO"
    finally:
        os.close(fd)
    shutil.copyfile(mnt / "sparse", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == (sparse_stack.lowers[0] / "sparse").read_bytes()
