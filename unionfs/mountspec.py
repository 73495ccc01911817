"""What a mount request means, checked before anything is mounted.

Turns ``lower1:lower2 [upper] mountpoint`` and ``-o`` options into a :class:`MountSpec`, or a
:class:`UserError` that names the problem in one line.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from unionfs.api import escape_option, is_mounted
from unionfs.core.whiteout import TRUSTED, USER, XattrNamespace
from unionfs.errors import UserError

KNOWN_FLAGS = {"ro", "allow_other", "userxattr", "nouserxattr", "volatile", "rw",
               "no_extensions"}
KNOWN_VALUES = {"workdir", "entry_timeout", "attr_timeout", "negative_timeout", "poll_us",
                "redirect_dir"}
DEFAULT_POLL_US = 50
MAX_POLL_US = 10_000
# Watching requests (unionfs.fuse.watch): -o metrics, -o trace=FILE, -o fail=RULE[,RULE...].
WATCH_FLAGS = {"metrics"}
WATCH_VALUES = {"trace", "fail"}


@dataclass
class MountSpec:
    """A checked mount request."""

    lowers: list[str]
    upper: str | None
    mountpoint: str
    workdir: str | None = None
    read_only: bool = False
    allow_other: bool = False
    userxattr: bool | None = None
    volatile: bool = False
    entry_timeout: float = 300.0
    attr_timeout: float = 300.0
    negative_timeout: float = 300.0
    poll_us: int = DEFAULT_POLL_US  # how long the server polls for the next request
    extensions: bool = True  # the libfuse extensions of unionfs.fuse.lowlevel (no_extensions)
    redirect_dir: bool = True  # off: renaming a lower directory copies its tree up
    xattr_ns: XattrNamespace = field(default=TRUSTED)
    metrics: bool = False  # request accounting for `unionfs watch` from the mount on
    trace: str | None = None  # a line per request written to this file
    fail: list[str] = field(default_factory=list)  # fault rules (unionfs.core.faults)

    @property
    def writable(self) -> bool:
        return self.upper is not None and not self.read_only


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not escaped with a backslash; ``\\\\`` is a backslash."""
    parts: list[str] = []
    cur: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise UserError(f"dangling backslash in {text!r}")
            cur.append(nxt)
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_lowers(spec: str) -> list[str]:
    """``lower1:lower2`` (``\\:`` for a colon in a name) into absolute paths."""
    parts = split_escaped(spec, ":")
    if not spec or any(p == "" for p in parts):
        raise UserError(f"empty layer in lower list {spec!r} (escape ':' in a name as '\\:')")
    return [os.path.abspath(p) for p in parts]


def parse_options(text: str | None) -> dict[str, str | bool]:
    """``-o a,b=c`` into a dict; unknown options are refused."""
    opts: dict[str, str | bool] = {}
    if not text:
        return opts
    for item in split_escaped(text, ","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if "fail" in opts and _looks_like_rule(item):  # fail=RULE,RULE: the list goes on
            opts["fail"] = f"{opts['fail']},{item}"
        elif eq and key in KNOWN_VALUES | WATCH_VALUES:
            opts[key] = value
        elif not eq and key in KNOWN_FLAGS | WATCH_FLAGS:
            opts[key] = True
        else:
            raise UserError(f"unknown mount option {item!r}")
    return opts


def _looks_like_rule(item: str) -> bool:
    """``write:EIO:after=3``: a fault rule, not an option (no option has ':' before '=')."""
    head, colon, _ = item.partition(":")
    return bool(colon) and "=" not in head


def build_spec(lowers: str, upper: str | None, mountpoint: str, options: str | None) -> MountSpec:
    """Check everything about a request that can be checked before mounting."""
    opts = parse_options(options)
    spec = MountSpec(parse_lowers(lowers), os.path.abspath(upper) if upper else None,
                     os.path.realpath(mountpoint))
    spec.read_only = bool(opts.get("ro")) or spec.upper is None
    spec.allow_other = bool(opts.get("allow_other"))
    spec.volatile = bool(opts.get("volatile"))
    spec.extensions = not opts.get("no_extensions")
    if opts.get("userxattr"):
        spec.userxattr = True
    elif opts.get("nouserxattr"):
        spec.userxattr = False
    for key in ("entry_timeout", "attr_timeout", "negative_timeout"):
        if key in opts:
            setattr(spec, key, _seconds(key, str(opts[key])))
    if "poll_us" in opts:
        spec.poll_us = _poll_us(str(opts["poll_us"]))
    if "redirect_dir" in opts:
        if opts["redirect_dir"] not in ("on", "off"):
            raise UserError(f"redirect_dir must be on or off, not {opts['redirect_dir']!r}")
        spec.redirect_dir = opts["redirect_dir"] == "on"
    if "workdir" in opts:
        spec.workdir = os.path.abspath(str(opts["workdir"]))
    _watch_options(spec, opts)
    _check_layers(spec)
    _check_mountpoint(spec.mountpoint)
    _check_fuse()
    if spec.upper is not None:
        spec.workdir = spec.workdir or default_workdir(spec.upper)
        _check_workdir(spec)
        spec.xattr_ns = choose_namespace(spec.workdir, spec.userxattr)
    return spec


def _watch_options(spec: MountSpec, opts: dict[str, str | bool]) -> None:
    """-o metrics, trace=FILE, fail=RULES: checked here, so a bad one mounts nothing."""
    spec.metrics = bool(opts.get("metrics"))
    if "fail" in opts:
        from unionfs.core.faults import RuleError, parse_rules

        spec.fail = [r for r in str(opts["fail"]).split(",") if r]
        try:
            parse_rules(spec.fail)
        except RuleError as exc:
            raise UserError(str(exc)) from None
    if "trace" in opts:
        spec.trace = _trace_file(str(opts["trace"]), spec.mountpoint)


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


def watch_options(spec: MountSpec) -> list[str]:
    """The ``-o`` items that say ``spec``'s metrics, trace and fail options again."""
    items = ["metrics"] if spec.metrics else []
    if spec.trace:
        items.append("trace=" + escape_option(spec.trace))
    if spec.fail:
        items.append("fail=" + ",".join(spec.fail))
    return items


def default_workdir(upper: str) -> str:
    """The work dir beside the upper: ``<upper>.work``."""
    return upper.rstrip("/") + ".work"


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise UserError(f"{key} must be a number of seconds, not {value!r}") from None
    if seconds < 0:
        raise UserError(f"{key} must not be negative")
    return seconds


def _poll_us(value: str) -> int:
    try:
        micros = int(value)
    except ValueError:
        raise UserError(f"poll_us must be a whole number of microseconds, not {value!r}") from None
    if not 0 <= micros <= MAX_POLL_US:
        raise UserError(f"poll_us must be between 0 and {MAX_POLL_US}")
    return micros


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
    assert spec.upper is not None and spec.workdir is not None
    work = os.path.realpath(spec.workdir)
    upper = os.path.realpath(spec.upper)
    if _inside(work, upper) or _inside(upper, work):
        raise UserError(f"work dir {spec.workdir} overlaps upper {spec.upper}")
    for lower in spec.lowers:
        if _inside(work, os.path.realpath(lower)):
            raise UserError(f"work dir {spec.workdir} is inside lower layer {lower}")
    # Checked before anything is made, so a rejected work dir leaves nothing behind.
    exists = os.path.lexists(spec.workdir)
    if exists:
        _check_dir(spec.workdir, "work dir")
    else:
        parent = os.path.dirname(spec.workdir.rstrip("/")) or "/"
        if not os.path.isdir(parent):
            raise UserError(f"work dir {spec.workdir}: its parent {parent} does not exist")
    where = spec.workdir if exists else os.path.dirname(spec.workdir.rstrip("/")) or "/"
    if os.stat(where).st_dev != os.stat(spec.upper).st_dev:
        raise UserError(f"work dir {spec.workdir} is not on the upper's filesystem")
    if not exists:
        try:
            os.mkdir(spec.workdir, 0o700)
        except OSError as exc:
            raise UserError(f"cannot create work dir {spec.workdir}: {exc.strerror}") from None


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
