"""Steps of a change to the upper, as data, and what they mean.

A plan (:mod:`unionfs.core.create`, :mod:`unionfs.core.delete`, :mod:`unionfs.core.rename`)
is a tuple of the steps below. The engine executes them on the disk (``engine/changes.py``);
:func:`apply` is their meaning on a model of one upper directory, for the core's own tests.

A step acts on the entry being changed, at one of two places: ``UPPER`` (its name in its
parent directory in the upper) or ``WORK`` (a fresh temporary name in the work dir, where a
change is prepared so that one ``rename(2)`` makes it visible: a crash leaves the old state
or the new one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from unionfs.core.whiteout import Kind


class Place(Enum):
    UPPER = "the name in the upper"
    WORK = "a temporary name in the work dir"


@dataclass(frozen=True)
class Make:
    """Make the new entry (the request's own open/mkdir/mknod/symlink/link) at ``place``."""

    place: Place


@dataclass(frozen=True)
class Finish:
    """Give the new entry its owner and set-id bits (not for a new link to a file)."""

    place: Place


@dataclass(frozen=True)
class SetOpaque:
    """Mark the directory at ``place`` opaque: it hides what the layers below have."""

    place: Place


@dataclass(frozen=True)
class PutWhiteout:
    """Make a whiteout at ``place``."""

    place: Place


@dataclass(frozen=True)
class Install:
    """Rename the work entry to the name; ``exchange``: swap it with what is there."""

    exchange: bool = False


@dataclass(frozen=True)
class DropWork:
    """Remove the work entry (after an exchange: what was at the name)."""


@dataclass(frozen=True)
class Unlink:
    """Unlink the name in the upper."""


@dataclass(frozen=True)
class Evict:
    """Rename the name into the work dir (a directory is removed there, out of sight)."""


Step = Make | Finish | SetOpaque | PutWhiteout | Install | DropWork | Unlink | Evict


@dataclass
class UpperModel:
    """One upper directory as the steps see it: its entries, which of its directories are
    opaque, and the work dir's temporary entry (None: none)."""

    entries: dict[bytes, Kind]
    opaque: set[bytes] = field(default_factory=set)
    work: Kind | None = None
    work_opaque: bool = False

    def copy(self) -> UpperModel:
        return UpperModel(dict(self.entries), set(self.opaque), self.work, self.work_opaque)


def apply(model: UpperModel, name: bytes, kind: Kind, steps: tuple[Step, ...]) -> UpperModel:
    """The upper directory after ``steps`` change ``name`` (``kind``: what Make makes)."""
    out = model.copy()
    for step in steps:
        if isinstance(step, Make | PutWhiteout):
            made = kind if isinstance(step, Make) else Kind.WHITEOUT
            if step.place is Place.WORK:
                out.work, out.work_opaque = made, False
            else:
                out.entries[name] = made
                out.opaque.discard(name)
        elif isinstance(step, SetOpaque):
            if step.place is Place.WORK:
                out.work_opaque = True
            else:
                out.opaque.add(name)
        elif isinstance(step, Install):
            _install(out, name, step.exchange)
        elif isinstance(step, DropWork):
            out.work, out.work_opaque = None, False
        elif isinstance(step, Unlink):
            out.entries.pop(name, None)
            out.opaque.discard(name)
        elif isinstance(step, Evict):
            out.work, out.work_opaque = out.entries.pop(name, None), name in out.opaque
            out.opaque.discard(name)
    return out


def _install(out: UpperModel, name: bytes, exchange: bool) -> None:
    here, here_opaque = out.entries.pop(name, None), name in out.opaque
    out.opaque.discard(name)
    if out.work is not None:
        out.entries[name] = out.work
        if out.work_opaque:
            out.opaque.add(name)
    out.work, out.work_opaque = (here, here_opaque) if exchange else (None, False)
