"""The filesystems being compared, each able to mount fresh layers and unmount them.

A target turns (lowers, upper, work, mountpoint) into a :class:`Mounted` whose ``path`` the
workloads run in. ``native`` mounts nothing: it materializes the merged tree as a plain
directory, the baseline every ratio is taken against.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from unionfs.benchmarks.system import (
    BenchError,
    merge_trees,
    one_line,
    peak_rss_kib,
    pids_mentioning,
    stop_process,
    unmount,
    wait_mounted,
)

MOUNT_TIMEOUT = 30.0


@dataclass
class Layout:
    """Where one measurement's layers live. ``lowers`` are top first."""

    lowers: list[Path]
    upper: Path
    work: Path
    mnt: Path
    log: Path  # the server's stderr (a file: a full pipe would stall the server)


@dataclass
class Mounted:
    """A live mount (or native directory) that workloads run in."""

    path: Path
    upper: Path
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    unmount_path: Path | None = None
    pids: list[int] = field(default_factory=list)

    def peak_rss_kib(self) -> int | None:
        """The server's peak RSS so far (None for kernel and native targets)."""
        values = [v for v in (peak_rss_kib(p) for p in self.server_pids()) if v is not None]
        return max(values) if values else None

    def server_pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else self.pids

    def unmount(self) -> None:
        if self.unmount_path is not None:
            unmount(self.unmount_path)
        if self.process is not None:
            stop_process(self.process)

    def abort(self) -> None:
        """Kill the server: the way out when a command hangs in the filesystem."""
        for pid in self.server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Target(ABC):
    """One filesystem under test."""

    name: str = ""
    description: str = ""

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None when it can."""
        return None

    @abstractmethod
    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        """Mount fresh layers; raise BenchError with a one-line reason on failure."""


class Native(Target):
    """A plain directory holding the merged tree: the baseline."""

    name = "native"
    description = "plain ext4 directory holding the merged tree"

    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        # Workloads that never write existing files get hard links (instant, no data read);
        # the others get real copies so the cached layer data stays unchanged.
        layers = [*reversed(layout.lowers), layout.upper]
        merge_trees(layers, layout.mnt, link=not writes_lower)
        return Mounted(path=layout.mnt, upper=layout.mnt)


class KernelOverlay(Target):
    """The kernel's overlayfs."""

    name = "overlayfs"
    description = "kernel overlayfs"
    extra = ""  # more mount options

    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        lowerdir = ":".join(str(p) for p in layout.lowers)
        opts = f"lowerdir={lowerdir},upperdir={layout.upper},workdir={layout.work}" + self.extra
        res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(layout.mnt)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchError(one_line(res.stderr) or "mount failed")
        return Mounted(path=layout.mnt, upper=layout.upper, unmount_path=layout.mnt)


class KernelOverlayRedirect(KernelOverlay):
    """The kernel's overlayfs renaming lower directories with redirects (not a default
    target: it differs from ``overlayfs`` only in the ``mv`` row)."""

    name = "overlayfs-redirect"
    description = "kernel overlayfs, redirect_dir=on"
    extra = ",redirect_dir=on"


def start_mount_process(argv: list[str], layout: Layout) -> subprocess.Popen[bytes]:
    """Start a mount command logging to the layout's log; return once the mount is live.

    It runs in ``/``: ``python -m unionfs`` imports from its working directory first, so a
    template that points PYTHONPATH at a frozen copy would otherwise serve the checkout
    the benchmark was started from (every layout path is absolute)."""
    with open(layout.log, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/")
    try:
        wait_mounted(layout.mnt, proc, MOUNT_TIMEOUT, layout.log)
    except BaseException:
        unmount(layout.mnt)
        stop_process(proc, timeout=5)
        raise
    return proc


class ForegroundFuse(Target):
    """A FUSE server started in the foreground, so its pid (and RSS) is known."""

    program = ""

    def unavailable(self) -> str | None:
        if shutil.which(self.program) is None:
            return f"{self.program} is not installed (./dev setup installs it)"
        return None

    @abstractmethod
    def argv(self, layout: Layout) -> list[str]:
        """The command line of the foreground server."""

    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        proc = start_mount_process(self.argv(layout), layout)
        return Mounted(path=layout.mnt, upper=layout.upper, pid=proc.pid, process=proc,
                       unmount_path=layout.mnt)


class FuseOverlayfs(ForegroundFuse):
    """fuse-overlayfs (C, libfuse3), the reference user-space overlay."""

    name = "fuse-overlayfs"
    description = "fuse-overlayfs (Debian package)"
    program = "fuse-overlayfs"

    def argv(self, layout: Layout) -> list[str]:
        lowerdir = ":".join(str(p) for p in layout.lowers)
        opts = f"lowerdir={lowerdir},upperdir={layout.upper},workdir={layout.work}"
        return [self.program, "-f", "-o", opts, str(layout.mnt)]


class UnionfsFuse(ForegroundFuse):
    """unionfs-fuse (C, libfuse2), called by its unambiguous name."""

    name = "unionfs-fuse"
    description = "unionfs-fuse (Debian package), -o cow"
    program = "unionfs-fuse"

    def argv(self, layout: Layout) -> list[str]:
        branches = [f"{layout.upper}=RW", *(f"{p}=RO" for p in layout.lowers)]
        opts = "cow,hide_meta_files,max_files=16000"
        return [self.program, "-f", "-o", opts, ":".join(branches), str(layout.mnt)]


class Unionfs(Target):
    """This project, mounted through its public API (a separate server process)."""

    name = "unionfs"
    description = "unionfs (this project, Python + pyfuse3)"

    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        try:
            from unionfs.api import MountOptions, mount
        except Exception as exc:
            raise BenchError(f"cannot import unionfs.api: {exc}") from exc
        try:
            handle = mount(layout.lowers, layout.mnt, layout.upper,
                           options=MountOptions(workdir=layout.work, log_file=layout.log),
                           timeout=MOUNT_TIMEOUT)
        except Exception as exc:
            raise BenchError(one_line(str(exc)) or type(exc).__name__) from exc
        return _UnionfsMounted(path=layout.mnt, upper=layout.upper, pid=handle.pid,
                               handle=handle)


@dataclass
class _UnionfsMounted(Mounted):
    handle: object = None

    def unmount(self) -> None:
        self.handle.unmount()  # type: ignore[attr-defined]
        unmount(self.path)  # in case the server's unmount left it mounted


class Template(Target):
    """A user's mount command with {lowers} {upper} {work} {mnt} placeholders."""

    def __init__(self, name: str, template: str) -> None:
        self.name = name
        self.template = template
        self.description = f"user template: {template}"

    def mount(self, layout: Layout, *, writes_lower: bool) -> Mounted:
        command = self.template.format(
            lowers=shlex.quote(":".join(str(p) for p in layout.lowers)),
            upper=shlex.quote(str(layout.upper)), work=shlex.quote(str(layout.work)),
            mnt=shlex.quote(str(layout.mnt)),
        )
        proc = start_mount_process(["sh", "-c", command], layout)
        still_running = proc.poll() is None
        return Mounted(path=layout.mnt, upper=layout.upper, unmount_path=layout.mnt,
                       process=proc if still_running else None,
                       pids=pids_mentioning(layout.mnt))


DEFAULT_TARGETS = [t.name for t in (Native, KernelOverlay, FuseOverlayfs, UnionfsFuse, Unionfs)]
BUILTIN: dict[str, type[Target]] = {
    t.name: t for t in (Native, KernelOverlay, KernelOverlayRedirect, FuseOverlayfs,
                        UnionfsFuse, Unionfs)
}


def make_targets(names: list[str], templates: dict[str, str]) -> list[Target]:
    """Instances of the named built-in targets, then the user's templates."""
    targets: list[Target] = []
    for name in names:
        if name not in BUILTIN:
            raise BenchError(f"unknown target {name!r} (known: {', '.join(BUILTIN)})")
        targets.append(BUILTIN[name]())
    targets += [Template(name, tpl) for name, tpl in templates.items()]
    return targets


def python_command() -> list[str]:
    """Our own ``unionfs`` command (never Debian's /usr/bin/unionfs)."""
    return [sys.executable, "-m", "unionfs"]

