"""``-o trace=FILE``: one line per request, written by a thread, never by the request.

The request thread only appends a tuple to a deque; a writer thread takes what waits every
:data:`FLUSH_SECONDS` (or as soon as :data:`FLUSH_AT` lines wait), formats the lines and
writes them in one go. If the writer falls :data:`MAX_PENDING` lines behind, lines are dropped
and a ``# dropped N`` line says so. The format (one line per request, fields separated by one
space)::

    2026-12-01T19:30:01.123456Z lookup 0x1 /d/new.db 25.1us ENOENT negative
    TIME                        REQUEST NODE PATH   DURATION RESULT [DETAIL...]

TIME is when the request ended (UTC); NODE the inode the request names (the parent for
lookup, create, mkdir, unlink, rename ...; ``-`` when none); PATH its path in the mount
(``<unlinked>`` for an open file that has no name any more; bytes other than printable
non-space characters, and ``\\``, are written ``\\xNN``); RESULT ``OK`` or the errno name the
caller gets; DETAIL what else is known (``-> 0x...`` the node found or made, ``off=`` and
``bytes=`` of reads and writes, ``to=`` of a rename, ``injected=RULE`` for an injected fault).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import time
from collections import deque
from typing import IO, Any

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
FLUSH_AT = 4096
MAX_PENDING = 1 << 20
HEADER = "# unionfs trace: TIME REQUEST NODE PATH DURATION RESULT [DETAIL...]\n"

# (end time ns, request, node id or None, path bytes or None, duration ns, errno, detail)
Record = tuple[int, str, int | None, bytes | None, int, int, str]

_PLAIN_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x5C)  # printable ASCII, no backslash


class TraceWriter:
    """Appends request lines to a file from a background thread."""

    def __init__(self, path: str, mountpoint: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.file: IO[str] = os.fdopen(fd, "a", encoding="utf-8")
        self.path = path
        self.pending: deque[Record] = deque()  # appended here, taken by the thread
        self.dropped = 0
        self.wake = threading.Event()
        self.writing = threading.Lock()
        self.stopping = False
        self.file.write(f"# unionfs trace of {mountpoint} (server pid {os.getpid()}), "
                        f"started {_when(time.time_ns())}\n{HEADER}")
        self.file.flush()
        self.thread = threading.Thread(target=self._run, name="unionfs-trace", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def add(self, record: Record) -> None:
        """Called on the request thread: O(1), no I/O."""
        pending = self.pending
        if len(pending) >= MAX_PENDING:
            self.dropped += 1
            return
        pending.append(record)
        if len(pending) == FLUSH_AT:
            self.wake.set()

    def close(self) -> None:
        """Write what is left and stop the thread (idempotent)."""
        if self.stopping:
            return
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=10)
        self.flush()
        self.file.close()
        atexit.unregister(self.close)

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            try:
                self.flush()
            except (OSError, ValueError) as exc:  # a full disk: say so once, keep serving
                log.error("trace %s: %s; tracing stopped", self.path, exc)
                return

    def flush(self) -> None:
        """Format and write the lines that wait (the writer thread's work; the lock is only
        between writers, the request thread never takes it)."""
        with self.writing:
            pending = self.pending
            batch = [pending.popleft() for _ in range(len(pending))]  # the only consumer
            dropped, self.dropped = self.dropped, 0
            if not batch and not dropped:
                return
            lines = [format_record(r) for r in batch]
            if dropped:
                lines.append(f"# dropped {dropped} lines (the trace file could not keep up)\n")
            self.file.write("".join(lines))
            self.file.flush()


def format_record(record: Record) -> str:
    end, request, node, path, ns, code, detail = record
    node_text = "-" if node is None else f"{node:#x}"
    path_text = "-" if path is None else ("/" + escape_path(path) if path != b"<unlinked>"
                                          else "<unlinked>")
    result = "OK" if code == 0 else errno.errorcode.get(code, str(code))
    line = f"{_when(end)} {request} {node_text} {path_text} {ns / 1e3:.1f}us {result}"
    return f"{line} {detail}\n" if detail else line + "\n"


def escape_path(raw: bytes) -> str:
    """A path as one space-free field: ``\\xNN`` for what is not printable, ``\\``, spaces."""
    if not raw.translate(None, _PLAIN_BYTES):  # nothing but plain bytes: the usual case
        return raw.decode("ascii")
    text = raw.decode("utf-8", "surrogateescape")
    return "".join(c if c.isprintable() and not c.isspace() and c != "\\" else _hex(c)
                   for c in text)


def _hex(char: str) -> str:
    data = char.encode("utf-8", "surrogateescape")
    return "".join(f"\\x{b:02x}" for b in data)


def _when(ns: int, _last: list[Any] = [None, ""]) -> str:  # noqa: B006 (a cache)
    seconds, rest = divmod(ns, 10**9)
    if _last[0] != seconds:  # lines come in bursts within one second: format it once
        _last[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_last[1]}.{rest // 1000:06d}Z"
