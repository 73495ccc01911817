"""The container's root: the image's layers plus its upper, mounted as one tree.

The one place that decides how: unionfs (the default, through :func:`unionfs.api.mount`,
served by a separate process that stays outside the container's namespaces and cgroup), or
the kernel's overlayfs (``UNIONFS_ROOTFS=overlay``: a fallback for comparing behaviour).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unionfs.api import MountHandle, MountOptions, is_mounted, mount, syncfs, unmount
from unionfs.errors import OperationFailed, UserError
from unionfs.runtime import linux

BACKEND_ENV = "UNIONFS_ROOTFS"


@dataclass
class RootMount:
    """A mounted container root; :meth:`release` unmounts it."""

    path: Path
    handle: MountHandle | None = None
    in_namespace: bool = False  # served in another mount namespace: only the server can end it
    released: bool = False

    @property
    def server_died(self) -> int | None:
        """The exit status of a unionfs server that ended on its own (None: still serving)."""
        return self.handle.process.poll() if self.handle is not None else None

    def release(self) -> None:
        """Flush, end the server deliberately, and detach the mount (idempotent).

        The server is told to stop (SIGTERM: it unmounts and exits) rather than left to see
        the last unmount, which never comes while a copy of the mount lives in another mount
        namespace.
        """
        self.released = True
        if self.handle is not None:
            proc = self.handle.process
            if proc.poll() is None:
                if not self.in_namespace:  # there the server flushes as it unmounts
                    with contextlib.suppress(OSError):
                        syncfs(self.path)  # the kernel's dirty pages, before the server goes
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(SERVER_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.handle = None
            with contextlib.suppress(OperationFailed, UserError):
                unmount(self.path, lazy=True, missing_ok=True)
        elif is_mounted(self.path):
            subprocess.run(["umount", "-l", os.fspath(self.path)], check=False)


SERVER_GRACE = 10.0


def private_mounts() -> bool:
    """As root: move into a mount namespace of our own before mounting the container's root.

    The union is then mounted only there (and in the container's namespace, copied from it),
    never in the host's: namespaces the host makes later (``unshare -m``, a service's
    PrivateTmp) get no copy that would outlive the container. Host mounts still reach us
    (slave propagation). An unprivileged user cannot do this without a user namespace, and
    keeps the mount in the host's namespace. True when done.
    """
    if os.geteuid() != 0:
        return False
    try:
        linux.unshare(linux.CLONE_NEWNS)
    except PermissionError:
        return False  # root without CAP_SYS_ADMIN (itself in a container): as before
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    return True


def end_server(pid: int | None, start: int | None, mountpoint: Path) -> None:
    """Stop the unionfs server of a root whose supervisor died: flush, SIGTERM, SIGKILL."""
    from unionfs.runtime.state import pid_alive, wait_gone

    if not pid or not pid_alive(pid, start):
        return
    with contextlib.suppress(OSError):
        syncfs(f"/proc/{pid}/root{mountpoint}")  # through the server's own mount namespace
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, start, SERVER_GRACE):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, start, SERVER_GRACE)


def mount_root(lowers: list[str], upper: Path | None, work: Path | None, mountpoint: Path, *,
               allow_other: bool, log_file: Path | None = None,
               wrapper: Sequence[str] = ()) -> RootMount:
    """Mount ``lowers`` (top first) + ``upper`` at ``mountpoint`` (read-only without upper).

    ``wrapper`` starts the server in other namespaces (``nsenter``): the mount is then in
    that mount namespace, and :meth:`RootMount.release` ends it by signalling the server.
    """
    mountpoint.mkdir(exist_ok=True)
    if os.environ.get(BACKEND_ENV) == "overlay" and not wrapper:
        return _mount_overlay(lowers, upper, work, mountpoint)
    # The container's upper may be committed to an image layer, which cannot hold an
    # overlay redirect: renamed lower directories are copied up whole.
    options = MountOptions(workdir=work, allow_other=allow_other, read_only=upper is None,
                           log_file=log_file, extra=["redirect_dir=off"])
    handle = mount(lowers, mountpoint, upper, options=options, wrapper=wrapper)
    return RootMount(mountpoint, handle, in_namespace=bool(wrapper))


def _mount_overlay(lowers: list[str], upper: Path | None, work: Path | None,
                   mountpoint: Path) -> RootMount:
    data = "lowerdir=" + ":".join(lowers)
    if upper is not None and work is not None:
        data += f",upperdir={upper},workdir={work}"
    if len(lowers) == 1 and upper is None:
        cmd = ["mount", "--bind", "-o", "ro", lowers[0], os.fspath(mountpoint)]
    else:
        cmd = ["mount", "-t", "overlay", "overlay", "-o", data, os.fspath(mountpoint)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise OperationFailed(f"cannot mount the container root: {res.stderr.strip()}")
    return RootMount(mountpoint)


def cleanup_stale(mountpoint: Path) -> None:
    """Lazily unmount a root left behind by a supervisor that was killed."""
    if is_mounted(mountpoint):
        with contextlib.suppress(OSError):
            subprocess.run(["fusermount3", "-u", "-z", os.fspath(mountpoint)], check=False,
                           capture_output=True)
        if is_mounted(mountpoint):
            subprocess.run(["umount", "-l", os.fspath(mountpoint)], check=False,
                           capture_output=True)
