"""What a mount request means, checked before anything is mounted.

Turns ``lower1:lower2 [upper] mountpoint`` and ``-o`` options into a :class:`MountSpec`, or a
:class:`UserError` that names the problem in one line.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass, field

from unionfs.core.whiteout import TRUSTED, USER, XattrNamespace
from unionfs.errors import UserError
from unionfs.mount.options import MountOptions, options_from_text, split_escaped
from unionfs.mount.process import is_mounted


@dataclass(kw_only=True)
class MountSpec(MountOptions):
    """A checked mount request: its options, and the layers and mount point they apply to
    (``workdir`` and ``trace`` are absolute paths, ``workdir`` set when there is an upper)."""

    lowers: list[str]
    upper: str | None
    mountpoint: str
    xattr_ns: XattrNamespace = field(default=TRUSTED)

    @property
    def writable(self) -> bool:
        return self.upper is not None and not self.read_only

    @property
    def work_path(self) -> str | None:
        return None if self.workdir is None else os.fspath(self.workdir)

    @property
    def trace_path(self) -> str | None:
        return None if self.trace is None else os.fspath(self.trace)


def parse_lowers(spec: str) -> list[str]:
    """``lower1:lower2`` (``\\:`` for a colon in a name) into absolute paths."""
    parts = split_escaped(spec, ":")
    if not spec or any(p == "" for p in parts):
        raise UserError(f"empty layer in lower list {spec!r} (escape ':' in a name as '\\:')")
    return [os.path.abspath(p) for p in parts]


def build_spec(lowers: str, upper: str | None, mountpoint: str, options: str | None) -> MountSpec:
    """Check everything about a request that can be checked before mounting."""
    opts = options_from_text(options)
    spec = MountSpec(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)},
                     lowers=parse_lowers(lowers),
                     upper=os.path.abspath(upper) if upper else None,
                     mountpoint=os.path.realpath(mountpoint))
    spec.read_only = spec.read_only or spec.upper is None
    if spec.trace is not None:
        spec.trace = _trace_file(os.fspath(spec.trace), spec.mountpoint)
    _check_layers(spec)
    _check_mountpoint(spec.mountpoint)
    _check_fuse()
    if spec.upper is not None:
        spec.workdir = spec.work_path or default_workdir(spec.upper)
        _check_workdir(spec)
        spec.xattr_ns = choose_namespace(spec.workdir, spec.userxattr)
    return spec


def _trace_file(value: str, mountpoint: str) -> str:
    if not value:
        raise UserError("trace needs a file: -o trace=FILE")
    path = os.path.abspath(value)
    real = os.path.realpath(path)
    if _inside(real, mountpoint):
        raise UserError(f"trace file {path} is inside the mount point {mountpoint}")
    if os.path.isdir(real):
        raise UserError(f"trace file {path} is a directory")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UserError(f"trace file {path}: {parent} is not a writable directory")
    return path


def default_workdir(upper: str) -> str:
    """The work dir beside the upper: ``<upper>.work``."""
    return upper.rstrip("/") + ".work"


def _check_dir(path: str, role: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"{role} {path} does not exist")
    if not os.path.isdir(path):
        raise UserError(f"{role} {path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{role} {path} is not readable")


def _inside(a: str, b: str) -> bool:
    """True when ``a`` is ``b`` or below it (both real paths)."""
    return a == b or a.startswith(b.rstrip("/") + "/")


def _check_layers(spec: MountSpec) -> None:
    for lower in spec.lowers:
        _check_dir(lower, "lower layer")
    _check_distinct_lowers(spec.lowers)
    _check_mountpoint_not_a_layer(spec)
    if spec.upper is None:
        return
    _check_dir(spec.upper, "upper layer")
    upper = os.path.realpath(spec.upper)
    for lower in spec.lowers:
        real = os.path.realpath(lower)
        if _inside(upper, real) or _inside(real, upper):
            raise UserError(f"upper {spec.upper} overlaps lower layer {lower}")


def _check_distinct_lowers(lowers: list[str]) -> None:
    """The same directory twice in the stack (by any path): the kernel's overlayfs refuses
    it ("conflicting lowerdir path"), and so do we."""
    seen: dict[tuple[int, int], str] = {}
    for lower in lowers:
        st = os.stat(lower)
        first = seen.get((st.st_dev, st.st_ino))
        if first is not None:
            raise UserError(f"lower layer {lower} is given twice (also as {first})")
        seen[(st.st_dev, st.st_ino)] = lower


def _check_mountpoint_not_a_layer(spec: MountSpec) -> None:
    """A mount point that is one of the layers would hide it under the union: the layer
    could no longer be read or committed by its path (the store and `unionfs diff` do)."""
    layers = [*spec.lowers, *([spec.upper] if spec.upper else [])]
    for layer in layers:
        if os.path.realpath(layer) == spec.mountpoint:
            raise UserError(f"mount point {spec.mountpoint} is a layer of the union ({layer})")


def _check_mountpoint(path: str) -> None:
    # Mounted first: a stat of a dead FUSE mount fails (ENOTCONN), which would read as
    # "does not exist".
    if is_mounted(path):
        raise UserError(f"mount point {path} is already mounted (unmount it first)")
    _check_dir(path, "mount point")


FUSE_RDEV = os.makedev(10, 229)


def _check_fuse() -> None:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise UserError("/dev/fuse is not accessible to this user (make it mode 0666, as "
                        "Debian's udev rules do)") from None
    except OSError as exc:
        raise UserError(f"/dev/fuse is not available: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != FUSE_RDEV:
        raise UserError("/dev/fuse is not available: it is not the FUSE device (10:229)")


def _check_workdir(spec: MountSpec) -> None:
    workdir = spec.work_path
    assert spec.upper is not None and workdir is not None
    work = os.path.realpath(workdir)
    upper = os.path.realpath(spec.upper)
    if _inside(work, upper) or _inside(upper, work):
        raise UserError(f"work dir {workdir} overlaps upper {spec.upper}")
    for lower in spec.lowers:
        if _inside(work, os.path.realpath(lower)):
            raise UserError(f"work dir {workdir} is inside lower layer {lower}")
    # Checked before anything is made, so a rejected work dir leaves nothing behind.
    exists = os.path.lexists(workdir)
    if exists:
        _check_dir(workdir, "work dir")
    else:
        parent = os.path.dirname(workdir.rstrip("/")) or "/"
        if not os.path.isdir(parent):
            raise UserError(f"work dir {workdir}: its parent {parent} does not exist")
    where = workdir if exists else os.path.dirname(workdir.rstrip("/")) or "/"
    if os.stat(where).st_dev != os.stat(spec.upper).st_dev:
        raise UserError(f"work dir {workdir} is not on the upper's filesystem")
    if not exists:
        try:
            os.mkdir(workdir, 0o700)
        except OSError as exc:
            raise UserError(f"cannot create work dir {workdir}: {exc.strerror}") from None


def choose_namespace(workdir: str, userxattr: bool | None) -> XattrNamespace:
    """``trusted.`` when the server may write it, else ``user.`` (overlayfs's userxattr)."""
    if userxattr is not None:
        return USER if userxattr else TRUSTED
    try:
        os.setxattr(workdir, TRUSTED.prefix + b"unionfs.probe", b"1")
        os.removexattr(workdir, TRUSTED.prefix + b"unionfs.probe")
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
            return USER
        raise
    return TRUSTED
