"""Attribute changes and stats of a file while it is open: what `tar -x` does to every file it
makes (write, then utimens, chown and chmod by path, then close). The server serves them
through the file's open upper fd; the result must be the kernel overlayfs's, and a lower file
open for reading must never be changed through its fd."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack

StackFactory = Callable[..., Stack]
TIMES = (1_111_111_111_123_456_789, 1_222_222_222_987_654_321)


def attributes(path: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size


def untar_one(mnt: Path, name: str, mode: int) -> tuple[int, int, int, int, int]:
    """tar's order for one file, the stat taken while it is still open."""
    path = mnt / "d" / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * 3000)
        os.utime(path, ns=TIMES)
        os.chown(path, 1234, 5678)
        os.chmod(path, mode)
        seen = attributes(path)
    finally:
        os.close(fd)
    assert attributes(path) == seen
    return seen


def test_tars_sequence_on_an_open_file_gives_the_kernels_result(
        stack: StackFactory, mounts: Mounts) -> None:
    results = []
    for name, serve in (("k", mounts.overlay), ("u", mounts.unionfs)):
        st = stack({"d/old": "lower"}, name=name)
        mnt = serve(st)
        seen = [untar_one(mnt, "plain", 0o644), untar_one(mnt, "setuid", 0o4755)]
        mounts.unmount(mnt)
        for file_name, got in zip(("plain", "setuid"), seen, strict=True):
            assert attributes(st.upper / "d" / file_name) == got
        results.append(seen)
    kernel, ours = results
    assert ours == kernel
    assert stat.S_IMODE(ours[1][0]) == 0o4755 and ours[0][1:4] == (1234, 5678, TIMES[1])


def test_chown_of_an_open_setuid_file_clears_the_bit_as_the_kernel_does(
        stack: StackFactory, mounts: Mounts) -> None:
    results = []
    for name, serve in (("k", mounts.overlay), ("u", mounts.unionfs)):
        st = stack({"d/old": "lower"}, name=name)
        mnt = serve(st)
        path = mnt / "d" / "f"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o6755)
        try:
            os.chmod(path, 0o6755)
            os.chown(path, 42, 43)  # a chown of a regular file drops set-uid and set-gid
            results.append(attributes(path)[:3])
        finally:
            os.close(fd)
        mounts.unmount(mnt)
        assert attributes(st.upper / "d" / "f")[:3] == results[-1]
    assert results[1] == results[0]
    assert results[1] == (stat.S_IFREG | 0o755, 42, 43)


def test_a_lower_file_open_for_reading_is_copied_up_never_changed(
        stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"d/f": "lower data"})
    lower = st.lowers[0] / "d" / "f"
    before = attributes(lower)
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "d" / "f", os.O_RDONLY)
    try:
        os.chmod(mnt / "d" / "f", 0o600)
        os.utime(mnt / "d" / "f", ns=TIMES)
        assert stat.S_IMODE(os.stat(mnt / "d" / "f").st_mode) == 0o600
        assert os.pread(fd, 100, 0) == b"lower data"
    finally:
        os.close(fd)
    mounts.unmount(mnt)
    assert attributes(lower) == before
    copy = st.upper / "d" / "f"
    assert stat.S_IMODE(os.lstat(copy).st_mode) == 0o600
    assert os.lstat(copy).st_mtime_ns == TIMES[1]
    assert copy.read_bytes() == b"lower data"


def test_a_read_only_union_refuses_changes_of_an_open_file(
        stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"f": "lower data"})
    lower = st.lowers[0] / "f"
    before = attributes(lower)
    mnt = mounts.unionfs(st, writable=False)
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        for change in (lambda: os.chmod(mnt / "f", 0o600),
                       lambda: os.utime(mnt / "f", ns=TIMES),
                       lambda: os.chown(mnt / "f", 7, 7)):
            with pytest.raises(OSError) as failed:
                change()
            assert failed.value.errno == errno.EROFS
    finally:
        os.close(fd)
    assert attributes(lower) == before


def test_stat_of_an_open_file_sees_changes_made_through_its_other_name(
        stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"d/old": "lower"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "d" / "a", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"12345")
        os.link(mnt / "d" / "a", mnt / "d" / "b")
        os.chmod(mnt / "d" / "b", 0o640)
        os.truncate(mnt / "d" / "b", 2)
        got = os.stat(mnt / "d" / "a")
        assert (stat.S_IMODE(got.st_mode), got.st_size, got.st_nlink) == (0o640, 2, 2)
        assert os.fstat(fd).st_ino == got.st_ino
    finally:
        os.close(fd)
