"""The differential tests inside a user namespace (run by ``test_rootless.py``, not directly).

Here uid 0 is only root of a new user namespace: no capability over the real machine, so
``trusted.*`` xattrs cannot be written and ``mknod`` makes nothing but whiteouts. unionfs must
notice, write ``user.overlay.opaque`` and char 0/0 whiteouts, and agree with the kernel's
overlayfs mounted with ``userxattr`` (the kernel's own rootless mode).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.differential.conftest import Twins
from tests.differential.gen import Op, generate
from tests.differential.harness import run_differential
from tests.differential.layers import BOTTOM, TOP, decorate, unprivileged

KERNEL_OPTS = "userxattr"

FIXED_CALLS = [
    Op("unlink", "f1"),  # a whiteout
    Op("unlink", "d/a"),  # a whiteout in a copied-up merged dir
    Op("unlink", "l1only/y/z"), Op("rmdir", "l1only/y"), Op("mkdir", "l1only/y", (0o755,)),
    Op("rename", "d/sub", ("moved", 0)),  # unionfs copies the tree up and marks it opaque
    Op("write", "opq/shown", (0, b"changed", False)),
    Op("setxattr", "x_attrs", ("user.new", b"v", 0)),
    Op("symlink", "moved/link", ("deep",)),
    Op("mkfifo", "l1only/y/fifo", (0o600,)),
    Op("chmod", "f0", (0o600,)),
    Op("utimens", "f0", (1_000_000_000_000_000_000, "omit", False)),
]


@pytest.fixture
def rootless_twins(stack: Callable[..., Stack]) -> Twins:
    """The starting layers, built without privileges, twice."""
    made = []
    for name in ("kernel", "unionfs"):
        st = stack(unprivileged(TOP), BOTTOM, name=name)
        decorate(st.lowers, st.upper, rootless=True)
        made.append(st)
    return Twins(*made)


def test_unprivileged(tmp_path: Path) -> None:
    """We really are in a user namespace: trusted.* xattrs are refused."""
    with open("/proc/self/uid_map", encoding="ascii") as f:
        assert f.read().split() != ["0", "0", "4294967295"]
    with pytest.raises(PermissionError):
        os.setxattr(tmp_path, "trusted.overlay.probe", b"1")


def test_fixed_calls(rootless_twins: Twins, mounts: Mounts) -> None:
    run_differential("rootless fixed calls", lambda files, dirs: FIXED_CALLS, rootless_twins,
                     mounts, kernel_opts=KERNEL_OPTS)
    upper = rootless_twins.unionfs.upper
    for opaque in ("l1only/y", "moved"):
        assert os.getxattr(upper / opaque, "user.overlay.opaque") == b"y", opaque
    for gone in ("f1", "d/a"):
        st = os.lstat(upper / gone)
        assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0), gone


# A hard link of a lower symlink (whose copy cannot record its origin: a symlink takes no
# user.* xattr) looked up again under its first name got a second inode number: the kernel
# then held two inodes for one file, and the link count stayed 2 under the other name
# once the first name was replaced (or unlinked).
SYMLINK_LINK_CALLS = [
    Op("mkdir", "opq/n1", (0o755,)), Op("symlink", "opq/b", ("n1",)),
    Op("link", "l0link", ("opq/n1/a",)), Op("stat", "l0link"), Op("stat", "opq/n1/a"),
    Op("rename", "opq/b", ("l0link", 0)), Op("stat", "opq/n1/a"),
    Op("link", "l1link", ("n2",)), Op("stat", "l1link"), Op("unlink", "l1link"),
    Op("stat", "n2"),
]


def test_hard_links_of_lower_symlinks(rootless_twins: Twins, mounts: Mounts) -> None:
    run_differential("rootless hard links of lower symlinks",
                     lambda files, dirs: SYMLINK_LINK_CALLS, rootless_twins, mounts,
                     kernel_opts=KERNEL_OPTS)


# Nested overlays in userxattr mode (Linux >= 6.7): user.overlay.* set through the union
# is stored one level down, shown unescaped, and the kernel reads it back the same way.
NESTED_USER_CALLS = [
    Op("setxattr", "f0", ("user.overlay.nested", b"v1", 0)),
    Op("getxattr", "f0", ("user.overlay.nested",)), Op("listxattr", "f0"),
    Op("setxattr", "d", ("user.overlay.opaque", b"y", 0)), Op("listdir", "d"),
    Op("setxattr", "l1only/y/z", ("user.overlay.nested", b"v2", 0)),
    Op("removexattr", "f0", ("user.overlay.nested",)), Op("listxattr", "f0"),
]


def test_user_overlay_xattrs_are_escaped(rootless_twins: Twins, mounts: Mounts) -> None:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) < (6, 7):
        pytest.skip(f"kernel {os.uname().release} predates overlay xattr escaping (6.7)")
    run_differential("rootless user.overlay.* xattrs", lambda files, dirs: NESTED_USER_CALLS,
                     rootless_twins, mounts, kernel_opts=KERNEL_OPTS)
    upper = rootless_twins.unionfs.upper
    assert os.getxattr(upper / "d", "user.overlay.overlay.opaque") == b"y"
    assert os.getxattr(upper / "l1only/y/z", "user.overlay.overlay.nested") == b"v2"
    assert "user.overlay.opaque" not in os.listxattr(upper / "d")


@pytest.mark.parametrize("seed", range(int(os.environ.get("UNIONFS_DIFF_ROOTLESS_SEEDS", "2"))))
def test_random_calls(seed: int, rootless_twins: Twins, mounts: Mounts) -> None:
    label = f"rootless seed {seed}"
    run_differential(label, lambda files, dirs: generate(seed, 80, files, dirs),
                     rootless_twins, mounts, kernel_opts=KERNEL_OPTS)


def test_trusted_is_not_readable_here(tmp_path: Path) -> None:
    """What test_rootless checks from outside: trusted.* stays invisible in here."""
    path = tmp_path / "f"
    path.write_text("x")
    try:
        os.getxattr(path, "trusted.overlay.opaque")
    except OSError as exc:
        assert exc.errno in (errno.ENODATA, errno.EPERM)
