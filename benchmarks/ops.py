"""File operations no standard tool does alone, run as a child process in the mount.

``python ops.py OP ARGS...`` does the operation and prints ``{"seconds": ...}``: the time of
the operation itself, without the interpreter's start-up. Running it as a child keeps a hung
mount from hanging the benchmark (the child can be killed) and keeps our own process from
holding files open in the filesystem under test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable


def append(paths: list[str]) -> None:
    """Open each existing file for writing and append a line: one copy-up per file."""
    for path in paths:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"appended\n")
        finally:
            os.close(fd)


def append_fsync(paths: list[str]) -> None:
    """Like :func:`append`, then fsync, so the copied-up data is on disk when it returns."""
    for path in paths:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"appended\n")
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_append(paths: list[str]) -> None:
    """What a copy-up stands for on a plain directory: copy the file, append to the copy."""
    for path in paths:
        shutil.copyfile(path, path + ".copy")
    append([p + ".copy" for p in paths])


def copy_append_fsync(paths: list[str]) -> None:
    """:func:`copy_append`, then fsync the copies."""
    for path in paths:
        shutil.copyfile(path, path + ".copy")
    append_fsync([p + ".copy" for p in paths])


OPS: dict[str, Callable[[list[str]], None]] = {
    "append": append,
    "append-fsync": append_fsync,
    "copy-append": copy_append,
    "copy-append-fsync": copy_append_fsync,
}


def main(argv: list[str]) -> int:
    op, args = argv[0], argv[1:]
    start = time.perf_counter()
    OPS[op](args)
    print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
