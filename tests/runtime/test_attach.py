"""Detach (Ctrl-P Ctrl-Q, ``--detach-keys``) and ``attach``, driven through a real pty."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time

from unionfs.runtime.attach import DetachMatcher, parse_detach_keys

from .conftest import CLI
from .test_tty import Terminal


def _logs(cli: CLI, name: str) -> str:
    return cli.ok("logs", name)


def _wait_for_log(cli: CLI, name: str, text: str, timeout: float = 15) -> None:
    """Until the container's log holds ``text`` (the log file is the event)."""
    deadline = time.monotonic() + timeout
    while text not in _logs(cli, name):
        assert time.monotonic() < deadline, f"{text!r} not logged: {_logs(cli, name)!r}"


def _container_dir(cli: CLI, name: str) -> str:
    info = json.loads(cli.ok("inspect", name))
    info = info[0] if isinstance(info, list) else info
    return os.path.dirname(info["LogPath"])


def test_detach_keys_are_parsed_as_docker_does() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,d") == b"\x01d"
    assert parse_detach_keys("ctrl-@,ctrl-[,ctrl-_") == b"\x00\x1b\x1f"
    for bad in ("ctrl-", "ctrl-pq", "xy", ""):
        try:
            parse_detach_keys(bad)
        except Exception as exc:  # a UserError, known by its text
            assert "invalid detach keys" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_a_partial_detach_sequence_is_passed_on() -> None:
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)  # held: it may begin the sequence
    assert m.feed(b"c") == (b"\x10c", False)  # it did not: passed on in order
    assert m.feed(b"x\x10") == (b"x", False)
    assert m.feed(b"\x11rest") == (b"", True)


def test_ctrl_p_ctrl_q_detaches_logs_go_on_and_attach_reattaches(cli: CLI) -> None:
    term = Terminal([sys.executable, "-m", "unionfs", "run", "-it", "--name", "det",
                     "busybox", "sh"], cli.env)
    try:
        term.expect("# ")
        term.send("mkfifo /tmp/go; (read x < /tmp/go; echo WHILE-DETACHED-$((3*3))) &\r")
        term.send("echo ONE-$((1+1))\r")
        term.expect("ONE-2")
        term.send("\x10\x11")
        assert term.wait() == 0  # run returns 0 when detached
        assert b"error" not in term.seen.lower()
        assert cli.ok("inspect", "-f", "{{.State.Running}}", "det").strip() == "true"
        sock = os.path.join(_container_dir(cli, "det"), "attach.sock")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        cli.ok("exec", "det", "sh", "-c", "echo go > /tmp/go")
        _wait_for_log(cli, "det", "WHILE-DETACHED-9")  # logged while nobody is attached

        again = Terminal([sys.executable, "-m", "unionfs", "attach", "det"], cli.env)
        again.send("echo TWO-$((2+2))\r")
        again.expect("TWO-4")
        again.resize(33, 90)
        sized = False
        while not sized:  # the new size reaches the pty once the client has seen SIGWINCH
            again.send("stty size\r")
            sized = again.saw("33 90", timeout=2)
        again.send("exit 5\r")
        assert again.wait() == 5  # attach ends with the container's exit code
        logged = _logs(cli, "det")
        assert "ONE-2" in logged and "WHILE-DETACHED-9" in logged and "TWO-4" in logged
        assert cli.ok("inspect", "-f", "{{.State.ExitCode}}", "det").strip() == "5"
    finally:
        cli("rm", "-f", "det")


def test_detach_keys_option_and_attach_to_a_run_dit_container(cli: CLI) -> None:
    cid = cli.ok("run", "-dit", "--name", "dit", "busybox", "sh").strip()
    try:
        assert len(cid) == 64
        term = Terminal([sys.executable, "-m", "unionfs", "attach", "--detach-keys", "ctrl-a,d",
                         "dit"], cli.env)
        term.send("echo A-$((1+6))\r")
        term.expect("A-7")
        term.send("\x01d")
        assert term.wait() == 0
        assert cli.ok("inspect", "-f", "{{.State.Running}}", "dit").strip() == "true"
        # A second client while another one is attached: both see the output.
        first = Terminal([sys.executable, "-m", "unionfs", "attach", "dit"], cli.env)
        second = Terminal([sys.executable, "-m", "unionfs", "attach", "dit"], cli.env)
        seen = False
        while not seen:  # until the first one is connected: output of the second's input
            second.send("echo B-$((5*5))\r")
            seen = first.saw("B-25", timeout=2)
        second.expect("B-25")  # its input arrived, so it was connected before the output
        second.send("exit 0\r")
        assert first.wait() == 0 and second.wait() == 0
    finally:
        cli("rm", "-f", "dit")


def test_run_it_with_other_detach_keys_and_bad_keys(cli: CLI) -> None:
    res = cli("run", "--rm", "--detach-keys", "ctrl-", "busybox", "true")
    assert res.returncode == 125 and "invalid detach keys" in res.stderr
    term = Terminal([sys.executable, "-m", "unionfs", "run", "-it", "--rm", "--name", "dk",
                     "--detach-keys", "ctrl-x,y", "busybox", "sh"], cli.env)
    try:
        term.expect("# ")
        term.send("echo C-$((2*4))\r")
        term.expect("C-8")
        term.send("\x18y")
        assert term.wait() == 0
        assert cli.ok("inspect", "-f", "{{.State.Running}}", "dk").strip() == "true"
        cli.ok("stop", "-t", "1", "dk")  # --rm removes it once it stops
        assert cli("inspect", "dk").returncode != 0
    finally:
        cli("rm", "-f", "dk")


def test_attach_with_piped_input_and_to_a_stopped_container(cli: CLI) -> None:
    cli.ok("run", "-dit", "--name", "piped", "busybox", "sh")
    try:
        res = cli("attach", "piped", input="echo P-$((4+4)); exit 7\n", timeout=30)
        assert res.returncode == 7, res.stderr
        assert "P-8" in res.stdout
        res = cli("attach", "piped")
        assert res.returncode == 1
        assert res.stderr.strip().endswith(
            "You cannot attach to a stopped container, start it first")
    finally:
        cli("rm", "-f", "piped")


def test_attach_to_a_container_without_a_tty_follows_its_output(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "notty", "busybox", "sh", "-c",
           # Held open read-write: lines queue up and no writer's close ends the loop.
           "mkfifo /tmp/go; exec 3<>/tmp/go; while read n <&3; do echo OUT-$n; echo ERR-$n >&2; "
           "[ $n = end ] && exit 3; done")
    try:
        while cli("exec", "notty", "test", "-p", "/tmp/go").returncode != 0:
            pass  # until its fifo exists: an exec before would make /tmp/go a plain file
        proc = subprocess.Popen(cli.argv("attach", "notty"), env=cli.env, stdout=-1,
                                stderr=-1, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        seen, n = b"", 0
        while b"OUT-" not in seen:  # until the attach follows: a line it shows proves it
            n += 1
            cli.ok("exec", "notty", "sh", "-c", f"echo {n} > /tmp/go")
            if select.select([proc.stdout], [], [], 2)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
        # Not checked: the writer may be killed with the container once it has read "end".
        cli("exec", "notty", "sh", "-c", "echo end > /tmp/go")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3
        assert b"OUT-end" in seen + out and b"ERR-end" in err
    finally:
        cli("rm", "-f", "notty")


def test_a_signal_to_run_it_reaches_the_container(cli: CLI) -> None:
    term = Terminal([sys.executable, "-m", "unionfs", "run", "-it", "--rm", "busybox", "sh",
                     "-c", "trap 'echo GOT-TERM; exit 4' TERM; echo READY; sleep 100 & wait"],
                    cli.env)
    term.expect("READY")
    os.kill(term.pid, signal.SIGTERM)  # the client forwards it to PID 1, as docker's does
    term.expect("GOT-TERM")
    assert term.wait() == 4


def test_run_t_shows_the_output_of_a_command_that_ends_at_once(cli: CLI) -> None:
    # The supervisor holds the output until run's own client is attached: none is lost.
    for flags in ("-it", "-t"):
        term = Terminal([sys.executable, "-m", "unionfs", "run", flags, "--rm", "busybox", "sh",
                         "-c", "echo QUICK-$((2+3)); exit 2"], cli.env)
        term.expect("QUICK-5")
        assert term.wait() == 2
