"""Waiting for a container process while relaying signals and, with ``-t``, its terminal.

Without a terminal, the signals we receive (Ctrl-C included) are forwarded to the process.
With one, our terminal goes raw and bytes flow both ways through the pty, so Ctrl-C is a
byte the container's line discipline turns into SIGINT; window size changes are copied to
the pty, which signals SIGWINCH to the container's foreground process group.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import termios
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


@contextlib.contextmanager
def forwarding(pid: int) -> Iterator[None]:
    """Forward the usual termination signals to ``pid`` while in the block."""
    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def wait(pid: int) -> int:
    """Block until ``pid`` (our child) ends; its wait status."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0


def copy_winsize(src: int, dst: int) -> None:
    """Give the pty ``dst`` the window size of terminal ``src``."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


def pty_session(pid: int, master: int, *, stdin: int | None, stdout: int) -> int:
    """Relay between our streams and the pty until ``pid`` ends; its wait status."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wfd)
    old_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    saved = make_raw(stdin)
    if stdin is not None and os.isatty(stdin):
        copy_winsize(stdin, master)
    try:
        _pump(pid, master, rfd, stdin, stdout)
        _drain(master, stdout)
        return wait(pid)
    finally:
        if saved is not None and stdin is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, old_chld)
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(rfd)
        os.close(wfd)


def make_raw(fd: int | None) -> list[Any] | None:
    if fd is None or not os.isatty(fd):
        return None
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # keep what was typed ahead (TCSAFLUSH drops it)
    return saved


def _pump(pid: int, master: int, wakeup: int, stdin: int | None, stdout: int) -> None:
    """Move bytes until the process ends or the pty closes."""
    while True:
        fds = [master, wakeup] + ([stdin] if stdin is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if wakeup in ready:
            sigs = os.read(wakeup, 512)
            if signal.SIGWINCH in sigs and stdin is not None:
                copy_winsize(stdin, master)
            if exited(pid):
                return
        if master in ready and not _copy(master, stdout):
            return
        if stdin is not None and stdin in ready and not _copy(stdin, master):
            stdin = None  # EOF on our side: stop reading it, keep the output flowing


def exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "Z"


def _copy(src: int, dst: int) -> bool:
    try:
        data = os.read(src, 65536)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return False
        raise
    if not data:
        return False
    write_all(dst, data)
    return True


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def _drain(master: int, stdout: int) -> None:
    """Copy what the pty still holds after the process ended."""
    os.set_blocking(master, False)
    with contextlib.suppress(OSError):
        while True:
            data = os.read(master, 65536)
            if not data:
                break
            write_all(stdout, data)
