"""Container logs: every run's stdout and stderr, kept apart, one JSON record per line.

The format is docker's json-file one: ``{"log": "text\\n", "stream": "stdout", "time":
"2026-12-01T19:00:00.123456Z"}``. The supervisor gives the container a pipe per stream; a
thread per pipe appends records to ``container.log`` and, for an attached run, copies the
bytes as they come to the caller's own stdout or stderr. ``logs`` writes each record back to
the stream it came from, with ``--tail``, ``--since`` and ``--timestamps``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from unionfs.errors import UserError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Logger:
    """Appends the records of a container's streams to one log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def stream(self, name: str, echo: int | None = None) -> int:
        """A pipe's write end for stream ``name`` (give it to the container); its bytes are
        logged, and copied to ``echo`` when given."""
        r, w = os.pipe2(os.O_CLOEXEC)
        thread = threading.Thread(target=self._pump, args=(r, name, echo), daemon=True,
                                  name=f"log-{name}")
        thread.start()
        self.threads.append(thread)
        return w

    def _pump(self, fd: int, name: str, echo: int | None) -> None:
        partial = b""
        try:
            while chunk := os.read(fd, 65536):
                if echo is not None:
                    with contextlib.suppress(OSError):
                        _write_all(echo, chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                self._write([line + b"\n" for line in lines], name)
        finally:
            if partial:
                self._write([partial], name)
            os.close(fd)

    def _write(self, lines: list[bytes], name: str) -> None:
        if not lines:
            return
        stamp = _now()
        records = "".join(json.dumps({"log": line.decode(errors="replace"), "stream": name,
                                      "time": stamp}) + "\n" for line in lines)
        with self.lock:
            _write_all(self.fd, records.encode())

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the pipes to drain (their writers have exited), then close the file."""
        for thread in self.threads:
            thread.join(timeout)
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an RFC 3339 time, a date, unix seconds, or relative (``10m``, ``30s``)."""
    now = now or datetime.now(UTC)
    if m := _RELATIVE.match(text):
        unit = {"s": "seconds", "m": "minutes", "h": "hours"}[m.group(2)]
        return now - timedelta(**{unit: float(m.group(1))})
    with contextlib.suppress(ValueError):
        return datetime.fromtimestamp(float(text), UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"invalid value for \"since\": {text!r} (e.g. 10m, 2026-12-01T10:00:00Z, "
                        "or unix seconds)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def records(path: Path, offset: int = 0) -> Iterator[tuple[dict[str, Any], int]]:
    """The complete records from byte ``offset`` on, each with the offset after it."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                return  # being written
            offset += len(line)
            try:
                record = json.loads(line)
            except ValueError:
                record = {"log": line.decode(errors="replace"), "stream": "stdout", "time": ""}
            yield record, offset


def _when(record: dict[str, Any]) -> datetime | None:
    with contextlib.suppress(ValueError, AttributeError):
        return datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    return None


def show(path: Path, *, tail: int | None, since: datetime | None, timestamps: bool,
         follow: bool, running: Any) -> None:
    """Write the log's records to stdout/stderr; with ``follow``, while ``running()``."""
    selected: list[dict[str, Any]] = []
    offset = 0
    for record, end in records(path):
        offset = end
        when = _when(record)
        if since is None or (when is not None and when >= since):
            selected.append(record)
    if tail is not None:
        selected = selected[-tail:] if tail > 0 else []
    for record in selected:
        _emit(record, timestamps)
    while follow:
        start, seen = offset, False
        for record, end in records(path, start):
            offset, seen = end, True
            _emit(record, timestamps)
        if not seen:
            if not running():
                break
            time.sleep(0.1)  # polling a file that grows: no event to wait on


def _emit(record: dict[str, Any], timestamps: bool) -> None:
    out = sys.stderr if record.get("stream") == "stderr" else sys.stdout
    text = str(record.get("log", ""))
    if timestamps:
        text = f"{record.get('time', '')} {text}"
    out.buffer.write(text.encode())
    out.flush()
