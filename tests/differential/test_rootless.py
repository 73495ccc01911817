"""unionfs served without privileges: inside ``unshare --user --map-root-user --mount``.

The server, the kernel's overlayfs (with ``userxattr``) and the calls all run in a new user
and mount namespace (``rootless_inner.py``, run by pytest in there). Its uid 0 has no power
over the machine: ``trusted.*`` xattrs are refused, ``mknod`` makes only whiteouts, the FUSE
mount is its own (no setuid helper). From outside, as real root, this test then checks that
the uppers unionfs wrote hold the rootless format only: ``user.overlay.opaque``, char 0/0
whiteouts, and no ``trusted.overlay.*`` xattr at all.

Why not a plain non-root user (``setpriv`` to a created user): on this machine ``/dev/fuse``
is ``crw------- root root``, and libfuse opens it before it would ever call fusermount3, so
no non-root process can mount FUSE here, whatever unionfs does.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

INNER = "tests/differential/rootless_inner.py"


def run_inner(basetemp: Path) -> subprocess.CompletedProcess[str]:
    """pytest on the inner module, in a new user and mount namespace."""
    argv = ["unshare", "--user", "--map-root-user", "--mount", "--", sys.executable, "-m",
            "pytest", "-q", "-p", "no:cacheprovider", INNER, f"--basetemp={basetemp}"]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def walk(root: Path) -> list[Path]:
    """Every path under ``root``, ``root`` included, symlinks not followed."""
    return [root, *root.rglob("*")]


def test_rootless_server(tmp_path: Path) -> None:
    basetemp = tmp_path / "inner"
    res = run_inner(basetemp)
    assert res.returncode == 0, f"inner tests failed:\n{res.stdout}\n{res.stderr}"
    uppers = sorted(basetemp.glob("test_*/unionfs/upper"))
    assert len(uppers) >= 2, res.stdout
    opaque = whiteouts = 0
    for upper in uppers:
        for path in walk(upper):
            names = os.listxattr(path, follow_symlinks=False)
            assert not [n for n in names if n.startswith("trusted.")], path
            if "user.overlay.opaque" in names:
                assert os.getxattr(path, "user.overlay.opaque", follow_symlinks=False) == b"y"
                opaque += 1
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode):
                assert st.st_rdev == 0, f"{path}: a device that is not a whiteout"
                whiteouts += 1
    assert opaque and whiteouts, (opaque, whiteouts)
