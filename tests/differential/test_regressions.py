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
    # Renaming over an existing empty upper dir listed it through an O_PATH fd: EBADF.
    "rename over an empty upper dir": [Op("mkdir", "n1", (0o755,)), Op("mkdir", "n2", (0o700,)),
                                       Op("rename", "n1", ("n2", 0)),
                                       Op("mkdir", "n3", (0o755,)),
                                       Op("rename", "dir_over_file", ("n3", 0))],
    # A directory renamed onto a whiteout in the upper: ENOTDIR from rename(2).
    "rename a dir onto a whiteout": [Op("unlink", "f1"), Op("rename", "l1only/y", ("f1", 0)),
                                     Op("unlink", "d/c"), Op("mkdir", "n1", (0o755,)),
                                     Op("rename", "n1", ("d/c", 0))],
    # truncate() to the same size changed mtime on disk but not in the mount (until remount).
    "truncate to the same size": [Op("truncate", "d/a", (14,)), Op("truncate", "f1", (500,))],
    # Pages written back after the kernel stamped mtime re-stamped it on disk.
    "mtime after writes": [op for i in range(20) for op in (
        Op("create", f"w{i}", (0o644,)), Op("write", f"w{i}", (0, b"x" * 100, False)))],
    # XATTR_REPLACE failing on a lower dir: the kernel copied it up (nlink 1 then).
    "setxattr flags on a lower dir": [Op("setxattr", "l1only/y", ("user.a", b"v", XATTR_REPLACE)),
                                      Op("stat", "l1only/y")],
    # Renaming over one name of a hard-linked file orphaned its node: the other name ENOENT.
    "rename over a hard link": [Op("link", "l1only/y/z", ("n1",)), Op("rename", "f0", ("n1", 0)),
                                Op("setxattr", "l1only/y/z", ("user.b", b"v", 0)),
                                Op("link", "d/c", ("d/n2",)), Op("stat", "d/n2"),
                                Op("rename", "f1", ("d/n2", 0)), Op("chmod", "d/c", (0o600,))],
    # Moving a dir that held whiteouts: removing them stamped the moved dir with "now".
    "move a dir holding whiteouts": [Op("unlink", "l1only/y/z"),
                                     Op("utimens", "l1only/y", ("omit", 10**18, True)),
                                     Op("rename", "l1only/y", ("opq/c", 0))],
    # Copy-ups moved or linked into other directories (which must then be marked impure,
    # or the remount numbers them by their upper inodes).
    "copy-ups moved and linked elsewhere": [Op("write", "d/a", (0, b"x", False)),
                                            Op("mkdir", "n1", (0o755,)),
                                            Op("rename", "d/a", ("n1/moved", 0)),
                                            Op("mkdir", "n2", (0o755,)),
                                            Op("link", "f0", ("n2/linked",)),
                                            Op("rename", "d/c", ("n3", 0))],
    # Exchanging a lower dir with a file.
    "exchange a lower dir and a file": [Op("rename", "l1only", ("f0", RENAME_EXCHANGE))],
}


# Each case twice: renames of lower directories with redirects (the kernel at
# redirect_dir=on), and as a tree copy (unionfs at redirect_dir=off; the kernel's EXDEV is
# then done by hand, as mv does).
MODES = {"redirect": ("redirect_dir=on", ()), "tree-copy": ("", ("redirect_dir=off",))}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str, mode: str, twins: Twins, mounts: Mounts) -> None:
    ops = CASES[name]
    kernel_opts, unionfs_opts = MODES[mode]
    history = run_differential(f"case {name!r} ({mode})", lambda files, dirs: ops, twins,
                               mounts, kernel_opts=kernel_opts, unionfs_opts=unionfs_opts)
    assert len(history) == len(ops)
