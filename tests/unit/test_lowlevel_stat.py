"""The struct stat the setattr fast path replies with (unionfs.fuse.lowlevel._Stat) has
this machine's layout: libc's own stat fills it with what os.stat says."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import pytest

from unionfs.fuse import lowlevel


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the layout is x86_64's")
def test_stat_layout_matches_libc(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_111_111_111_222, 3_333_333_333_444))
    st = lowlevel._Stat()
    libc = ctypes.CDLL(None, use_errno=True)
    assert ctypes.sizeof(st) == lowlevel._STAT_SIZE
    assert libc.stat(str(path).encode(), ctypes.byref(st)) == 0
    want = os.stat(path)
    assert (st.st_ino, st.st_mode, st.st_nlink, st.st_size, st.st_uid, st.st_blksize) == (
        want.st_ino, want.st_mode, want.st_nlink, want.st_size, want.st_uid, want.st_blksize)
    assert st.st_atime * 10**9 + st.st_atime_nsec == want.st_atime_ns
    assert st.st_mtime * 10**9 + st.st_mtime_nsec == want.st_mtime_ns
    assert st.st_ctime * 10**9 + st.st_ctime_nsec == want.st_ctime_ns
