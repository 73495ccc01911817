"""Bring an upper written without impure markers up to the current format.

An upper that has no format record (:mod:`unionfs.layers.ondisk`: made before the markers
existed, written by an older unionfs, or with another work dir) may hold copy-ups in any
directory. Walked once, fd-relative and never following a symlink: each directory that
holds an entry with an origin xattr is marked impure, then the caller writes the record.
"""

from __future__ import annotations

import functools
import os
import time

from unionfs.core.paths import join
from unionfs.core.whiteout import XattrNamespace
from unionfs.layers import ondisk
from unionfs.layers.layer import Layer
from unionfs.layers.syscalls import proc_path


def mark_impure_dirs(upper: Layer, ns: XattrNamespace, seconds: float | None = None) -> int:
    """Mark every directory of ``upper`` that holds an entry with an origin in ``ns``;
    returns how many were marked. An OSError (a directory it cannot read; TimeoutError
    after ``seconds``, so that a huge upper cannot hold a mount up) is raised: the caller
    then treats every directory as possibly impure. The marks made so far are true."""
    deadline = None if seconds is None else time.monotonic() + seconds
    marked = 0
    pending = [b""]
    while pending:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"upper not walked within {seconds:g} s")
        rel = pending.pop()
        fd = upper.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _scan_dir(fd, rel, ns, pending):
                ondisk.mark_impure(fd, ns)
                marked += 1
        finally:
            os.close(fd)
    return marked


def _scan_dir(fd: int, rel: bytes, ns: XattrNamespace, pending: list[bytes]) -> bool:
    """Queue the subdirectories of directory ``fd`` (at ``rel``); True when it needs the
    mark (an entry with an origin, and no mark yet)."""
    needs = not ondisk.is_impure(functools.partial(_fgetxattr, fd), ns)
    found = False
    with os.scandir(fd) as it:
        for e in it:
            name = os.fsencode(e.name)
            if e.is_dir(follow_symlinks=False):
                pending.append(join(rel, name))
            if needs and not found:
                found = _has_origin(proc_path(fd, name), ns)
    return needs and found


def _has_origin(path: bytes, ns: XattrNamespace) -> bool:
    try:
        return ondisk.origin(functools.partial(_lgetxattr, path), ns) is not None
    except ValueError:
        return True  # malformed: the lookup logs it; marking costs nothing but a read


def _lgetxattr(path: bytes, name: bytes) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _fgetxattr(fd: int, name: bytes) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None
