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

from unionfs.api import MountHandle, MountOptions, is_mounted, mount
from unionfs.errors import OperationFailed

BACKEND_ENV = "UNIONFS_ROOTFS"


@dataclass
class RootMount:
    """A mounted container root; :meth:`release` unmounts it."""

    path: Path
    handle: MountHandle | None = None
    in_namespace: bool = False  # served in another mount namespace: only the server can end it

    def release(self) -> None:
        """Unmount (idempotent)."""
        if self.handle is not None and self.in_namespace:
            stop_server(self.handle.process)
            self.handle = None
        elif self.handle is not None:
            self.handle.unmount()
            self.handle = None
        elif is_mounted(self.path):
            subprocess.run(["umount", "-l", os.fspath(self.path)], check=False)


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


def stop_server(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM a server (it unmounts and exits), SIGKILL if it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
