"""A cold sequential read goes in large requests: the mount's read-ahead window is widened.

The kernel gives a FUSE mount 128 KiB of read-ahead unless the server widens it (sysfs, as
root, before the INIT reply: unionfs.fuse.readahead); then a sequential read is served in
requests of up to 1 MiB (libfuse's max_pages).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Mounts, Stack
from unionfs.api import server_stats
from unionfs.fuse.readahead import READ_AHEAD_KB, mount_device

StackFactory = Callable[..., Stack]
SIZE = 32 << 20


def reads(mnt: Path) -> int:
    return int(server_stats(mnt)["requests"].get("read", 0))


def test_sequential_read_goes_in_large_requests(stack: StackFactory, mounts: Mounts) -> None:
    data = os.urandom(1 << 20) * (SIZE >> 20)
    st = stack({"big.bin": data})
    mnt = mounts.unionfs(st)
    device = mount_device(str(mnt))
    assert device is not None
    with open(f"/sys/class/bdi/{device}/read_ahead_kb") as f:
        assert int(f.read()) == READ_AHEAD_KB
    before = reads(mnt)
    with open(mnt / "big.bin", "rb") as f:
        got = f.read()
    assert got == data
    served = reads(mnt) - before
    assert 0 < served <= SIZE // (512 << 10), f"{served} read requests for {SIZE} bytes"


def test_mount_device_reads_escaped_paths(tmp_path: Path) -> None:
    """The mount table escapes spaces: a mount point with one is still found."""
    target = tmp_path / "with space"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        device = mount_device(str(target))
        assert device is not None
        assert device == f"{os.major(os.stat(target).st_dev)}:{os.minor(os.stat(target).st_dev)}"
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert mount_device(str(tmp_path / "nowhere")) is None
