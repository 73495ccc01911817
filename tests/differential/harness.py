"""Running the same calls on the kernel's overlayfs and on unionfs, and comparing.

:func:`run_differential` is the whole check of one list of calls: the starting trees, each
call's result, the trees every few calls and at the end, the trees after remounting both, and
the tree the kernel shows over unionfs's upper. A mismatch raises :class:`Mismatch` with the
list of calls so far and both results of each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Mounts, Stack
from tests.differential import execute, snapshot
from tests.differential.conftest import Twins
from tests.differential.execute import Result, apply
from tests.differential.gen import Op

History = list[tuple[Op, Result, Result]]
MakeOps = Callable[[list[str], list[str]], list[Op]]

CHECK_EVERY = 10
# Filesystems stamp times from a coarse clock that can lag time.time_ns(); every fixed time
# the test uses is years older, so a generous slack costs nothing.
CLOCK_SLACK_NS = 60 * 10**9


class Mismatch(AssertionError):
    """The two implementations disagreed; the message says how to replay it."""


def replay_report(label: str, history: History, what: str) -> str:
    """The run's label (with how to replay it), every call so far with both results, and
    what went wrong."""
    lines = [f"{label}: {what}", "calls (kernel | unionfs):"]
    for i, (op, rk, ru) in enumerate(history):
        mark = "   " if rk.same(ru) else "!!!"
        lines.append(f"{mark} {i:3d} {op}: {rk} | {ru}")
    return "\n".join(lines)


def take(root: Path, report: str) -> snapshot.Snapshot:
    """A snapshot; a failing call while walking the tree is a mismatch too (with the calls)."""
    try:
        return snapshot.take(str(root))
    except OSError as exc:
        raise Mismatch(f"{report}\nwalking {root} failed: {exc!r}") from exc


def check_trees(left: snapshot.Snapshot, right: snapshot.Snapshot, since_ns: int | None,
                names: tuple[str, str], report: str,
                ignore: tuple[str, ...] = snapshot.NOT_THE_KERNELS) -> None:
    """Fail with ``report`` and the differences when the trees disagree."""
    differences = snapshot.diff(left, right, since_ns=since_ns, names=names, ignore=ignore)
    if differences:
        raise Mismatch(report + "\ntrees differ:\n  " + "\n  ".join(differences))


def check_listed_numbers(snap: snapshot.Snapshot, report: str) -> None:
    """unionfs's listings give every name the inode number its stat gives."""
    wrong = snapshot.listed_numbers_wrong(snap)
    if wrong:
        raise Mismatch(report + "\nd_ino is not st_ino for: " + ", ".join(wrong))


def check_numbers(before: dict[str, int], after: dict[str, int], report: str) -> None:
    """unionfs keeps every inode number across a remount (copy-ups keep their origin's)."""
    changed = [f"{path!r}: {before[path]:#x} -> {after.get(path, 0):#x}" for path in before
               if after.get(path) != before[path]]
    if changed:
        raise Mismatch(report + "\ninode numbers changed by the remount:\n  "
                       + "\n  ".join(changed))


def tree_paths(snap: snapshot.Snapshot) -> tuple[list[str], list[str]]:
    """Files and dirs of a snapshot, for the generator."""
    files = sorted(p for p, e in snap.items() if p and not e.mode.startswith("d"))
    dirs = sorted(p for p, e in snap.items() if p and e.mode.startswith("d"))
    return files, dirs


def run_calls(label: str, ops: list[Op], kmnt: Path, umnt: Path, since_ns: int) -> History:
    """Apply ``ops`` to both mounts, comparing results, and the trees now and then."""
    history: History = []
    for i, op in enumerate(ops):
        rk = apply(str(kmnt), op, kernel=True)
        ru = apply(str(umnt), op)
        history.append((op, rk, ru))
        if not rk.same(ru):
            raise Mismatch(replay_report(label, history, f"call {i} disagrees"))
        if (i + 1) % CHECK_EVERY == 0:
            report = replay_report(label, history, f"after call {i}")
            check_trees(take(kmnt, report), take(umnt, report), since_ns,
                        ("kernel", "unionfs"), report)
    return history


def mount_unionfs(mounts: Mounts, st: Stack, extra: tuple[str, ...] = ()) -> Path:
    """Mount with the server's log in the stack's base dir (``UNIONFS_DIFF_LOG_LEVEL``);
    ``extra``: more ``-o`` options."""
    level = os.environ.get("UNIONFS_DIFF_LOG_LEVEL", "warning")
    return mounts.unionfs(st, log_level=level, log_file=st.base / "server.log",
                          extra=list(extra))


def kernel_on_unionfs_upper(st: Stack) -> Stack:
    """The unionfs stack's upper and lowers, with a fresh workdir for the kernel."""
    return Stack(st.base, st.lowers, st.upper, st.base / "kernel-work", st.mnt)


def run_differential(label: str, make_ops: MakeOps, twins: Twins, mounts: Mounts, *,
                     kernel_opts: str = "", unionfs_opts: tuple[str, ...] = ()) -> History:
    """Run the calls ``make_ops(files, dirs)`` (given the starting tree) on both, and check
    everything; ``label`` heads any failure report (say there how to replay).
    ``kernel_opts`` are extra options of every kernel mount (``userxattr``),
    ``unionfs_opts`` of every unionfs mount (``redirect_dir=off``).

    Every kernel mount is ``nodev``, as every FUSE mount is (the kernel's FUSE mounts
    nodev for fusermount3): device nodes are made and kept on both, and opening one is
    EACCES on both."""
    kernel_opts = ",".join(o for o in ("nodev", kernel_opts) if o)
    kmnt = mounts.overlay(twins.kernel, extra=kernel_opts)
    execute.UPPERS[str(kmnt)] = str(twins.kernel.upper)
    umnt = mount_unionfs(mounts, twins.unionfs, unionfs_opts)
    start_k = snapshot.take(str(kmnt))
    check_trees(start_k, snapshot.take(str(umnt)), None, ("kernel", "unionfs"),
                f"{label}: the starting trees differ")
    ops = make_ops(*tree_paths(start_k))
    since = time.time_ns() - CLOCK_SLACK_NS
    history = run_calls(label, ops, kmnt, umnt, since)
    report = replay_report(label, history, "after all calls")
    before_k, before_u = take(kmnt, report), take(umnt, report)
    check_trees(before_k, before_u, since, ("kernel", "unionfs"), report)
    check_listed_numbers(before_u, report)
    # A copied-up symlink keeps its number through a remount only where its origin xattr
    # can be stored: user.* xattrs are refused on symlinks (userxattr mode).
    symlinks = "userxattr" not in kernel_opts
    numbers_u = snapshot.inode_numbers(str(umnt), symlinks=symlinks)

    for mnt in (kmnt, umnt):
        mounts.unmount(mnt)
    kmnt = mounts.overlay(twins.kernel, extra=kernel_opts)
    umnt = mount_unionfs(mounts, twins.unionfs, unionfs_opts)
    after_k, after_u = snapshot.take(str(kmnt)), snapshot.take(str(umnt))
    check_trees(before_k, after_k, None, ("kernel", "kernel remounted"), report)
    check_trees(before_u, after_u, None, ("unionfs", "unionfs remounted"), report,
                ignore=())
    check_numbers(numbers_u, snapshot.inode_numbers(str(umnt), symlinks=symlinks), report)

    mounts.unmount(umnt)
    on_upper = snapshot.take(str(mounts.overlay(kernel_on_unionfs_upper(twins.unionfs),
                                                    extra=kernel_opts)))
    check_trees(after_u, on_upper, None, ("unionfs", "kernel on unionfs's upper"), report)
    return history
