"""Snapshots of a mounted tree, and their comparison.

A snapshot maps each path (relative to the mount, "" for its root) to an :class:`Entry` of the
attributes both implementations must agree on. What is left out, and why, is written in the
docstring of ``tests/differential/test_random.py``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Entry:
    """What the tree shows for one path."""

    mode: str  # ls -l style: type and permission bits, set-id and sticky included
    uid: int
    gid: int
    nlink: int
    size: int | None  # None for directories (their st_size is the layer's business)
    mtime_ns: int
    data: bytes | None  # file content
    target: bytes | None  # symlink target
    xattrs: tuple[tuple[str, bytes], ...]
    # The inode number its directory's listing gives (d_ino) is its st_ino (numbers differ
    # between the implementations; this relation must hold on both).
    d_ino_ok: bool = True


Snapshot = dict[str, Entry]


def take(root: str) -> Snapshot:
    """Walk ``root`` (not following symlinks) and record every entry.

    A name that readdir lists but lstat does not find is left out: the kernel's overlayfs
    lists the whiteouts of a directory that only one layer has (it reads such a directory
    as it is), while looking them up says ENOENT. unionfs never lists them.
    """
    snap: Snapshot = {"": _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        with os.scandir(dirpath) as it:
            listed = {e.name: e.inode() for e in it}
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            try:
                snap[os.path.relpath(path, root)] = _entry(path, listed.get(name))
            except FileNotFoundError:
                continue
    return snap


def inode_numbers(root: str, *, symlinks: bool = True) -> dict[str, int]:
    """st_ino of every path under ``root`` (without symlinks unless ``symlinks``): a union
    keeps them across a remount."""
    numbers = {"": os.lstat(root).st_ino}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if symlinks or not stat.S_ISLNK(st.st_mode):
                numbers[os.path.relpath(path, root)] = st.st_ino
    return numbers


def listed_numbers_wrong(snap: Snapshot) -> list[str]:
    """Paths whose directory listing gave another inode number than their stat."""
    return sorted(path for path, entry in snap.items() if not entry.d_ino_ok)


def _entry(path: str, d_ino: int | None = None) -> Entry:
    st = os.lstat(path)
    mode = st.st_mode
    data = target = None
    if stat.S_ISREG(mode):
        with open(path, "rb") as f:
            data = f.read()
    elif stat.S_ISLNK(mode):
        target = os.fsencode(os.readlink(path))
    names = sorted(os.listxattr(path, follow_symlinks=False))
    xattrs = tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
    return Entry(stat.filemode(mode), st.st_uid, st.st_gid, st.st_nlink,
                 None if stat.S_ISDIR(mode) else st.st_size, st.st_mtime_ns, data, target,
                 xattrs, d_ino is None or d_ino == st.st_ino)


def mtime_class(mtime_ns: int, since_ns: int | None) -> object:
    """A time before ``since_ns`` is a fixed one the test set: it must agree exactly. Times
    after it were set by the clock while the two mounts ran one after the other: they only
    have to agree on being "recent". ``since_ns=None`` compares exactly."""
    if since_ns is None or mtime_ns < since_ns:
        return mtime_ns
    return "recent"


# The kernel's listing of a merged directory may give another inode number than its stat:
# d_ino is compared between two trees of unionfs only (and checked on its own: harness.py).
NOT_THE_KERNELS = ("d_ino_ok",)


def diff(left: Snapshot, right: Snapshot, *, since_ns: int | None,
         names: tuple[str, str] = ("kernel", "unionfs"),
         ignore: tuple[str, ...] = NOT_THE_KERNELS) -> list[str]:
    """Human-readable differences (but of the fields named in ``ignore``); empty when the
    trees agree."""
    out: list[str] = []
    for path in sorted(left.keys() | right.keys()):
        a, b = left.get(path), right.get(path)
        if a is None or b is None:
            where = names[0] if a is not None else names[1]
            out.append(f"{path!r}: only in {where}: {a or b}")
            continue
        out.extend(f"{path!r}: {line}" for line in _diff_entry(a, b, since_ns, names, ignore))
    return out


def _diff_entry(a: Entry, b: Entry, since_ns: int | None, names: tuple[str, str],
                ignore: tuple[str, ...] = ()) -> list[str]:
    lines = []
    for f in fields(Entry):
        if f.name in ignore:
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "mtime_ns":
            va, vb = mtime_class(va, since_ns), mtime_class(vb, since_ns)
        if va != vb:
            lines.append(f"{f.name}: {names[0]} {_short(va)} != {names[1]} {_short(vb)}")
    return lines


def _short(value: object) -> str:
    if isinstance(value, bytes) and len(value) > 40:
        return f"<{len(value)} bytes {value[:20]!r}...>"
    return repr(value)
