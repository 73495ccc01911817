"""``run -it``: a real pty; window size changes and Ctrl-C reach the container."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path

from .conftest import CLI


class Terminal:
    """The test's side of a pty that runs ``unionfs`` as its foreground job."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.resize(30, 100)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen in {self.seen[-500:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        assert text.encode() in self.seen, self.seen[-500:]
        self.seen = self.seen[self.seen.index(text.encode()) + len(text):]

    def saw(self, text: str, timeout: float) -> bool:
        """Like :meth:`expect`, but False when ``text`` has not come within ``timeout``."""
        try:
            self.expect(text, timeout)
        except AssertionError:
            return False
        return True

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_status = os.waitpid(self.pid, os.WNOHANG)
            if with_status[0]:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(with_status[1])
            select.select([self.fd], [], [], 0.1)
            with contextlib.suppress(OSError):
                os.read(self.fd, 4096)
        raise AssertionError("unionfs run did not exit")


def wait_for_process(cmdline: bytes, timeout: float = 15) -> int:
    """The pid of a process whose command line is ``cmdline`` (waits until there is one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == cmdline:
                    return int(entry)
        time.sleep(0.02)
    raise AssertionError(f"no process {cmdline!r}")


def test_tty_is_the_containers_own(cli: CLI) -> None:
    term = Terminal([sys.executable, "-m", "unionfs", "run", "-it", "--rm", "busybox", "sh"],
                    cli.env)
    term.expect("# ")
    term.send("tty; stat -c '%F' /dev/console; ls /dev/pts; echo DONE-$((1+2))\r")
    term.expect("/dev/pts/0")
    term.expect("character special file")
    term.expect("DONE-3")
    term.send("exit\r")
    assert term.wait() == 0


def test_tty_resize_ctrl_c_and_exit_code(cli: CLI) -> None:
    term = Terminal([sys.executable, "-m", "unionfs", "run", "-it", "--rm", "busybox", "sh"],
                    cli.env)
    term.expect("# ")
    term.send("[ -t 0 ] && echo IS-$((6*7))-TTY; echo $TERM; stty size\r")
    term.expect("IS-42-TTY")
    term.expect("xterm")
    term.expect("30 100")
    term.resize(40, 120)
    resized = False
    while not resized:  # the size reaches the pty once the relay has seen SIGWINCH
        term.send("stty size\r")
        resized = term.saw("40 120", timeout=2)
    start = time.monotonic()
    term.send("sleep 30\r")
    wait_for_process(b"sleep\x0030\x00")
    term.send("\x03")
    term.send("echo AFTER-$((1+1))\r")
    term.expect("AFTER-2")
    assert time.monotonic() - start < 10
    term.send("exit 3\r")
    assert term.wait() == 3


def test_exec_with_a_tty(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "ttyexec", "busybox", "sleep", "100")
    try:
        term = Terminal([sys.executable, "-m", "unionfs", "exec", "-it", "ttyexec", "sh"],
                        cli.env)
        term.expect("# ")
        term.send("[ -t 1 ] && echo EXEC-$((2*21)); stty size; exit 4\r")
        term.expect("EXEC-42")
        term.expect("30 100")
        assert term.wait() == 4
    finally:
        cli("rm", "-f", "ttyexec")
