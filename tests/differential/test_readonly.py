"""Read-only stacks: the kernel's overlayfs and unionfs mount the same lower layers (no upper)
and must show the same tree: names, types, modes, owners, sizes, content, link targets, xattrs,
nlink, and mtimes, exactly (they are the same files).

Stacks: the starting layers of the random runs, a stack with the kernel's "xattr whiteouts"
(an opaque=x directory holding empty files marked overlay.whiteout), and seeded random stacks
of three layers over a small name space, so that files, dirs, symlinks, whiteouts and opaque
dirs collide across layers. ``UNIONFS_DIFF_STACKS=N`` sets how many random stacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack, make_tree
from tests.differential import snapshot
from tests.differential.harness import Mismatch
from tests.differential.layers import BOTTOM, TOP, decorate, fix_times, random_stack

RANDOM_STACKS = int(os.environ.get("UNIONFS_DIFF_STACKS", "8"))


def compare_readonly(st: Stack, mounts: Mounts, what: str) -> None:
    """Mount ``st``'s lowers read-only with both, and compare the trees exactly."""
    kernel = Stack(st.base, st.lowers, st.upper, st.work, st.base / "kmnt")
    kernel.mnt.mkdir()
    kmnt = mounts.overlay(kernel, writable=False)
    umnt = mounts.unionfs(st, writable=False)
    differences = snapshot.diff(snapshot.take(str(kmnt)), snapshot.take(str(umnt)),
                                since_ns=None)
    if differences:
        raise Mismatch(f"{what}: read-only trees differ:\n  " + "\n  ".join(differences))


def test_starting_layers(stack: Callable[..., Stack], mounts: Mounts) -> None:
    st = stack(TOP, BOTTOM)
    decorate(st.lowers, st.upper)
    compare_readonly(st, mounts, "the starting layers")


def test_xattr_whiteouts(stack: Callable[..., Stack], mounts: Mounts) -> None:
    """Kernel 6.7+ whiteouts: an empty file with overlay.whiteout in an opaque=x dir."""
    st = stack({"d/kept": "top\n", "d/gone": ""}, {"d/gone": "hidden\n", "d/low": "low\n"})
    top = st.lowers[0]
    os.setxattr(top / "d", "trusted.overlay.opaque", b"x")
    os.setxattr(top / "d/gone", "trusted.overlay.whiteout", b"")
    for root in st.lowers:
        fix_times(root)
    compare_readonly(st, mounts, "xattr whiteouts")


@pytest.mark.parametrize("seed", range(RANDOM_STACKS))
def test_random_stack(seed: int, tmp_path: Path, mounts: Mounts) -> None:
    lowers = [make_tree(tmp_path / f"lower{i}", spec)
              for i, spec in enumerate(random_stack(seed))]
    for root in lowers:
        fix_times(root)
    (tmp_path / "mnt").mkdir()
    st = Stack(tmp_path, lowers, tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    compare_readonly(st, mounts, f"random stack {seed} (UNIONFS_DIFF_STACKS={seed + 1})")
