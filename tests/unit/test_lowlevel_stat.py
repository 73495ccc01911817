"""The struct stat the setattr fast path replies with (unionfs.fuse.lowlevel._Stat) has
this machine's layout: libc's own stat fills it with what os.stat says."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import pyfuse3
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


def _attrs() -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_ino, a.st_mode, a.st_nlink, a.attr_timeout = 7, 0o100644, 1, 2.5
    a.st_mtime_ns = 3_000_000_004
    return a


def test_times_flushed_replies_or_gives_back() -> None:
    """Times only and known: replied with the attributes; a change of mode, owner, size,
    an unknown node or an answer that raises: pyfuse3's own handler, never an exception."""
    replied: list[tuple[int, int, int, float]] = []
    given_back: list[int] = []

    def reply(req: int, address: int, timeout: float) -> int:
        st = lowlevel._Stat.from_address(address)
        replied.append((req, st.st_ino, st.st_mtime * 10**9 + st.st_mtime_nsec, timeout))
        return 0

    def answer(ino: int) -> pyfuse3.EntryAttributes | None:
        if ino == 9:
            raise RuntimeError("a bug")
        return _attrs() if ino == 7 else None

    setattr_ = lowlevel._times_flushed(lambda req, *_: given_back.append(req), answer, reply)
    mtime_ctime = 1 << 5 | 1 << 10
    setattr_(1, 7, 0, mtime_ctime, 0)
    setattr_(2, 7, 0, mtime_ctime | 1 << 0, 0)  # mode too
    setattr_(3, 7, 0, 1 << 3, 0)  # size
    setattr_(4, 8, 0, mtime_ctime, 0)  # not known
    setattr_(5, 9, 0, mtime_ctime, 0)  # raises: logged, given back
    assert replied == [(1, 7, 3_000_000_004, 2.5)]
    assert given_back == [2, 3, 4, 5]
