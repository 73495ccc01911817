"""What a workload's timed command is made of: the command, its context, and "not here"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unionfs.benchmarks.profiles import Sizes


class NotAvailable(Exception):
    """The workload has no meaning or no implementation on this target (yet)."""


@dataclass(frozen=True)
class Command:
    """A timed child process; ``parse`` reads the time from its output instead of the clock."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] | None = None
    parse: Callable[[str], float] | None = None


@dataclass(frozen=True)
class Context:
    """What a workload's command is built from."""

    sizes: Sizes
    data: Path  # the layer data cache
    path: Path  # the mount (or native directory) to work in
    upper: Path  # the upper layer (for native: the directory itself)
    scratch: Path  # a private directory outside the mount, deleted afterwards
    target: str  # the target's name
