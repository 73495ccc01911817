"""Large writes of a streaming file run in threads while the server answers everyone else, and
a live commit waits for them, shown by ordering: a test hold (``UNIONFS_TEST_HOLD``, kind
``write``) stops such a write in its thread (a writer thread of unionfs.fuse.writes with the
extensions, a worker thread of SlowWork without them) until the test releases it.

The writes are O_DIRECT through the mount, so each ``dd`` block is one 1 MiB WRITE, answered
before the next is sent; a handle's writes go to threads once it has written 16 MiB
(``STREAMING``), so the 17th block is the first one held."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.test_cli import wait_until
from tests.integration.test_concurrency import (
    MODES,
    StackFactory,
    holding,
    many_held,
    others_answer,
    started,
    wait_until_held,
)
from unionfs.api import server_stats
from unionfs.fuse.ops import STREAMING
from unionfs.layers.pacing import WINDOW
from unionfs.store import Store

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
BLOCKS = STREAMING // MIB + 8  # the last 8 blocks are written in threads


def _direct_write(source: Path, target: Path, blocks: int = BLOCKS) -> list[str]:
    return ["dd", f"if={source}", f"of={target}", "bs=1M", f"count={blocks}", "oflag=direct",
            "status=none"]


def _stack(stack: StackFactory, tmp_path: Path, blocks: int = BLOCKS
           ) -> tuple[Stack, Path, bytes]:
    spec: dict[str, object] = {"tree/a": "a"}
    spec.update({f"other/f{i}": f"{i}" for i in range(100)})
    data = os.urandom(blocks * MIB)
    source = tmp_path / "source"
    source.write_bytes(data)
    return stack(spec), source, data


@pytest.mark.parametrize("extra", MODES)
def test_requests_complete_while_a_streaming_write_is_held(
        stack: StackFactory, mounts: Mounts, tmp_path: Path, extra: list[str]) -> None:
    st, source, data = _stack(stack, tmp_path)
    env = holding(tmp_path)
    directory = Path(env["UNIONFS_TEST_HOLD"])
    mnt = mounts.unionfs(st, env=env, extra=extra)
    if not extra:
        assert "writes" in server_stats(mnt)["features"]
    with many_held(directory, "write") as (held, release), \
            started(_direct_write(source, mnt / "new")) as writer:
        try:
            wait_until_held(held, 1, "writes")
            others_answer(mnt)
            assert writer.poll() is None  # still waiting for its 17th block
        finally:
            os.unlink(directory / "write.held")  # the later blocks pass the hold point
            os.write(release, b"x")
        assert writer.wait(60) == 0, writer.stderr
    assert (mnt / "new").read_bytes() == data
    assert (st.upper / "new").read_bytes() == data


@pytest.mark.parametrize("extra", MODES)
def test_a_live_commit_waits_for_a_held_write(stack: StackFactory, mounts: Mounts,
                                              tmp_path: Path, extra: list[str]) -> None:
    """A commit asked for while a write is in a thread switches the upper only once that
    write is done: the frozen upper holds exactly the blocks answered before the switch
    (the held one included, never half of it), and the writes after it land in the new
    upper, so the file through the mount is whole."""
    st, source, data = _stack(stack, tmp_path)
    env = holding(tmp_path)
    directory = Path(env["UNIONFS_TEST_HOLD"])
    mnt = mounts.unionfs(st, env=env, extra=extra)
    store = tmp_path / "store"
    commit = [sys.executable, "-m", "unionfs", "commit", "--store", str(store), str(mnt),
              "snap"]
    with many_held(directory, "write") as (held, release), \
            started(_direct_write(source, mnt / "new")) as writer:
        try:
            wait_until_held(held, 1, "writes")
            with started(commit) as committing:
                assert wait_until(lambda: server_stats(mnt)["gate"]["switch_pending"], 60)
                others_answer(mnt)  # the commit waits for the held write: no request does
                assert server_stats(mnt)["gate"]["sharers"] == 1
                assert committing.poll() is None and writer.poll() is None
                os.unlink(directory / "write.held")
                os.write(release, b"x")
                _, err = committing.communicate(timeout=60)
                assert committing.returncode == 0, err
        finally:
            if (directory / "write.held").exists():
                os.unlink(directory / "write.held")
                os.write(release, b"x")
        assert writer.wait(60) == 0, writer.stderr
    assert (mnt / "new").read_bytes() == data
    frozen = _committed_file(store, "snap", "new")
    assert frozen == data[:len(frozen)] and len(frozen) == (STREAMING // MIB + 1) * MIB


def _committed_file(store: Path, image: str, name: str) -> bytes:
    """``name`` as the image's one layer that has it holds it."""
    found = [path for layer in Store.open(store).image(image).layer_dirs
             if (path := Path(os.fsdecode(layer)) / name).exists()]
    assert len(found) == 1, found
    return found[0].read_bytes()


def test_writes_are_counted_and_an_error_is_the_callers(stack: StackFactory, mounts: Mounts,
                                                       tmp_path: Path) -> None:
    """With the extensions, WRITE is served by the writes feature (the count still grows);
    a write the upper's filesystem refuses (full) fails the writer with ENOSPC, as it would
    on the upper itself."""
    upper_fs = tmp_path / "small"
    upper_fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(upper_fs)],
                   check=True)
    base = stack({"a": "a"})
    st = Stack(base.base, base.lowers, upper_fs / "upper", upper_fs / "work", base.mnt)
    try:
        st.upper.mkdir()
        mnt = mounts.unionfs(st)
        stats = server_stats(mnt)
        assert "writes" in stats["features"]
        before = stats["requests"].get("write", 0)
        res = subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=1M",
                              "count=32", "oflag=direct"], capture_output=True, text=True)
        assert res.returncode != 0 and "No space left on device" in res.stderr
        assert server_stats(mnt)["requests"]["write"] > before
    finally:
        mounts.unmount(st.mnt)  # before its upper's filesystem can go
        subprocess.run(["umount", str(upper_fs)], check=True)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


def _dirty_pages(path: Path, offset: int, length: int) -> int:
    """Pages of ``path``'s range still dirty in the page cache (cachestat(2), Linux 6.5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = _Cachestat()
        if libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(_CachestatRange(offset, length)),
                        ctypes.byref(stat), 0) != 0:
            code = ctypes.get_errno()
            if code == errno.ENOSYS:
                pytest.skip("this kernel has no cachestat(2)")
            raise OSError(code, os.strerror(code))
        return stat.nr_dirty
    finally:
        os.close(fd)


_SYS_CACHESTAT = 451  # x86_64 and the generic table alike
# Paced: 4 windows written after the first streaming block (the kernel alone leaves them
# all dirty, pacing at most the last two).
PACED_BLOCKS = STREAMING // MIB + 1 + 4 * WINDOW // MIB
STREAMED = STREAMING + MIB, 4 * WINDOW


@pytest.mark.parametrize("extra", MODES)
def test_a_streaming_files_writeback_is_paced(stack: StackFactory, mounts: Mounts,
                                              tmp_path: Path, extra: list[str]) -> None:
    """Once a file streams, its data is on its way to the disk as it is written (as a
    copy-up's): of the part written after the first 16 MiB, at most the last two windows
    are still dirty when the writer is done, before any fsync; the kernel alone would
    leave all of it dirty for half a minute."""
    st, source, _ = _stack(stack, tmp_path, PACED_BLOCKS)
    mnt = mounts.unionfs(st, extra=extra)
    subprocess.run(_direct_write(source, mnt / "new", PACED_BLOCKS), check=True, timeout=60)
    assert _dirty_pages(st.upper / "new", *STREAMED) <= 2 * WINDOW // PAGE
    assert _dirty_pages(st.upper / "new", 0, STREAMING) > WINDOW // PAGE  # not paced yet


def test_with_volatile_a_streaming_file_is_left_to_the_kernel(
        stack: StackFactory, mounts: Mounts, tmp_path: Path) -> None:
    st, source, _ = _stack(stack, tmp_path, PACED_BLOCKS)
    mnt = mounts.unionfs(st, extra=["volatile"])
    subprocess.run(_direct_write(source, mnt / "new", PACED_BLOCKS), check=True, timeout=60)
    assert _dirty_pages(st.upper / "new", *STREAMED) > 2 * WINDOW // PAGE
