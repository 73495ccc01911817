"""Short call lists that once made unionfs and the kernel's overlayfs disagree.

Each case is the smallest list that showed one bug found by the random runs; the full check of
``harness.run_differential`` applies (results, trees, remount, kernel over unionfs's upper).
"""

from __future__ import annotations

import pytest

from tests.conftest import Mounts
from tests.differential.conftest import Twins
from tests.differential.gen import RENAME_EXCHANGE, XATTR_REPLACE, Op
from tests.differential.harness import run_differential

CASES: dict[str, list[Op]] = {
    # A merged dir opaque in the top lower reported nlink 1 until it was listed.
    "nlink of an opaque dir before it is listed": [Op("stat", "opq")],
    # Copying a file up stamped its parent directories with the time of the copy.
    "copy-up keeps the parents' mtimes": [Op("write", "d/sub/deep", (0, b"x", False)),
                                          Op("setxattr", "d/c", ("user.a", b"v", 0))],
    # link() into a directory that only a lower layer had: ENOENT.
    "link into a lower-only directory": [Op("link", "f0", ("l1only/n1",))],
    # Pages written back after the kernel stamped mtime re-stamped it on disk.
    "mtime after writes": [op for i in range(20) for op in (
        Op("create", f"w{i}", (0o644,)), Op("write", f"w{i}", (0, b"x" * 100, False)))],
}


@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str, twins: Twins, mounts: Mounts) -> None:
    ops = CASES[name]
    history = run_differential(f"case {name!r}", lambda files, dirs: ops, twins, mounts)
    assert len(history) == len(ops)
