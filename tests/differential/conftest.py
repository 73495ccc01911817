"""Fixtures of the differential tests: twin stacks, seeds, and the kernel's capabilities.

Seeds: ``UNIONFS_DIFF_SEEDS=N`` runs seeds 0..N-1 (default: a few, for CI);
``UNIONFS_DIFF_SEED=S`` runs just seed S (to replay a failure); ``UNIONFS_DIFF_OPS=K`` sets
the number of calls per seed. ``UNIONFS_DIFF_STACKS=N``: random read-only stacks;
``UNIONFS_DIFF_ROOTLESS_SEEDS=N``: seeds of the rootless run (``test_rootless.py``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.conftest import Stack
from tests.differential.layers import BOTTOM, TOP, decorate

DEFAULT_SEEDS = 3
DEFAULT_OPS = 120


def seeds() -> list[int]:
    """The seeds this run covers (see the module docstring)."""
    one = os.environ.get("UNIONFS_DIFF_SEED")
    if one:
        return [int(one)]
    return list(range(int(os.environ.get("UNIONFS_DIFF_SEEDS", DEFAULT_SEEDS))))


def ops_per_seed() -> int:
    return int(os.environ.get("UNIONFS_DIFF_OPS", DEFAULT_OPS))


@dataclass
class Twins:
    """Two identical copies of the starting layers: one for the kernel, one for unionfs."""

    kernel: Stack
    unionfs: Stack


@pytest.fixture
def twins(stack: Callable[..., Stack]) -> Twins:
    """The starting layers (TOP over BOTTOM, empty upper), twice."""
    made = []
    for name in ("kernel", "unionfs"):
        st = stack(TOP, BOTTOM, name=name)
        decorate(st.lowers, st.upper)
        made.append(st)
    return Twins(*made)


@pytest.fixture(scope="session", autouse=True)
def _kernel_overlay() -> None:
    """The oracle must be there: fail (never skip) when it is not."""
    assert os.geteuid() == 0, "the differential tests mount the kernel's overlayfs: run as root"
    with open("/proc/filesystems", encoding="ascii") as f:
        if "overlay" not in f.read():
            subprocess.run(["modprobe", "overlay"], check=False)
    with open("/proc/filesystems", encoding="ascii") as f:
        assert "overlay" in f.read(), "the kernel has no overlayfs"
