"""``exec -t``: a pty of the container's own devpts; ``exec -it`` is interactive."""

from __future__ import annotations

import sys

from .conftest import CLI
from .test_tty import Terminal, wait_for_process


def test_exec_t_gets_a_pty_of_the_containers_devpts(cli: CLI) -> None:
    cli.ok("run", "-dit", "--name", "ptsexec", "busybox", "sh")  # its own pty is /dev/pts/0
    try:
        term = Terminal([sys.executable, "-m", "unionfs", "exec", "-t", "ptsexec", "sh", "-c",
                         "tty; ls /dev/pts; [ -t 0 ] && echo STDIN-TTY; stat -c %t,%T "
                         "$(tty); exit 3"], cli.env)
        term.expect("/dev/pts/1")
        term.expect("0")
        term.expect("1")
        term.expect("ptmx")
        term.expect("STDIN-TTY")
        assert term.wait() == 3
        # The host's devpts holds no such pty for it: the one it had lived in the container's.
        res = cli("exec", "ptsexec", "sh", "-c", "tty; ls /dev/pts")
        assert res.stdout.split() == ["not", "a", "tty", "0", "ptmx"]
    finally:
        cli("rm", "-f", "ptsexec")


def test_exec_it_is_interactive_and_as_another_user(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "itexec", "busybox", "sleep", "100")
    try:
        term = Terminal([sys.executable, "-m", "unionfs", "exec", "-it", "-u", "1000",
                         "itexec", "sh"], cli.env)
        term.expect("$ ")
        term.send("tty; id -u; echo IN-$((20+1))\r")
        term.expect("/dev/pts/0")
        term.expect("1000")
        term.expect("IN-21")
        term.send("sleep 30\r")
        wait_for_process(b"sleep\x0030\x00")
        term.send("\x03")  # Ctrl-C reaches the sleep through the pty; the shell stays
        term.send("echo STILL-$((1+1)); exit 6\r")
        term.expect("STILL-2")
        assert term.wait() == 6
    finally:
        cli("rm", "-f", "itexec")
