"""Helpers for the real-mount tests: tmpfs mounts, renameat2, running code as another uid."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_RENAMEAT2 = 316
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old: Path, new: Path, flags: int) -> None:
    """rename(2) with flags, through the raw syscall (Python's os has no renameat2)."""
    res = _libc.syscall(_SYS_RENAMEAT2, AT_FDCWD, os.fsencode(old), AT_FDCWD,
                        os.fsencode(new), flags)
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old))


def run_as(uid: int, code: str, *, gid: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``uid`` (no capabilities); its stdout is the result."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}",
            "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


class Tmpfs:
    """tmpfs mounts made by one test; all unmounted at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.paths: list[Path] = []

    def __call__(self, name: str, size: str = "16m") -> Path:
        path = self.base / name
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)
        self.paths.append(path)
        return path

    def close(self) -> None:
        for path in reversed(self.paths):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs("name", "8m")`` mounts a tmpfs under the test's tmp dir."""
    fs = Tmpfs(tmp_path / "tmpfs")
    try:
        yield fs
    finally:
        fs.close()
