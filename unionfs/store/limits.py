"""Bounds on what an untrusted archive may expand to, checked while it streams.

A layer (or imported root filesystem) may expand to at most ``max_size`` bytes and
``max_entries`` entries, and, once past ``RATIO_FLOOR`` expanded bytes, to at most
``max_ratio`` times the compressed bytes read so far: a decompression bomb stops within the
first few hundred megabytes instead of filling the disk. The defaults fit real images (a
distribution layer compresses 3-10x); ``--max-layer-size``, ``--max-ratio`` and
``--max-entries`` raise them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unionfs.errors import UserError

GiB = 1 << 30
RATIO_FLOOR = 64 << 20


@dataclass(frozen=True)
class Limits:
    max_size: int = 16 * GiB
    max_ratio: int = 100
    max_entries: int = 1_000_000


DEFAULT = Limits()


class LimitExceeded(UserError):
    """An archive over one of the limits (exit status 2, nothing stored)."""


class CountReader(io.RawIOBase):
    """Reads through to ``f`` and counts the bytes (the compressed side of a stream);
    subclasses see each piece read in :meth:`seen`."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        self.seen(data)
        return n

    def seen(self, data: bytes) -> None:
        """Called with every piece read."""


class BoundedReader(CountReader):
    """Reads the expanded stream ``f``, raising :class:`LimitExceeded` past the limits."""

    def __init__(self, f: Any, compressed: Callable[[], int], limits: Limits) -> None:
        super().__init__(f)
        self._compressed, self._limits = compressed, limits

    def seen(self, data: bytes) -> None:
        self._check()

    def _check(self) -> None:
        lim = self._limits
        if self.count > lim.max_size:
            raise LimitExceeded(f"archive expands past {_human(lim.max_size)} "
                                "(raise with --max-layer-size)")
        if self.count > RATIO_FLOOR and self.count > lim.max_ratio * max(self._compressed(),
                                                                         1):
            raise LimitExceeded(f"archive expands more than {lim.max_ratio}x its compressed "
                                "size: a decompression bomb? (raise with --max-ratio)")


def check_entries(count: int, limits: Limits) -> None:
    if count > limits.max_entries:
        raise LimitExceeded(f"archive has more than {limits.max_entries} entries "
                            "(raise with --max-entries)")


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``4096`` (binary units) as bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = units.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in units else t)
    except ValueError:
        raise UserError(f"invalid size {text!r} (e.g. 512M, 20G)") from None
    if value <= 0:
        raise UserError(f"invalid size {text!r}: must be positive")
    return int(value * mult)


def _human(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n >> 20} MiB"
