"""The core's errno tables against the kernel's overlayfs, case by case.

Every combination of source and target (missing, a file, an empty directory, a directory with
a name in it; in the lower layer or in the upper) and of rename flags, unlink, rmdir and
mkdir of each, and mknod of a whiteout, is tried on the kernel's overlayfs and on unionfs
over copies of the same layers: both must fail with the errno that ``unionfs.core``
(``rename``, ``delete``, ``create``) predicts from the merged entries alone. Deliberate
differences are not in the table: unionfs refuses OCI marker names (``.wh.x``) that the
kernel takes, and renames lower directories where the kernel may say EXDEV (the kernel runs
with redirect_dir=on here, so it does not).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Mounts, Stack
from tests.integration.conftest import renameat2
from unionfs.core.create import create_errno, mknod_errno
from unionfs.core.delete import rmdir_errno, unlink_errno
from unionfs.core.merge import Entry
from unionfs.core.rename import RENAME_EXCHANGE, RENAME_NOREPLACE, must_be_empty, rename_errno
from unionfs.core.whiteout import Kind

KINDS = ("missing", "file", "empty", "full")
WHERE = (1, 0)  # the lower layer, the upper
FLAGS = (0, RENAME_NOREPLACE, RENAME_EXCHANGE)


def _put(spec: dict[str, object], name: str, kind: str) -> None:
    if kind == "file":
        spec[name] = "data"
    elif kind == "empty":
        spec[name + "/"] = None
    elif kind == "full":
        spec[name + "/x"] = "x"


def _entry(kind: str, where: int) -> Entry | None:
    if kind == "missing":
        return None
    if kind == "file":
        return Entry(where, Kind.OTHER)
    return Entry(where, Kind.DIR, (where,))


RENAMES = [(k, s, sw, d, dw, f) for k, (s, sw, d, dw, f) in enumerate(
    itertools.product(KINDS, WHERE, KINDS, WHERE, FLAGS)) if s != "missing" or sw == 1]
REMOVALS = [(k, kind, where) for k, (kind, where) in enumerate(itertools.product(KINDS, WHERE))]


def _layers() -> tuple[dict[str, object], dict[str, object]]:
    lower: dict[str, object] = {"keep": "k"}
    upper: dict[str, object] = {}
    for k, src, src_at, dst, dst_at, _ in RENAMES:
        _put(upper if src_at == 0 else lower, f"s{k}", src)
        _put(upper if dst_at == 0 else lower, f"t{k}", dst)
    for k, kind, where in REMOVALS:
        _put(upper if where == 0 else lower, f"r{k}", kind)
        _put(upper if where == 0 else lower, f"c{k}", kind)
    return lower, upper


def _errno_of(call: Callable[..., None], *args: object) -> int | None:
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return None


def _predicted_rename(src: str, src_at: int, dst: str, dst_at: int, flags: int) -> int | None:
    src_entry, dst_entry = _entry(src, src_at), _entry(dst, dst_at)
    code = rename_errno(src_entry, dst_entry, flags, b"t")
    if code is None and must_be_empty(dst_entry, flags) and dst == "full":
        return errno.ENOTEMPTY
    return code


def _results(mnt: Path) -> dict[str, int | None]:
    got: dict[str, int | None] = {}
    for k, *_, flags in RENAMES:
        got[f"rename {k}"] = _errno_of(renameat2, mnt / f"s{k}", mnt / f"t{k}", flags)
    for k, *_ in REMOVALS:
        got[f"unlink {k}"] = _errno_of(os.unlink, mnt / f"r{k}")
        got[f"rmdir {k}"] = _errno_of(os.rmdir, mnt / f"r{k}")
        got[f"mkdir {k}"] = _errno_of(os.mkdir, mnt / f"c{k}")
    got["mknod whiteout"] = _errno_of(os.mknod, mnt / "wh", stat.S_IFCHR | 0o600, 0)
    return got


def _predicted() -> dict[str, int | None]:
    want: dict[str, int | None] = {}
    for k, src, src_at, dst, dst_at, flags in RENAMES:
        want[f"rename {k}"] = _predicted_rename(src, src_at, dst, dst_at, flags)
    for k, kind, where in REMOVALS:
        entry = _entry(kind, where)
        gone = unlink_errno(entry) is None  # rmdir runs after unlink on the same name
        want[f"unlink {k}"] = unlink_errno(entry)
        want[f"rmdir {k}"] = errno.ENOENT if gone else rmdir_errno(entry, kind != "full")
        want[f"mkdir {k}"] = create_errno(b"c", entry)
    want["mknod whiteout"] = mknod_errno(stat.S_IFCHR | 0o600, 0)
    return want


def _names(codes: dict[str, int | None]) -> dict[str, str]:
    return {case: errno.errorcode[c] if c else "ok" for case, c in codes.items()}


def test_errno_tables_agree_with_the_kernel(stack: Callable[..., Stack],
                                            mounts: Mounts) -> None:
    lower, upper = _layers()
    kernel = mounts.overlay(stack(lower, upper=upper, name="kernel"), extra="redirect_dir=on")
    ours = mounts.unionfs(stack(lower, upper=upper, name="unionfs"))
    predicted = _names(_predicted())
    assert _names(_results(kernel)) == predicted
    assert _names(_results(ours)) == predicted
    assert len(predicted) > 190 and set(predicted.values()) >= {
        "ok", "ENOENT", "EEXIST", "ENOTDIR", "EISDIR", "ENOTEMPTY", "EPERM"}
