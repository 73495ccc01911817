"""Faults on purpose: rules that make chosen requests fail or wait (pure: no I/O).

A rule is ``REQUEST:ACTION[:KEY=VALUE...]``, for example ``write:EIO:path=*.db:after=3``:

* ``REQUEST`` a FUSE request name (``lookup``, ``getattr``, ``open``, ``read``, ``write``,
  ``create``, ``mkdir``, ``unlink``, ``rename``, ``fsync``, ``setattr`` ...) or ``*`` (any);
* the action, an errno name (``EIO``, ``ENOSPC``, ``EACCES`` ...) and/or ``delay=DURATION``
  (``50ms``, ``2s``, ``250us``: the request waits that long, then goes on or fails);
* conditions, all of which must hold for the rule to fire on a request it matches:
  ``path=GLOB`` (the path below the mount's root, no leading slash; ``*`` also matches ``/``),
  ``after=N`` (the first N matching requests pass), ``every=N`` (then only every Nth),
  ``probability=P`` (each with probability P, drawn from ``seed=S`` when given),
  ``after_bytes=SIZE`` (once the bytes written through the mount since the rule was added,
  with this request's own, exceed SIZE: ``10M``, ``64k``), ``times=N`` (fire at most N times).

:func:`parse_rule` turns the text into a :class:`Rule`; a :class:`RuleState` counts what the
rule has seen and decides, request by request, whether it fires.
"""

from __future__ import annotations

import errno
import fnmatch
import random
import re
from dataclasses import dataclass, field

REQUESTS = frozenset({
    "lookup", "getattr", "setattr", "readlink", "opendir", "readdir", "statfs", "getxattr",
    "listxattr", "setxattr", "removexattr", "open", "read", "write", "fsync", "release",
    "create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "*",
})
MAX_DELAY = 3600.0
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_KEYS = ("path", "after", "every", "probability", "after_bytes", "times", "seed", "delay")


class RuleError(ValueError):
    """A rule that does not parse; the message names the problem in one line."""


@dataclass(frozen=True)
class Rule:
    """One parsed fault rule (see the module docstring for the meaning of each field)."""

    text: str
    request: str
    errno: int | None = None
    delay: float = 0.0
    path: str | None = None
    after: int = 0
    every: int = 1
    probability: float = 1.0
    after_bytes: int | None = None
    times: int | None = None
    seed: int | None = None

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno.errorcode[self.errno]


def parse_rules(texts: list[str] | str) -> list[Rule]:
    """Parse a list of rules, or a comma-separated string of them."""
    if isinstance(texts, str):
        texts = [t for t in texts.split(",") if t.strip()]
    if not texts:
        raise RuleError("no fault rule given")
    return [parse_rule(t) for t in texts]


def parse_rule(text: str) -> Rule:
    """``write:EIO:path=*.db:after=3`` into a :class:`Rule`, or :class:`RuleError`."""
    text = text.strip()
    parts = text.split(":")
    if len(parts) < 2:
        raise RuleError(f"fault rule {text!r}: expected REQUEST:ERRNO[:KEY=VALUE...]")
    request = parts[0]
    if request not in REQUESTS:
        raise RuleError(f"fault rule {text!r}: unknown request {request!r}")
    values: dict[str, object] = {}
    code: int | None = None
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            if code is not None:
                raise RuleError(f"fault rule {text!r}: more than one errno")
            code = _errno(text, part)
            continue
        if key not in _KEYS:
            raise RuleError(f"fault rule {text!r}: unknown key {key!r}")
        if key in values:
            raise RuleError(f"fault rule {text!r}: {key} given twice")
        values[key] = _value(text, key, value)
    delay = float(values.pop("delay", 0.0))  # type: ignore[arg-type]
    if code is None and not delay:
        raise RuleError(f"fault rule {text!r}: give an errno (EIO, ENOSPC...) or delay=TIME")
    return Rule(text, request, code, delay, **values)  # type: ignore[arg-type]


def _errno(text: str, name: str) -> int:
    code = getattr(errno, name, None)
    if not name.startswith("E") or not isinstance(code, int) or code <= 0:
        raise RuleError(f"fault rule {text!r}: {name!r} is not an errno name (EIO, ENOSPC...)")
    return code


def _value(text: str, key: str, value: str) -> object:
    try:
        if key == "path":
            if not value:
                raise ValueError("empty")
            return value.lstrip("/") or "*"
        if key in ("after", "times", "seed"):
            return _count(value, minimum=0)
        if key == "every":
            return _count(value, minimum=1)
        if key == "probability":
            p = float(value)
            if not 0.0 <= p <= 1.0:
                raise ValueError("not between 0 and 1")
            return p
        if key == "after_bytes":
            return parse_size(value)
        return parse_duration(value)
    except ValueError as exc:
        raise RuleError(f"fault rule {text!r}: bad {key} {value!r} ({exc})") from None


def _count(value: str, *, minimum: int) -> int:
    number = int(value)
    if number < minimum:
        raise ValueError(f"must be at least {minimum}")
    return number


def parse_size(value: str) -> int:
    """``10M``, ``64k``, ``4096`` (binary units) into bytes."""
    match = re.fullmatch(r"(\d+)([kmgt]?)i?b?", value.strip().lower())
    if not match:
        raise ValueError("expected a size like 4096, 64k, 10M")
    return int(match[1]) * _SIZE_UNITS[match[2]]


def parse_duration(value: str) -> float:
    """``50ms``, ``2s``, ``250us`` into seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s)", value.strip())
    if not match:
        raise ValueError("expected a duration like 250us, 50ms, 2s")
    seconds = float(match[1]) * _TIME_UNITS[match[2]]
    if seconds > MAX_DELAY:
        raise ValueError(f"at most {MAX_DELAY:.0f}s")
    return seconds


@dataclass
class RuleState:
    """A live rule: what it has seen and done. ``written_at_add`` is the mount's count of
    bytes written when the rule was added (``after_bytes`` counts from there)."""

    rule: Rule
    ident: int = 0
    written_at_add: int = 0
    matched: int = 0
    injected: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.rule.seed is not None:
            self.rng = random.Random(self.rule.seed)

    def wants_path(self) -> bool:
        return self.rule.path is not None

    def fires(self, request: str, path: str | None, written: int, size: int = 0) -> bool:
        """Whether this rule fires on ``request`` of ``path`` (None: the path is not
        needed or has none), with ``written`` bytes written through the mount so far and
        ``size`` bytes this request would write. Counts the request when it matches."""
        rule = self.rule
        if rule.request != "*" and rule.request != request:
            return False
        if rule.path is not None and (path is None or not fnmatch.fnmatchcase(path, rule.path)):
            return False
        self.matched += 1
        if rule.times is not None and self.injected >= rule.times:
            return False
        passed = self.matched - rule.after
        if passed <= 0 or passed % rule.every:
            return False
        if rule.after_bytes is not None and written - self.written_at_add + size <= \
                rule.after_bytes:
            return False
        if rule.probability < 1.0 and self.rng.random() >= rule.probability:
            return False
        self.injected += 1
        return True

    def describe(self) -> dict[str, object]:
        """What ``unionfs fail MOUNT list`` shows of this rule."""
        return {"id": self.ident, "rule": self.rule.text, "matched": self.matched,
                "injected": self.injected}
