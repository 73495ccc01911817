"""A container's mounts as data: a list of steps, planned first, executed after.

:func:`plan` says what to mount where (tests read the list without executing anything);
:func:`execute` performs the steps inside the container's mount namespace, before the pivot.
Targets are paths under the new root as seen from outside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from unionfs.runtime import linux
from unionfs.runtime.linux import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
)
from unionfs.runtime.spec import Spec

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (
    ("pts/ptmx", "ptmx"), ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
)
ETC_FILES = ("hostname", "hosts", "resolv.conf")


@dataclass(frozen=True)
class MountStep:
    """One ``mount(2)`` call; ``create`` makes the target first ("dir" or "file").

    An ``optional`` step is skipped when its target cannot be created (a read-only root).
    """

    source: str | None
    target: str
    fstype: str | None
    flags: int = 0
    data: str | None = None
    create: str | None = "dir"
    optional: bool = False


@dataclass(frozen=True)
class Symlink:
    """A symlink at ``path`` pointing to ``target`` (replacing what is there)."""

    target: str
    path: str


@dataclass(frozen=True)
class Populate:
    """Fill the empty named volume ``dest`` from the image's directory ``source`` (before
    the volume is mounted over it; runtime.volumes)."""

    source: str
    dest: str


Step = MountStep | Symlink | Populate


def in_root(root: str, path: str, max_links: int = 40) -> str:
    """``path`` inside the container as a host path under ``root``, symlinks resolved as if
    ``root`` were ``/``: an image's symlink (``/data -> /etc``) can never lead out of it."""
    todo = [p for p in path.split("/") if p][::-1]
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            if done:
                done.pop()
            continue
        if name == ".":
            continue
        candidate = os.path.join(root, *done, name)
        if not os.path.islink(candidate):
            done.append(name)
            continue
        links += 1
        if links > max_links:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        todo.extend([p for p in target.split("/") if p][::-1])
    return os.path.join(root, *done)


def plan(spec: Spec, root: str, state_dir: str, *, userns: bool) -> list[Step]:
    """The mounts that turn ``root`` into the container's filesystem tree."""
    steps: list[Step] = [
        MountStep(None, "/", None, MS_REC | MS_PRIVATE, create=None),
        MountStep(root, root, None, MS_BIND | MS_REC, create=None),
        MountStep("proc", in_root(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
    ]
    steps += _dev_steps(root)
    steps += [MountStep(d.host, in_root(root, d.container), None, MS_BIND, create="file")
              for d in spec.devices]
    steps += _sys_steps(root, own_netns=spec.network != "host", userns=userns)
    for vol in spec.volumes:
        kind = "dir" if os.path.isdir(vol.host) else "file"
        target = in_root(root, vol.container)
        if vol.volume:
            steps.append(Populate(target, vol.host))
        steps.append(MountStep(vol.host, target, None, MS_BIND | MS_REC, create=kind))
        if vol.read_only:
            steps.append(_remount_ro(target))
    for name in ETC_FILES:
        steps.append(MountStep(f"{state_dir}/{name}", in_root(root, f"/etc/{name}"), None, MS_BIND,
                               create="file", optional=True))
    if spec.read_only:
        steps.append(_remount_ro(root))
    return steps


def _remount_ro(target: str, extra: int = 0) -> MountStep:
    return MountStep(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | extra, create=None)


def _dev_steps(root: str) -> list[Step]:
    """A minimal /dev: a tmpfs, host device nodes bound in, devpts, shm and the symlinks."""
    dev = in_root(root, "/dev")
    steps: list[Step] = [
        MountStep("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
    ]
    steps += [MountStep(f"/dev/{d}", f"{dev}/{d}", None, MS_BIND, create="file") for d in DEVICES]
    steps.append(MountStep("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                           "newinstance,ptmxmode=0666,mode=620"))
    steps.append(MountStep("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           "mode=1777,size=65536k"))
    steps += [Symlink(target, f"{dev}/{name}") for target, name in DEV_SYMLINKS]
    return steps


def _sys_steps(root: str, *, own_netns: bool, userns: bool) -> list[Step]:
    """A read-only /sys: a fresh sysfs when allowed, else the host's bound read-only.

    A user namespace may mount sysfs only together with its own network namespace.
    """
    target = in_root(root, "/sys")
    if own_netns or not userns:
        return [MountStep("sysfs", target, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)]
    return [MountStep("/sys", target, None, MS_BIND | MS_REC),
            _remount_ro(target, MS_NOSUID | MS_NODEV | MS_NOEXEC)]


def execute(steps: list[Step]) -> None:
    """Perform the steps in order; the first failure raises with its target named."""
    for step in steps:
        if isinstance(step, Populate):
            from unionfs.runtime.volumes import populate

            populate(step.source, step.dest)
            continue
        if isinstance(step, Symlink):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(step.path)
            os.symlink(step.target, step.path)
            continue
        try:
            _create(step)
        except OSError as exc:
            if step.optional and exc.errno == errno.EROFS:
                continue
            raise
        flags = step.flags
        if flags & MS_REMOUNT:
            flags |= _locked_flags(step.target)
        linux.mount(step.source, step.target, step.fstype, flags, step.data)


def _locked_flags(target: str) -> int:
    """The flags a remount must keep (a user namespace may not clear them)."""
    st_flags = os.statvfs(target).f_flag
    keep = 0
    for st_bit, ms_bit in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                           (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, 1024),
                           (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21)):
        if st_flags & st_bit:
            keep |= ms_bit
    return keep


def _create(step: MountStep) -> None:
    if step.create == "dir":
        os.makedirs(step.target, exist_ok=True)
    elif step.create == "file" and not os.path.lexists(step.target):
        os.makedirs(os.path.dirname(step.target), exist_ok=True)
        os.close(os.open(step.target, os.O_WRONLY | os.O_CREAT, 0o644))


def pivot(root: str) -> None:
    """Make ``root`` the root directory and drop the old one."""
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
