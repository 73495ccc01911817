"""Dropping a file's pages from the page cache, checked: a test of cold reads must know that
the read cannot be answered from the cache (else it waits for a hold that never comes, or
sees the wrong thread answer)."""

from __future__ import annotations

import ctypes
import mmap
import os


def drop_from_cache(fd: int, size: int) -> None:
    """Drop the first ``size`` bytes of the file's pages, and check with mincore that they
    are gone (a few tries: pages still in another CPU's LRU batch are dropped at the next)."""
    os.fsync(fd)
    for _ in range(5):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if not resident_pages(fd, size):
            return
    raise AssertionError(f"fd {fd}: {resident_pages(fd, size)} pages stay in the page cache")


def resident_pages(fd: int, size: int) -> int:
    """How many pages of the file's first ``size`` bytes are in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        vector = ctypes.create_string_buffer((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
        assert libc.mincore(address, size, vector) == 0, os.strerror(ctypes.get_errno())
        return sum(byte & 1 for byte in vector.raw)
    finally:
        libc.munmap(address, size)
