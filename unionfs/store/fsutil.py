"""Small file-system helpers of the store: atomic writes, locks, removal of read-only trees."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def canonical_json(data: Any) -> bytes:
    """The one byte form of a JSON document the store writes (digests depend on it)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` by writing a sibling temporary file, fsyncing it and renaming it over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or ``default`` when it does not exist."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rmtree(path: Path) -> None:
    """Remove a tree even where directories were made read-only; missing is fine.

    Iterative (an explicit stack, not recursion), so a tree of any depth is removed.
    """
    if not os.path.lexists(path):
        return
    top = os.fsencode(path)
    if not stat.S_ISDIR(os.lstat(top).st_mode):
        os.unlink(top)
        return
    stack = [top]
    while stack:
        current = stack[-1]
        with contextlib.suppress(OSError):
            os.chmod(current, stat.S_IRWXU)
        subdirs = []
        with os.scandir(current) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                else:
                    os.unlink(entry.path)
        if subdirs:
            stack += subdirs
            continue
        os.rmdir(current)
        stack.pop()


def now_iso(ts: float | None = None) -> str:
    """An RFC 3339 UTC timestamp (seconds), as OCI configs use."""
    t = time.gmtime(time.time() if ts is None else ts)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def dir_size(path: Path) -> int:
    """Bytes of regular files below ``path`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
