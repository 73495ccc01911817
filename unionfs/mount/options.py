"""How a union is mounted: the one option model, and its ``-o`` text both ways.

:class:`MountOptions` is what a caller of :func:`unionfs.api.mount` gives and what the
server's checked :class:`~unionfs.mount.spec.MountSpec` holds (it is one). Between the two
there is a process boundary: the options travel as the server's command line
(:meth:`MountOptions.to_args`) and are read back by :func:`options_from_text`, the same
parser ``unionfs mount -o`` uses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from unionfs.errors import UserError

PathLike = str | os.PathLike[str]

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
class MountOptions:
    """How a union is mounted; the defaults suit most users."""

    read_only: bool = False
    allow_other: bool = False
    workdir: PathLike | None = None  # default: <upper>.work
    entry_timeout: float = 300.0
    attr_timeout: float = 300.0
    negative_timeout: float = 300.0
    poll_us: int = DEFAULT_POLL_US  # how long the server polls for the next request
    userxattr: bool | None = None  # None: decide by probing what the upper accepts
    volatile: bool = False  # no fsync of copied-up data
    extensions: bool = True  # the libfuse extensions of unionfs.fuse.lowlevel (no_extensions)
    redirect_dir: bool = True  # off: renaming a lower directory copies its tree up
    metrics: bool = False  # request accounting for `unionfs watch` from the mount on
    trace: PathLike | None = None  # a line per request to this file (-o trace)
    fail: Sequence[str] = ()  # fault rules (-o fail), see unionfs.core.faults
    log_level: str = "warning"
    log_file: PathLike | None = None
    extra: list[str] = field(default_factory=list)  # more -o items, read as the others

    def option_items(self) -> list[str]:
        """The ``-o`` items that say the same (read back by :func:`options_from_text`)."""
        items = [f"entry_timeout={self.entry_timeout}", f"attr_timeout={self.attr_timeout}"]
        if self.negative_timeout != 300.0:
            items.append(f"negative_timeout={self.negative_timeout}")
        if self.poll_us != DEFAULT_POLL_US:
            items.append(f"poll_us={self.poll_us}")
        flags = {"ro": self.read_only, "allow_other": self.allow_other,
                 "volatile": self.volatile, "no_extensions": not self.extensions,
                 "redirect_dir=off": not self.redirect_dir}
        items += [flag for flag, on in flags.items() if on]
        if self.workdir:
            items.append(f"workdir={escape_option(os.fspath(self.workdir))}")
        if self.userxattr is not None:
            items.append("userxattr" if self.userxattr else "nouserxattr")
        return items + self.extra + self.watch_items()

    def watch_items(self) -> list[str]:
        """The ``-o`` items of the metrics, trace and fail options (``fail`` last: its
        rules run on to the end of the list)."""
        items = ["metrics"] if self.metrics else []
        if self.trace:
            items.append(f"trace={escape_option(os.fspath(self.trace))}")
        if self.fail:
            items.append("fail=" + ",".join(self.fail))
        return items

    def to_args(self) -> list[str]:
        """The ``unionfs mount`` command-line flags that say the same."""
        args = ["--log-level", self.log_level]
        if self.log_file:
            args += ["--log-file", os.fspath(self.log_file)]
        return [*args, "-o", ",".join(self.option_items())]

    def options(self) -> MountOptions:
        """Just the options (of a spec: without its layers)."""
        return MountOptions(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(MountOptions)})


def escape_option(value: str) -> str:
    """Escape ',' and '\\' in a ``-o`` option value."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def escape_layer(path: str) -> str:
    """Escape ':' and '\\' in one element of a ``lower1:lower2`` list, as overlayfs does."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


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


def options_from_text(text: str | None) -> MountOptions:
    """The options ``-o text`` says, each value checked (a trace file is checked with the
    mount point, by :func:`unionfs.mount.spec.build_spec`)."""
    opts = parse_options(text)
    out = MountOptions(read_only=bool(opts.get("ro")), allow_other=bool(opts.get("allow_other")),
                       volatile=bool(opts.get("volatile")),
                       extensions=not opts.get("no_extensions"),
                       metrics=bool(opts.get("metrics")))
    if opts.get("userxattr"):
        out.userxattr = True
    elif opts.get("nouserxattr"):
        out.userxattr = False
    for key in ("entry_timeout", "attr_timeout", "negative_timeout"):
        if key in opts:
            setattr(out, key, _seconds(key, str(opts[key])))
    if "poll_us" in opts:
        out.poll_us = _poll_us(str(opts["poll_us"]))
    if "redirect_dir" in opts:
        if opts["redirect_dir"] not in ("on", "off"):
            raise UserError(f"redirect_dir must be on or off, not {opts['redirect_dir']!r}")
        out.redirect_dir = opts["redirect_dir"] == "on"
    if "workdir" in opts:
        out.workdir = os.path.abspath(str(opts["workdir"]))
    if "fail" in opts:
        out.fail = _fault_rules(str(opts["fail"]))
    if "trace" in opts:
        out.trace = str(opts["trace"])
    return out


def _fault_rules(text: str) -> list[str]:
    from unionfs.core.faults import RuleError, parse_rules

    rules = [r for r in text.split(",") if r]
    try:
        parse_rules(rules)
    except RuleError as exc:
        raise UserError(str(exc)) from None
    return rules


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
