"""Failures in the middle of a copy-up: the server killed, the upper full."""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from unionfs.api import is_mounted, unmount
from unionfs.layers.copyup import TMP_SUBDIR

StackFactory = Callable[..., Stack]
BIG = 1 << 30


def write_big(path: Path, size: int) -> None:
    """A file of real (non-sparse) data."""
    chunk = b"u" * (16 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)


def work_tmp(st: Stack) -> Path:
    return st.work / TMP_SUBDIR


def leftovers(st: Stack) -> list[str]:
    """What copy-ups left in the work dir (not the upper's format record, which stays)."""
    return [n for n in os.listdir(work_tmp(st)) if n != "upper-format"]


def wait_for_partial_copy(st: Stack, timeout: float = 30.0) -> None:
    """Until a partly written copy shows in the work dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir(work_tmp(st)):
            if entry.name != "upper-format" and entry.stat(follow_symlinks=False).st_size > 0:
                return
        time.sleep(0.005)
    raise AssertionError("no copy-up in progress showed in the work dir")


def test_kill_9_during_copy_up_then_remount(stack: StackFactory, mounts: Mounts) -> None:
    """SIGKILL in the middle of a 1 GiB copy-up: after a remount no partial file is visible,
    the lower is intact and the work dir's leftovers are gone."""
    st = stack({"small": "s"})
    write_big(st.lowers[0] / "big", BIG)
    mnt = mounts.unionfs(st)
    pid = mounts.handles[-1].pid
    opener = subprocess.Popen([sys.executable, "-c",
                               f"open({str(mnt / 'big')!r}, 'r+b')"], stderr=subprocess.PIPE)
    try:
        wait_for_partial_copy(st)
        os.kill(pid, signal.SIGKILL)
        assert opener.wait(timeout=30) != 0
    finally:
        if opener.poll() is None:
            opener.kill()
            opener.wait()
    mounts.unmount(mnt)
    unmount(mnt, lazy=True, missing_ok=True)
    assert leftovers(st), "the kill came too late to leave a partial copy"
    assert not os.path.lexists(st.upper / "big")
    mounts.unionfs(st)
    assert leftovers(st) == []
    assert os.stat(mnt / "big").st_size == BIG
    assert os.stat(st.lowers[0] / "big").st_size == BIG
    with open(mnt / "big", "rb") as f:
        f.seek(BIG - 4)
        assert f.read() == b"uuuu"


def test_enospc_during_copy_up(stack: StackFactory, mounts: Mounts,
                               tmpfs: Callable[..., Path]) -> None:
    """A copy-up that does not fit: ENOSPC, and lower, upper and work dir as they were."""
    st = stack({"small": "s"})
    write_big(st.lowers[0] / "big", 32 << 20)
    small = tmpfs("up", "8m")
    st = dataclasses.replace(st, upper=small / "upper", work=small / "work")
    st.upper.mkdir()
    mnt = mounts.unionfs(st)
    with pytest.raises(OSError) as exc:
        open(mnt / "big", "r+b")  # noqa: SIM115
    assert exc.value.errno == errno.ENOSPC
    assert os.listdir(st.upper) == []
    assert leftovers(st) == []
    assert os.stat(mnt / "big").st_size == 32 << 20
    record = (work_tmp(st) / "upper-format").stat().st_blocks * 512 // 4096  # kept
    assert os.statvfs(small).f_bfree == os.statvfs(small).f_blocks - record
    (mnt / "small").write_text("still writable")
    assert (st.upper / "small").read_text() == "still writable"
    assert is_mounted(mnt)


def test_enospc_during_directory_rename(stack: StackFactory, mounts: Mounts,
                                        tmpfs: Callable[..., Path]) -> None:
    """With the tree copy (-o redirect_dir=off; a redirect needs no room), a lower dir too
    big for the upper fails to move with ENOSPC; the union still shows it whole at its old
    name, and nothing at the new one, also after a remount."""
    files = {f"d/f{i}": "z" * (1 << 20) for i in range(6)}
    st = stack(files)
    small = tmpfs("up", "3m")
    st = dataclasses.replace(st, upper=small / "upper", work=small / "work")
    st.upper.mkdir()
    mnt = mounts.unionfs(st, extra=["redirect_dir=off"])
    with pytest.raises(OSError) as exc:
        os.rename(mnt / "d", mnt / "e")
    assert exc.value.errno == errno.ENOSPC
    for _ in range(2):
        assert os.listdir(mnt) == ["d"]
        assert sorted(os.listdir(mnt / "d")) == sorted(p.split("/")[1] for p in files)
        assert all(os.stat(mnt / p).st_size == 1 << 20 for p in files)
        assert leftovers(st) == []
        mounts.unmount(mnt)
        mounts.unionfs(st, extra=["redirect_dir=off"])


def test_enospc_on_write(stack: StackFactory, mounts: Mounts,
                         tmpfs: Callable[..., Path]) -> None:
    """A write that does not fit in the upper reports ENOSPC to the writer."""
    st = stack({})
    small = tmpfs("up", "2m")
    st = dataclasses.replace(st, upper=small / "upper", work=small / "work")
    st.upper.mkdir()
    mnt = mounts.unionfs(st)
    with pytest.raises(OSError) as exc, open(mnt / "big", "wb") as f:
        for _ in range(8):
            f.write(b"q" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    assert exc.value.errno == errno.ENOSPC
