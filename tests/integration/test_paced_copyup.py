"""What the server does so that other processes' requests stay quick while one process
copies up or writes a big file (issue 11's latency rows, benchmarks/README.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from tests.conftest import Mounts, Stack
from unionfs.api import server_stats
from unionfs.fuse.serve import SWITCH_INTERVAL
from unionfs.layers.pacing import WINDOW

StackFactory = Callable[..., Stack]


def test_server_threads_take_turns_at_the_gil_often(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    mnt = mounts.unionfs(stack({"f": "x"}))
    assert server_stats(mnt)["switch_interval"] == SWITCH_INTERVAL
    assert sys.getswitchinterval() > SWITCH_INTERVAL  # Python's default: 5 ms


def test_paced_copy_up_of_a_file_with_holes_keeps_every_byte(stack: StackFactory,
                                                             mounts: Mounts) -> None:
    """Several pacing windows written back by the copy itself, a hole between them and a
    tail shorter than a window."""
    head, tail = os.urandom(3 * WINDOW + 12345), os.urandom(WINDOW // 3)
    st = stack({})
    big = st.lowers[0] / "big"
    with open(big, "wb") as f:
        f.write(head)
        f.seek(6 * WINDOW)
        f.write(tail)
    expected = big.read_bytes() + b"appended\n"
    mnt = mounts.unionfs(st)
    with open(mnt / "big", "ab") as f:
        f.write(b"appended\n")
    assert (st.upper / "big").read_bytes() == expected
    assert (mnt / "big").read_bytes() == expected
    assert os.stat(st.upper / "big").st_blocks * 512 < len(expected)  # the hole stayed
