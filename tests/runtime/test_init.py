"""``--init``: PID 1 is a small init that shows itself as ``unionfs-init``, reaps orphans and
forwards signals to the command."""

from __future__ import annotations

from .conftest import CLI


def test_init_shows_a_short_title_not_the_hosts_python(cli: CLI) -> None:
    res = cli("run", "--rm", "--init", "busybox", "sh", "-c",
              "cat /proc/1/comm; ps -o pid,args; tr '\\0' ' ' < /proc/1/cmdline")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "unionfs-init"
    pid1 = next(row for row in lines[2:] if row.split()[0] == "1")
    assert pid1.split()[1:5] == ["unionfs-init", "--", "sh", "-c"]
    assert lines[-1].startswith("unionfs-init -- sh -c cat /proc/1/comm")
    assert "python" not in res.stdout and "unionfs run" not in res.stdout


def test_top_shows_the_init_title(cli: CLI) -> None:
    cli.ok("run", "-d", "--init", "--name", "topinit", "busybox", "sleep", "100")
    try:
        out = cli.ok("top", "topinit")
        assert "unionfs-init -- sleep 100" in out
        assert "python" not in out
    finally:
        cli("rm", "-f", "topinit")


def test_init_reaps_an_orphan_as_soon_as_it_ends(cli: CLI) -> None:
    # The orphan (its parent sh -c exited) is adopted by PID 1; it ends when the fifo is
    # written; the loop ends only once it is reaped (a zombie keeps its /proc entry).
    script = ("mkfifo /tmp/f; sh -c 'cat /tmp/f >/dev/null & echo $! > /tmp/pid'; "
              "p=$(cat /tmp/pid); grep PPid /proc/$p/status; echo x > /tmp/f; "
              "while [ -e /proc/$p ]; do :; done; echo REAPED")
    res = cli("run", "--rm", "--init", "busybox", "sh", "-c", script, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["PPid:", "1", "REAPED"]  # init adopted and reaped it


def test_init_forwards_signals_to_the_command(cli: CLI) -> None:
    cli.ok("run", "-d", "--init", "--name", "fwd", "busybox", "sh", "-c",
           "trap 'echo GOT-INT' INT; trap 'echo GOT-TERM; exit 9' TERM; "
           "echo READY; while :; do sleep 100 & wait $!; done")
    try:
        _wait_logged(cli, "fwd", "READY")
        cli.ok("kill", "-s", "INT", "fwd")
        _wait_logged(cli, "fwd", "GOT-INT")  # the command got it; init did not end
        assert cli.ok("inspect", "-f", "{{.State.Running}}", "fwd").strip() == "true"
        cli.ok("kill", "-s", "TERM", "fwd")
        assert cli.ok("wait", "fwd").strip() == "9"  # the command's own exit code
        assert "GOT-TERM" in cli.ok("logs", "fwd")
    finally:
        cli("rm", "-f", "fwd")


def _wait_logged(cli: CLI, name: str, text: str) -> None:
    """Until the container's log holds ``text`` (each look is a full ``logs`` run)."""
    for _ in range(300):
        if text in cli.ok("logs", name):
            return
    raise AssertionError(f"{text!r} not logged by {name}")
