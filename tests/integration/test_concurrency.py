"""Requests do not wait behind another request's slow I/O, shown by ordering, not timing.

The server's test-only hook (``UNIONFS_TEST_HOLD``, see unionfs.engine.slow) holds a copy-up
or an fsync in its worker thread until the test releases it; while it is held, requests on
other nodes must complete. A server stalled behind the held work would never answer them:
the subprocess timeouts below only turn such a hang into a failure, they synchronise nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.test_cli import wait_until
from unionfs.api import MountHandle, is_mounted, server_stats
from unionfs.engine.slow import META_THREADS, THREADS

StackFactory = Callable[..., Stack]
BIG = 4 << 20  # a lower file with real data (copy_file_range, chunked: interruptible)
MODES = [pytest.param([], id="extensions"), pytest.param(["no_extensions"], id="plain")]


class Hold:
    """The FIFOs of one kind of slow work (``copy-up``, ``fsync``) in a hold directory."""

    def __init__(self, directory: Path, kind: str) -> None:
        self.held = directory / f"{kind}.held"
        self.release_fifo = directory / f"{kind}.release"
        os.mkfifo(self.held)
        os.mkfifo(self.release_fifo)

    def wait_held(self, timeout: float = 60.0) -> str:
        """Block until a worker thread has reached the hold (it writes its kind); a hold
        that is never reached fails the test instead of hanging it."""
        fd = os.open(self.held, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with select.epoll() as poll:
                poll.register(fd, select.EPOLLIN)
                assert poll.poll(timeout), f"{self.held.name}: the hold was never reached"
            return os.read(fd, 64).decode().strip()
        finally:
            os.close(fd)

    def release(self) -> None:
        with open(self.release_fifo, "w") as fifo:
            fifo.write("x")  # one byte releases one held thread


def holding(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "hold"
    directory.mkdir()
    return {"UNIONFS_TEST_HOLD": str(directory)}


@contextmanager
def many_held(directory: Path, kind: str) -> Iterator[tuple[int, int]]:
    """The FIFOs of a hold point at which several threads are held at once, opened: each
    held thread writes a line to the first, and each byte written to the second releases
    one. Both are open read-write: no hang-up between two writers, and opening never
    blocks."""
    for end in ("held", "release"):
        os.mkfifo(directory / f"{kind}.{end}")
    held = os.open(directory / f"{kind}.held", os.O_RDWR | os.O_NONBLOCK)
    release = os.open(directory / f"{kind}.release", os.O_RDWR)
    try:
        yield held, release
    finally:
        os.close(held)
        os.close(release)


def wait_until_held(held: int, count: int, what: str) -> None:
    """Wait (60 s at most per line) until ``count`` threads say they are held."""
    lines = b""
    with select.epoll() as poll:
        poll.register(held, select.EPOLLIN)
        while lines.count(b"\n") < count:
            assert poll.poll(60), f"only {lines.count(10)} {what} were held"
            lines += os.read(held, 4096)


def quick(*argv: str) -> str:
    """Run a command that must complete while slow work is held (30 s: a hang fails)."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return res.stdout


def big_stack(stack: StackFactory) -> Stack:
    spec: dict[str, object] = {"big": os.urandom(BIG), "tree/a": "a", "tree/sub/b": "b"}
    spec.update({f"other/f{i}": f"{i}" for i in range(100)})
    return stack(spec)


@contextmanager
def started(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def others_answer(mnt: Path) -> None:
    """stat and ls -l of nodes unrelated to the held work complete. (An unlink or rename
    that waits holds its directory's lock in the kernel: a name there that the kernel has not
    cached yet cannot be looked up meanwhile, on any filesystem. Call this once before.)"""
    listing = quick("ls", "-l", str(mnt / "other"))
    assert len(listing.splitlines()) == 101  # "total" and 100 files
    assert quick("stat", "-c", "%s", str(mnt / "other" / "f7")).strip() == "1"
    assert quick("cat", str(mnt / "tree" / "a")) == "a"


@pytest.mark.parametrize("extra", MODES)
def test_requests_complete_while_a_copy_up_is_held(stack: StackFactory, mounts: Mounts,
                                                   tmp_path: Path, extra: list[str]) -> None:
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "copy-up")
    mnt = mounts.unionfs(st, env=env, extra=extra)
    with started(["sh", "-c", f"echo x >> {mnt / 'big'}"]) as writer:
        assert hold.wait_held() == "copy-up"
        others_answer(mnt)
        assert writer.poll() is None  # still waiting for its copy-up
        hold.release()
        assert writer.wait(30) == 0, writer.stderr
    data = (mnt / "big").read_bytes()
    assert len(data) == BIG + 2 and data.endswith(b"x\n")
    assert (st.upper / "big").read_bytes() == data
    assert set(os.listdir(st.work / "unionfs-tmp")) <= {"whiteout", "upper-format"}


def test_unlink_during_a_copy_up_gives_the_kernels_result(stack: StackFactory, mounts: Mounts,
                                                          tmp_path: Path) -> None:
    """The kernel's overlayfs runs an unlink after the copy-up of the same file: the open
    succeeds (its fd writes to the copy), then the name is gone and a whiteout hides the
    lower file. unionfs gives the same, and nothing is left in the work dir."""
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "copy-up")
    mnt = mounts.unionfs(st, env=env)
    with started(["sh", "-c", f"echo x >> {mnt / 'big'}"]) as writer:
        hold.wait_held()
        others_answer(mnt)
        with started(["rm", str(mnt / "big")]) as remover:
            others_answer(mnt)
            hold.release()
            assert writer.wait(30) == 0, writer.stderr
            assert remover.wait(30) == 0, remover.stderr
    assert not (mnt / "big").exists()
    st_up = os.lstat(st.upper / "big")
    assert st_up.st_rdev == 0 and (st_up.st_mode & 0o170000) == 0o020000  # a whiteout
    assert len((st.lowers[0] / "big").read_bytes()) == BIG
    assert set(os.listdir(st.work / "unionfs-tmp")) <= {"whiteout", "upper-format"}


def test_rename_during_a_copy_up_waits_for_it(stack: StackFactory, mounts: Mounts,
                                              tmp_path: Path) -> None:
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "copy-up")
    mnt = mounts.unionfs(st, env=env)
    with started(["sh", "-c", f"echo x >> {mnt / 'big'}"]) as writer:
        hold.wait_held()
        others_answer(mnt)
        with started(["mv", str(mnt / "big"), str(mnt / "moved")]) as mover:
            others_answer(mnt)
            hold.release()
            assert writer.wait(30) == 0, writer.stderr
            assert mover.wait(30) == 0, mover.stderr
    assert (mnt / "moved").read_bytes().endswith(b"x\n")
    assert not (mnt / "big").exists()
    assert (st.upper / "moved").read_bytes() == (mnt / "moved").read_bytes()


def test_requests_complete_while_an_fsync_is_held(stack: StackFactory, mounts: Mounts,
                                                  tmp_path: Path) -> None:
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "fsync")
    mnt = mounts.unionfs(st, env=env)
    code = ("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644); "
            "os.write(fd, b'data'); os.fsync(fd); os.close(fd)")
    with started([sys.executable, "-c", code, str(mnt / "new")]) as syncer:
        assert hold.wait_held() == "fsync"
        others_answer(mnt)
        assert syncer.poll() is None
        hold.release()
        assert syncer.wait(30) == 0, syncer.stderr
    assert (st.upper / "new").read_bytes() == b"data"


def test_metadata_completes_while_every_data_thread_is_held(stack: StackFactory,
                                                           mounts: Mounts,
                                                           tmp_path: Path) -> None:
    """More fsyncs than there are data worker threads, and than the request loop once had
    worker tasks (8): THREADS of them held in their threads, the rest queued for one. A
    cold listing, lookups and stats of other nodes still complete: directory reads and
    stats have worker threads of their own, and requests are still read."""
    syncers_n = THREADS + 8
    st = big_stack(stack)
    env = holding(tmp_path)
    directory = Path(env["UNIONFS_TEST_HOLD"])
    mnt = mounts.unionfs(st, env=env)
    code = ("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644); "
            "os.write(fd, b'data'); os.fsync(fd); os.close(fd)")
    with many_held(directory, "fsync") as (held, release), ExitStack() as running:
        syncers = [running.enter_context(started([sys.executable, "-c", code,
                                                  str(mnt / f"new{i}")]))
                   for i in range(syncers_n)]
        try:
            wait_until_held(held, THREADS, "fsyncs")
            assert wait_until(lambda: server_stats(mnt)["slow_in_flight"] == syncers_n)
            listing = quick("ls", "-l", str(mnt / "other"))  # a cold directory
            assert len(listing.splitlines()) == 101
            assert quick("stat", "-c", "%s", str(mnt / "other" / "f7")).strip() == "1"
            assert quick("stat", "-c", "%F", str(mnt / "tree" / "sub" / "b")).strip() == (
                "regular file")
            assert all(s.poll() is None for s in syncers)  # all still in their fsync
        finally:
            os.unlink(directory / "fsync.held")  # the queued ones are not held
            os.write(release, b"x" * syncers_n)
        assert all(s.wait(30) == 0 for s in syncers), [s.stderr for s in syncers]
    assert all((st.upper / f"new{i}").read_bytes() == b"data" for i in range(syncers_n))


def test_requests_complete_during_a_tree_copy_up(stack: StackFactory, mounts: Mounts,
                                                 tmp_path: Path) -> None:
    """The first rename of a merged directory copies its files up in worker threads (where
    it copies the tree: with redirect_dir=on it moves the directory alone)."""
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "copy-up")
    mnt = mounts.unionfs(st, env=env, extra=["redirect_dir=off"])
    others_answer(mnt)
    with started(["mv", str(mnt / "tree"), str(mnt / "tree2")]) as mover:
        for _ in range(2):  # tree/a and tree/sub/b, one after the other
            hold.wait_held()
            others_answer(mnt)
            assert mover.poll() is None
            hold.release()
        assert mover.wait(30) == 0, mover.stderr
    assert (mnt / "tree2" / "sub" / "b").read_text() == "b"
    assert not (mnt / "tree").exists()


def sigterm_while_held(handle: MountHandle, log_file: Path, hold: Hold) -> None:
    """SIGTERM the server, release the held work once the server has taken the signal, and
    check that the server then exits 0."""
    os.kill(handle.pid, signal.SIGTERM)
    assert wait_until(lambda: "signal 15: unmounting" in log_file.read_text())
    hold.release()
    assert handle.process.wait(30) == 0


def test_sigterm_during_a_copy_up_unmounts_and_leaves_nothing(stack: StackFactory,
                                                              mounts: Mounts,
                                                              tmp_path: Path) -> None:
    st = big_stack(stack)
    env = holding(tmp_path)
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "copy-up")
    mnt = mounts.unionfs(st, env=env)
    handle = mounts.handles[-1]
    log_file = mounts.log_files[-1]
    with started(["sh", "-c", f"echo x >> {mnt / 'big'}"]) as writer:
        hold.wait_held()
        # Released once the server has taken the signal: the copy then goes on, sees the
        # stop at its first chunk and gives up.
        sigterm_while_held(handle, log_file, hold)
        writer.wait(30)
    assert not is_mounted(mnt)
    assert not (st.upper / "big").exists()
    assert set(os.listdir(st.work / "unionfs-tmp")) <= {"whiteout", "upper-format"}
    assert len((st.lowers[0] / "big").read_bytes()) == BIG


def test_stats_report_no_leftovers_after_concurrent_work(stack: StackFactory, mounts: Mounts,
                                                         tmp_path: Path) -> None:
    st = big_stack(stack)
    mnt = mounts.unionfs(st)
    before = server_stats(mnt)
    procs = [subprocess.Popen(["sh", "-c", f"echo {i} >> {mnt / 'other' / f'f{i}'}; "
                               f"cat {mnt / 'big'} > /dev/null; ls -l {mnt / 'other'} >/dev/null"])
             for i in range(6)]
    assert all(p.wait(60) == 0 for p in procs)
    after = server_stats(mnt)
    assert after["open_files"] == 0 and after["open_dirs"] == 0
    assert after["slow_in_flight"] == 0 and after["entry_locks"] == 0
    def uncached(stats: dict[str, int]) -> int:  # fds but the layers' directory cache
        return stats["fds"] - stats["cached_dir_fds"]

    assert uncached(after) <= uncached(before)
    # trio's idle worker threads
    assert after["threads"] <= before["threads"] + THREADS + META_THREADS
