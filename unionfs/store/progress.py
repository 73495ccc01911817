"""Progress bars for long store work: shown on a terminal (stderr), silent otherwise."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

Advance = Callable[[int], None]


def _quiet(_n: int) -> None:
    return None


@contextlib.contextmanager
def progress(label: str, total: int | None = None, *, enabled: bool | None = None
             ) -> Iterator[Advance]:
    """Yield ``advance(nbytes)``; draws a rich bar on stderr when it is a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _quiet
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance


class CountingReader(io.RawIOBase):
    """Reads through to ``f``, reporting each chunk's size to ``advance``."""

    def __init__(self, f: BinaryIO, advance: Advance) -> None:
        self._f, self._advance = f, advance

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        b[: len(data)] = data
        self._advance(len(data))
        return len(data)


Tasks = Callable[[str, int], Advance]


@contextlib.contextmanager
def transfers(*, enabled: bool | None = None) -> Iterator[Tasks]:
    """Yield ``task(label, total) -> advance``: one bar per layer being sent or fetched
    (thread-safe, as rich's Progress is), drawn on stderr when it is a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda _label, _total: _quiet
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:

        def task(label: str, total: int) -> Advance:
            tid = bar.add_task(label, total=total)
            return lambda n: bar.advance(tid, n)

        yield task
