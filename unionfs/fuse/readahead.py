"""The read-ahead window of the mount, for sequential reads of big files.

A cold sequential read through FUSE is slow where a warm one is not (then the kernel
answers from its own page cache of the mount and never asks the server): the kernel's
read-ahead of a FUSE mount is 128 KiB and it offers no more at FUSE_INIT, so a 1 GiB read
is 8192 requests, each paying a round trip and the server's handler. :func:`widen` raises
the mount's own ``read_ahead_kb`` (its backing device info in sysfs) once the mount exists
and before the server answers FUSE_INIT, whose answer then asks for the same window
(``unionfs.fuse.lowlevel``: the kernel keeps the smaller of the two): the kernel sends
1 MiB requests (``max_pages``: 256 pages with libfuse 3) and keeps several in flight.
Reads stay on the fast path of :meth:`SlowWork.read`, in request order, so the layer
file's own read-ahead sees one sequential reader (reads from several worker threads at
once were measured to defeat it: 3-4x slower).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

READ_AHEAD_KB = 4096  # the mount's read-ahead window (the kernel's default: 128)


def widen(mountpoint: str, kib: int = READ_AHEAD_KB) -> bool:
    """Raise the read-ahead of the FUSE mount at ``mountpoint`` (its backing device info in
    sysfs, which lives as long as the mount). Needs root; False (and a debug line) when it
    cannot be done: the mount then works with the kernel's default. The server calls it
    before it serves requests, so it must not stat its own mount: the device number is
    read from the mount table."""
    try:
        device = mount_device(mountpoint)
        if device is None:
            raise OSError(f"{mountpoint} is not in /proc/self/mountinfo")
        path = f"/sys/class/bdi/{device}/read_ahead_kb"
        with open(path) as f:
            if int(f.read()) >= kib:
                return True
        with open(path, "w") as f:
            f.write(str(kib))
    except (OSError, ValueError) as exc:
        log.debug("read-ahead of %s left at the kernel's default: %s", mountpoint, exc)
        return False
    return True


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the newest mount at ``mountpoint`` (None: not mounted)."""
    wanted = os.path.abspath(mountpoint)  # realpath would stat the mount itself
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ", 5)
            if len(fields) > 4 and _unescape(fields[4]) == wanted:
                found = fields[2]
    return found


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field
