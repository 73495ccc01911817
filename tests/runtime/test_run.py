"""Containers in real namespaces with real cgroups, as root, on a unionfs root."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from unionfs.runtime import state
from unionfs.store import Store

from .conftest import CLI


def wait_until(condition: Callable[[], object], timeout: float = 20) -> None:
    """Poll ``condition`` until it holds (a failed test when it never does)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def _rm(cli: CLI, *names: str) -> None:
    cli("rm", "-f", *names)


def test_pid1_hostname_and_uid_map(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "-h", "box", "busybox", "sh", "-c",
                 "echo $$; hostname; cat /etc/hostname; cat /proc/self/uid_map; "
                 "grep -c . /proc/self/mountinfo")
    lines = out.split()
    assert lines[:3] == ["1", "box", "box"]
    assert lines[3:6] == ["0", "0", "4294967295"]  # root without --userns: the host's map


def test_userns_as_root_has_its_own_map(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "--userns", "busybox", "cat", "/proc/self/uid_map")
    assert out.split() == ["0", "0", "65536"]


def test_uidmap_as_root_gives_the_container_that_layout(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "--network", "none", "--uidmap", "0:0:1", "--uidmap",
                 "1:100000:65536", "--gidmap", "0:0:1", "--gidmap", "1:200000:65536",
                 "busybox", "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; "
                 "touch /tmp/f && chown 1000:1000 /tmp/f && stat -c %u:%g /tmp/f")
    lines = out.splitlines()
    assert [ln.split() for ln in lines[:4]] == [["0", "0", "1"], ["1", "100000", "65536"],
                                                ["0", "0", "1"], ["1", "200000", "65536"]]
    assert lines[4] == "1000:1000"


def test_capabilities_user_and_no_new_privs(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "busybox", "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs)",
                 "/proc/self/status")
    fields = dict(line.split(":\t") for line in out.splitlines())
    assert fields["CapEff"] == fields["CapBnd"] == "00000000a80425fb"  # docker's default set
    assert fields["NoNewPrivs"] == "1"
    out = cli.ok("run", "--rm", "-u", "1000:1000", "busybox", "sh", "-c",
                 "id -u; id -g; echo $HOME; grep CapEff /proc/self/status")
    assert out.split() == ["1000", "1000", "/home/user", "CapEff:", "0000000000000000"]


def test_files_written_inside_land_in_the_upper(cli: CLI, store: Store) -> None:
    res = cli("run", "--name", "writer", "busybox", "sh", "-c",
              "echo changed > /etc/motd; echo new > /root/new; rm /bin/vi; cat /etc/motd")
    try:
        assert res.returncode == 0, res.stderr
        assert res.stdout == "changed\n"
        upper = state.container_upper(store, "writer")
        assert upper is not None
        assert (upper / "etc/motd").read_text() == "changed\n"
        assert (upper / "root/new").read_text() == "new\n"
        image = store.image("busybox")
        lower = image.layer_dirs[0]
        assert (lower / "etc/motd").read_text() == "image one\n"
        assert not (lower / "root/new").exists()
        assert (lower / "bin/vi").is_symlink()
        # The /etc files bound in from the state dir are not in the upper.
        for stub in ("hostname", "hosts", "resolv.conf"):
            assert not (upper / "etc" / stub).exists()
        info = state.container_info(store, "writer")
        assert info is not None and info["State"]["Status"] == "exited"
        assert info["State"]["ExitCode"] == 0 and info["Upper"] == str(upper)
    finally:
        _rm(cli, "writer")
    assert state.find(store, "writer") is None and not upper.exists()


def test_memory_limit_ends_in_137(cli: CLI, store: Store) -> None:
    res = cli("run", "--name", "oom", "--memory", "64m", "busybox", "sh", "-c",
              "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived")
    try:
        assert res.returncode == 137, res.stderr
        assert "survived" not in res.stdout
        info = state.container_info(store, "oom")
        assert info is not None and info["State"]["OOMKilled"] is True
        assert info["State"]["ExitCode"] == 137
    finally:
        _rm(cli, "oom")


def test_pids_limit_stops_a_fork_loop(cli: CLI) -> None:
    start = time.monotonic()
    res = cli("run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c",
              "while true; do sleep 100 & echo forked; done", timeout=30)
    assert time.monotonic() - start < 20
    assert res.returncode != 0
    assert "can't fork: Resource temporarily unavailable" in res.stderr
    assert 10 <= res.stdout.count("forked") < 20  # sh itself, the runtime's PID 1 counts


def test_stop_kills_a_container_ignoring_sigterm(cli: CLI) -> None:
    cid = cli.ok("run", "-d", "--name", "stubborn", "busybox", "sh", "-c",
                 "trap '' TERM; while true; do sleep 0.2; done").strip()
    try:
        assert len(cid) == 64
        start = time.monotonic()
        cli.ok("stop", "-t", "1", "stubborn")
        took = time.monotonic() - start
        assert 1.0 <= took < 10
        ps = cli.ok("ps", "-a")
        assert "Exited (137)" in ps and "stubborn" in ps
        assert "stubborn" not in cli.ok("ps")
    finally:
        _rm(cli, "stubborn")


def test_stop_with_init_forwards_sigterm(cli: CLI, store: Store) -> None:
    cli.ok("run", "-d", "--init", "--name", "polite", "busybox", "sleep", "100")
    try:
        start = time.monotonic()
        cli.ok("stop", "-t", "20", "polite")
        assert time.monotonic() - start < 10
        info = state.container_info(store, "polite")
        assert info is not None and info["State"]["ExitCode"] == 143  # 128 + SIGTERM
    finally:
        _rm(cli, "polite")


def test_init_reaps_orphans_and_relays_the_exit_code(cli: CLI) -> None:
    res = cli("run", "--rm", "--init", "busybox", "sh", "-c",
              "(sleep 0.1 &); sleep 0.5; ps -o pid,stat,args; exit 7")
    assert res.returncode == 7, res.stderr
    rows = res.stdout.splitlines()[1:]
    assert not [r for r in rows if r.split()[1].startswith("Z")], res.stdout
    assert rows[0].split()[0] == "1" and "unionfs" in rows[0]  # PID 1 is the init
    assert any(r.split()[0] != "1" and r.split()[2:4] == ["sh", "-c"] for r in rows)


def test_exec_sees_files_and_processes(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "target", "-h", "tgt", "busybox", "sh", "-c",
           "echo inside > /root/f; exec sleep 100")
    try:
        wait_until(lambda: cli("exec", "target", "cat", "/proc/1/cmdline").stdout
                   == "sleep\x00100\x00")
        out = cli.ok("exec", "target", "sh", "-c", "cat /root/f; hostname; echo $$; ps -o pid,args")
        lines = out.splitlines()
        assert lines[0] == "inside" and lines[1] == "tgt"
        assert int(lines[2]) > 1
        assert any(r.split()[0] == "1" and "sleep 100" in r for r in lines[4:])
        res = cli("exec", "target", "sh", "-c", "exit 5")
        assert res.returncode == 5
        res = cli("exec", "target", "nosuchcmd")
        assert res.returncode == 127 and "executable file not found" in res.stderr
        top = cli.ok("top", "target")
        assert "sleep 100" in top
        stats = cli.ok("stats", "--no-stream", "target").splitlines()
        assert len(stats) == 2 and "MEM USAGE / LIMIT" in stats[0]
        row = stats[1].split()
        assert row[0] == state.get(Store.open(cli.store_root), "target").id[:12]
        assert row[1] == "target"
        assert re.fullmatch(r"\d+(\.\d+)?(B|KiB|MiB|GiB)", row[row.index("/") - 1])
    finally:
        _rm(cli, "target")


def test_rm_leaves_no_trace(cli: CLI, store_root: Path) -> None:
    before = set((store_root / "containers").iterdir()) if (store_root / "containers").exists() \
        else set()
    uppers_before = set((store_root / "uppers").rglob("*"))
    cli.ok("run", "--rm", "--name", "ephemeral", "busybox", "sh", "-c", "echo x > /root/x")
    assert set((store_root / "containers").iterdir()) == before
    assert set((store_root / "uppers").rglob("*")) == uppers_before
    assert "ephemeral" not in cli.ok("ps", "-a")


def test_detached_logs_ps_top_restart(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "bg", "busybox", "sh", "-c",
           "echo started; echo oops >&2; exec sleep 100")
    try:
        wait_until(lambda: "oops" in cli("logs", "bg").stderr)
        logs = cli("logs", "bg")
        assert logs.stdout == "started\n" and logs.stderr == "oops\n"  # two streams
        assert "bg" in cli.ok("ps")
        cli.ok("restart", "-t", "1", "bg")
        wait_until(lambda: cli("logs", "bg").stderr.count("oops") == 2)
        assert cli.ok("logs", "bg").count("started") == 2
        cli.ok("stop", "-t", "1", "bg")
        cli.ok("start", "bg")
        assert "bg" in cli.ok("ps")
        res = cli("rm", "bg")
        assert res.returncode != 0 and "running" in res.stderr
    finally:
        _rm(cli, "bg")


def test_volumes_env_workdir(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("from host\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    res = cli("run", "--rm", "-v", f"{tmp_path}:/data", "-v", f"{ro}:/ro:ro",
              "-e", "GREETING=hi", "-w", "/data", "busybox", "sh", "-c",
              "cat in; pwd; echo $GREETING; echo out > out; touch /ro/y || echo volro")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:4] == ["from host", "/data", "hi", "volro"]
    assert (tmp_path / "out").read_text() == "out\n"
    assert not (ro / "y").exists()


def test_a_missing_volume_source_is_created(cli: CLI, tmp_path: Path) -> None:
    source = tmp_path / "made" / "here"
    cli.ok("run", "--rm", "-v", f"{source}:/data", "busybox", "sh", "-c", "echo x > /data/f")
    assert (source / "f").read_text() == "x\n"


def test_read_only_root(cli: CLI, tmp_path: Path) -> None:
    res = cli("run", "--rm", "--read-only", "-v", f"{tmp_path}:/tmp", "busybox", "sh", "-c",
              "touch /root/x || echo rootro; echo ok > /tmp/ok; hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "rootro"
    assert "Read-only file system" in res.stderr
    assert (tmp_path / "ok").read_text() == "ok\n"
    # A mount point the image lacks comes from the init layer, not from the read-only root.
    out = cli.ok("run", "--rm", "--read-only", "-v", f"{tmp_path}:/data", "busybox", "cat",
                 "/data/ok")
    assert out == "ok\n"


def test_network_none_has_only_loopback(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert out.split() == ["lo"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["nosuchimage", "true"], 125, "Unable to find image 'nosuchimage:latest' locally"),
    (["--memory", "lots", "busybox", "true"], 125, "invalid size"),
    (["busybox", "nosuchcmd"], 127,
     'exec: "nosuchcmd": executable file not found in $PATH'),
    (["-v", "n!:/x", "busybox", "true"], 125, "invalid volume name"),
    (["--name", "taken", "busybox", "true"], 125, "already in use"),
    (["busybox", "/etc/motd"], 126, 'exec: "/etc/motd": permission denied'),
    (["--uidmap", "0:100000:65536", "busybox", "true"], 125,
     "--uidmap: container id 0 must map to host id 0"),
])
def test_bad_input_is_one_line_and_leaves_nothing(cli: CLI, store_root: Path,
                                                  args: list[str], code: int,
                                                  message: str) -> None:
    cli.ok("run", "--name", "taken", "busybox", "true")
    try:
        before = sorted(p.name for p in (store_root / "containers").iterdir())
        uppers = sorted(p.name for p in (store_root / "uppers" / "container").iterdir())
        res = cli("run", *args)
        assert res.returncode == code
        assert message in res.stderr
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("unionfs: error: ")
        assert sorted(p.name for p in (store_root / "containers").iterdir()) == before
        assert sorted(p.name for p in (store_root / "uppers" / "container").iterdir()) == uppers
    finally:
        _rm(cli, "taken")


def test_exec_into_a_stopped_container(cli: CLI) -> None:
    cli.ok("run", "--name", "stopped", "busybox", "true")
    try:
        res = cli("exec", "stopped", "true")
        assert res.returncode != 0 and "not running" in res.stderr
        assert res.stderr.count("\n") == 1
        res = cli("exec", "nosuch", "true")
        assert res.returncode == 1 and "No such container" in res.stderr  # docker's 1
    finally:
        _rm(cli, "stopped")


def test_commit_chain(cli: CLI, store: Store) -> None:
    cli.ok("run", "--name", "step1", "busybox", "sh", "-c", "echo two > /etc/motd")
    try:
        cli.ok("commit", "step1", "demo:two", "-m", "second")
        out = cli.ok("run", "--rm", "--name", "step2", "demo:two", "cat", "/etc/motd")
        assert out == "two\n"
        cli.ok("run", "--name", "step3", "demo:two", "sh", "-c", "echo three > /root/three")
        cli.ok("commit", "step3", "demo:three", "-m", "third")
        out = cli.ok("run", "--rm", "demo:three", "cat", "/etc/motd", "/root/three")
        assert out == "two\nthree\n"
        assert len(store.image("demo:three").layer_ids) == 3
        history = cli.ok("history", "demo:three")
        assert "second" in history and "third" in history
        inspect = json.loads(cli.ok("inspect", "step3"))
        info = inspect[0] if isinstance(inspect, list) else inspect
        assert info["Name"] == "step3"
    finally:
        _rm(cli, "step1", "step3")
        cli("rmi", "demo:three")
        cli("rmi", "demo:two")


def test_limits_reach_the_cgroup_and_stats(cli: CLI, store: Store) -> None:
    cli.ok("run", "-d", "--name", "limited", "--memory", "64m", "--cpu-shares", "256",
           "--cpus", "0.5", "--pids-limit", "50", "busybox", "sleep", "100")
    try:
        info = state.container_info(store, "limited")
        assert info is not None and info["Cgroup"]["version"] == 1
        paths = {k: Path(v) for k, v in info["Cgroup"]["paths"].items()}
        assert int((paths["memory"] / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert (paths["cpu"] / "cpu.shares").read_text().strip() == "256"
        assert (paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (paths["pids"] / "pids.max").read_text().strip() == "50"
        pid = info["State"]["Pid"]
        assert str(pid) in (paths["memory"] / "cgroup.procs").read_text().split()
        # The filesystem server is in neither the container's cgroup nor its pid namespace.
        server = [p for p in (paths["memory"] / "cgroup.procs").read_text().split()
                  if b"mount" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert not server
        stats = cli.ok("stats", "--no-stream", "limited")
        assert "/ 64.0MiB" in stats and "/ 50" in stats
        out = cli.ok("exec", "limited", "cat", "/proc/self/cgroup")
        assert "memory:/\n" in out  # its own cgroup namespace
    finally:
        _rm(cli, "limited")


def test_the_container_dies_with_a_killed_supervisor(cli: CLI, store: Store) -> None:
    proc = subprocess.Popen(cli.argv("run", "--name", "orphan", "busybox", "sleep", "100"),
                            env=cli.env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not ((c := state.find(store, "orphan")) and c.running()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = c.state()["pid"]
        proc.kill()
        proc.wait()
        assert state.wait_gone(pid, None, 5)
        assert "Exited (255)" in cli.ok("ps", "-a")
    finally:
        cli.ok("rm", "orphan")  # also releases the mount and the cgroup left behind


def test_interactive_stdin_and_detached_rm(cli: CLI, store: Store) -> None:
    res = cli("run", "-i", "--rm", "busybox", "sh", "-c", "tr a-z A-Z; echo done",
              input="hello\n")
    assert res.returncode == 0 and res.stdout == "HELLO\ndone\n"
    res = cli("run", "--rm", "busybox", "cat")  # without -i, stdin is empty
    assert res.returncode == 0 and res.stdout == ""
    cli.ok("run", "-d", "--rm", "--name", "gone", "busybox", "sh", "-c", "echo bye")
    deadline = time.monotonic() + 15
    while state.find(store, "gone") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_logs_follow_ends_with_the_container(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "talker", "busybox", "sh", "-c",
           "for i in 1 2 3; do echo line$i; sleep 0.3; done")
    try:
        out = cli.ok("logs", "-f", "talker", timeout=20)
        assert out.split() == ["line1", "line2", "line3"]
    finally:
        _rm(cli, "talker")
