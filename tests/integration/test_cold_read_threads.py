"""Cold reads wait for the disk in threads while the server answers everyone else, shown by
ordering: a test hold (``UNIONFS_TEST_HOLD``, kind ``read``) stops a cold read in its thread
(a reader thread of unionfs.fuse.reads with the extensions, a worker thread of SlowWork
without them) until the test releases it.

The reads are O_DIRECT through the mount, so each is one READ of the size asked for, and the
lower file's pages are dropped first, so the server's read must wait for the disk. A 1 MiB
read never waits on the trio thread (unionfs.engine.readwait)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.test_concurrency import (
    MODES,
    Hold,
    StackFactory,
    holding,
    many_held,
    others_answer,
    sigterm_while_held,
    started,
    wait_until_held,
)
from tests.pagecache import drop_from_cache
from unionfs.api import is_mounted, server_stats

MIB = 1 << 20
SIZE = 8 * MIB


def _stack_with_cold_file(stack: StackFactory) -> tuple[Stack, bytes]:
    """A stack whose lower has an 8 MiB file not in the page cache (and 100 other files)."""
    data = os.urandom(SIZE)
    spec: dict[str, object] = {"big": data, "tree/a": "a", "tree/sub/b": "b"}
    spec.update({f"other/f{i}": f"{i}" for i in range(100)})
    st = stack(spec)
    fd = os.open(st.lowers[0] / "big", os.O_RDONLY)
    try:
        drop_from_cache(fd, SIZE)
    finally:
        os.close(fd)
    return st, data


def _direct_read(source: Path, mib: int, out: Path) -> list[str]:
    """dd of 1 MiB at ``mib`` MiB into ``out``, O_DIRECT: one READ of 1 MiB."""
    return ["dd", f"if={source}", f"of={out}", "bs=1M", "count=1", f"skip={mib}",
            "iflag=direct", "status=none"]


@pytest.mark.parametrize("extra", MODES)
def test_requests_complete_while_a_cold_read_is_held(stack: StackFactory, mounts: Mounts,
                                                     tmp_path: Path, extra: list[str]) -> None:
    st, data = _stack_with_cold_file(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "read")
    mnt = mounts.unionfs(st, env=env, extra=extra)
    out = tmp_path / "part"
    with started(_direct_read(mnt / "big", 3, out)) as reader:
        assert hold.wait_held() == "read"
        others_answer(mnt)  # stats, a cold listing, a small read of another file
        assert reader.poll() is None  # still waiting for its read
        hold.release()
        assert reader.wait(30) == 0, reader.stderr
    assert out.read_bytes() == data[3 * MIB:4 * MIB]


@pytest.mark.parametrize("extra", MODES)
def test_two_cold_reads_wait_at_once(stack: StackFactory, mounts: Mounts, tmp_path: Path,
                                     extra: list[str]) -> None:
    """Two readers of one cold file are both in their threads at the same time (the reads
    overlap: neither waits for the other), and each gets its own bytes."""
    st, data = _stack_with_cold_file(stack)
    env = holding(tmp_path)
    directory = Path(env["UNIONFS_TEST_HOLD"])
    mnt = mounts.unionfs(st, env=env, extra=extra)
    outs = [tmp_path / "first", tmp_path / "second"]
    with many_held(directory, "read") as (held, release), ExitStack() as running:
        readers = [running.enter_context(started(_direct_read(mnt / "big", mib, out)))
                   for mib, out in zip((1, 6), outs, strict=True)]
        try:
            wait_until_held(held, 2, "cold reads")
            assert all(r.poll() is None for r in readers)
        finally:
            os.unlink(directory / "read.held")
            os.write(release, b"xx")
        assert all(r.wait(30) == 0 for r in readers), [r.stderr for r in readers]
    assert outs[0].read_bytes() == data[MIB:2 * MIB]
    assert outs[1].read_bytes() == data[6 * MIB:7 * MIB]


def test_reads_are_counted_and_served_in_reader_threads(stack: StackFactory, mounts: Mounts,
                                                       tmp_path: Path) -> None:
    """With the extensions, READ is served by the reads feature (the count still grows);
    a whole cold file read through the mount is the lower's bytes, its last part short."""
    data = os.urandom(SIZE + 12345)
    st = stack({"odd": data})
    mnt = mounts.unionfs(st)
    stats = server_stats(mnt)
    assert "reads" in stats["features"]
    before = stats["requests"].get("read", 0)
    assert (mnt / "odd").read_bytes() == data
    assert server_stats(mnt)["requests"]["read"] > before


def test_sigterm_during_a_cold_read_unmounts_cleanly(stack: StackFactory, mounts: Mounts,
                                                     tmp_path: Path) -> None:
    """The reader threads are stopped before the session goes: a read in flight at SIGTERM
    is answered first (here released once the server took the signal), then the server
    unmounts and exits 0, logging no error."""
    st, _ = _stack_with_cold_file(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "read")
    mnt = mounts.unionfs(st, env=env)
    handle = mounts.handles[-1]
    log_file = mounts.log_files[-1]
    with started(_direct_read(mnt / "big", 2, tmp_path / "part")) as reader:
        assert hold.wait_held() == "read"
        sigterm_while_held(handle, log_file, hold)
        reader.wait(30)
    assert not is_mounted(mnt)
    assert "still in a read" not in log_file.read_text()
