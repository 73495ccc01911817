"""Lifecycle faults: other mount namespaces, early signals, broken state, killed helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from unionfs.runtime import state
from unionfs.store import Store

from .conftest import CLI


def wait_for(condition: Callable[[], object], timeout: float = 20, what: str = "") -> object:
    """Poll ``condition`` until it is true; its value (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)
    return value


def running(store: Store, name: str) -> state.Container | None:
    c = state.find(store, name)
    return c if c is not None and c.running() else None


def mounts_in(pid: int | str, marker: str) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f if marker in line]


def test_stop_is_quick_while_another_mount_namespace_exists(cli: CLI, store: Store,
                                                            store_root: Path) -> None:
    cli.ok("run", "-d", "--name", "pin", "busybox", "sleep", "1000")
    other = subprocess.Popen(["unshare", "-m", "--propagation", "unchanged", "sleep", "120"])
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
        wait_for(lambda: os.stat(f"/proc/{other.pid}/ns/mnt").st_ino != ours
                 and b"sleep" in Path(f"/proc/{other.pid}/cmdline").read_bytes(),
                 what="the other mount namespace")
        # The union is mounted in the container's namespaces only, never in the host's.
        assert mounts_in("self", str(store_root)) == []
        assert mounts_in(other.pid, str(store_root)) == []
        start = time.monotonic()
        cli.ok("stop", "-t", "1", "pin")
        assert time.monotonic() - start < 8
        assert "Exited (137)" in cli.ok("ps", "-a")
        assert mounts_in(other.pid, str(store_root)) == []
    finally:
        other.kill()
        other.wait()
        cli("rm", "-f", "pin")


def test_sigterm_while_starting_leaves_nothing(cli: CLI, store_root: Path) -> None:
    containers = store_root / "containers"
    def entries() -> set[str]:
        if not containers.exists():
            return set()
        return {p.name for p in containers.iterdir() if not p.name.startswith(".")}

    before = entries()
    proc = subprocess.Popen(cli.argv("run", "--rm", "--name", "race", "busybox", "sh", "-c",
                                     "trap 'exit 143' TERM; while :; do sleep 0.1; done"),
                            env=cli.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: entries() - before, what="the container to be created")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert entries() == before
    assert "interrupted by SIGTERM while starting" in err  # before the container ran
    assert "race" not in cli.ok("ps", "-a")


def test_a_broken_entry_is_listed_and_removable(cli: CLI, store: Store) -> None:
    cid = cli.ok("run", "-d", "--name", "broke", "busybox", "sleep", "1000").strip()
    c = wait_for(lambda: running(store, "broke"))
    assert isinstance(c, state.Container)
    pid = c.state()["pid"]
    (c.dir / "config.json").unlink()
    res = cli("ps", "-a")
    assert res.returncode == 0
    assert cid[:12] in res.stdout
    assert "broken" in res.stderr and f"rm -f {cid[:12]}" in res.stderr
    assert state.find(store, cid[:12]) is not None
    cli.ok("rm", "-f", cid[:12])
    assert state.wait_gone(pid, None, 5)
    assert not c.dir.exists()
    assert not (store.root / "uppers" / "container" / cid).exists()
    assert cid[:12] not in cli.ok("ps", "-a")


def test_state_files_are_replaced_atomically(cli: CLI, store: Store) -> None:
    cli.ok("run", "--name", "atomic", "busybox", "true")
    try:
        c = state.get(store, "atomic")
        names = {p.name for p in c.dir.iterdir()}
        assert {"config.json", "state.json"} <= names
        assert not [n for n in names if n.endswith(".tmp")]
        assert json.loads((c.dir / "state.json").read_text())["status"] == "exited"
    finally:
        cli("rm", "-f", "atomic")


def test_killed_supervisor_is_an_error_and_start_works(cli: CLI, store: Store) -> None:
    cli.ok("run", "-d", "--name", "nosup", "busybox", "sleep", "1000")
    try:
        st = state.get(store, "nosup").state()
        os.kill(st["supervisor"], signal.SIGKILL)
        assert state.wait_gone(st["pid"], st["pid_start"], 10)
        ps = cli.ok("ps", "-a")
        row = next(line for line in ps.splitlines() if "nosup" in line)
        assert "Exited (255)" in row and "ago" in row and "supervisor was killed" in row
        info = json.loads(cli.ok("inspect", "nosup"))
        info = info[0] if isinstance(info, list) else info
        assert "supervisor was killed" in info["State"]["Error"]
        assert info["State"]["FinishedAt"]
        cli.ok("start", "nosup")
        assert running(store, "nosup")
        assert "supervisor" not in next(r for r in cli.ok("ps").splitlines() if "nosup" in r)
    finally:
        cli("rm", "-f", "nosup")


def test_killed_server_is_an_error_and_start_works(cli: CLI, store: Store,
                                                   store_root: Path) -> None:
    cli.ok("run", "-d", "--name", "noserver", "busybox", "sh", "-c",
           "while :; do cat /etc/motd > /dev/null; sleep 0.1; done")
    try:
        c = state.get(store, "noserver")
        st = c.state()
        os.kill(st["server"], signal.SIGKILL)
        wait_for(lambda: state.get(store, "noserver").state()["status"] == "exited",
                 what="the container to end")
        state.wait_gone(st["supervisor"], st["supervisor_start"], 10)
        info = state.container_info(store, "noserver")
        assert info is not None and "filesystem server died" in info["State"]["Error"]
        assert "filesystem server died" in cli.ok("ps", "-a")
        assert mounts_in("self", str(store_root)) == []
        cli.ok("start", "noserver")
        assert running(store, "noserver")
        assert cli.ok("exec", "noserver", "cat", "/etc/motd") == "image one\n"
    finally:
        cli("rm", "-f", "noserver")


def test_commit_of_a_running_container_is_live(cli: CLI, store: Store) -> None:
    cli.ok("run", "-d", "--name", "livecommit", "busybox", "sh", "-c",
           "echo v1 > /root/data; exec sleep 1000")
    try:
        wait_for(lambda: cli("exec", "livecommit", "cat", "/root/data").stdout == "v1\n",
                 what="the container's first write")
        cli.ok("commit", "livecommit", "live:one")
        upper = state.container_upper(store, "livecommit")
        assert upper is not None and not (upper / "root").exists()  # a fresh upper: live
        cli.ok("exec", "livecommit", "sh", "-c", "echo v2 > /root/data")
        assert cli.ok("run", "--rm", "live:one", "cat", "/root/data") == "v1\n"
        assert cli.ok("exec", "livecommit", "cat", "/root/data") == "v2\n"
        assert (upper / "root/data").read_text() == "v2\n"
    finally:
        cli("rm", "-f", "livecommit")
        cli("rmi", "live:one")


def test_stub_files_stay_out_of_diff_and_commit(cli: CLI, store: Store, tmp_path: Path) -> None:
    cli.ok("run", "--name", "stubs", "-v", f"{tmp_path}:/data/vol", "-w", "/work/dir",
           "busybox", "sh", "-c", "cat /etc/hostname; echo x > /root/x")
    try:
        assert cli.ok("diff", "stubs").splitlines() == ["C /root", "A /root/x"]
        cli.ok("commit", "stubs", "stubs:img")
        image = store.image("stubs:img")
        top = image.layer_dirs[0]
        assert (top / "root/x").exists()
        assert not (top / "etc").exists() and not (top / "data").exists()
        assert not (top / "work").exists()
        cli.ok("run", "-d", "--name", "stubs-live", "stubs:img", "sleep", "1000")
        cli.ok("commit", "stubs-live", "stubs:live")
        live_top = store.image("stubs:live").layer_dirs[0]
        assert not (live_top / "etc/hostname").exists()
        assert len(store.image("stubs:live").layer_ids) == len(image.layer_ids) + 1
    finally:
        cli("rm", "-f", "stubs", "stubs-live")
        cli("rmi", "stubs:live")
        cli("rmi", "stubs:img")


def test_read_only_root_has_mount_points_and_etc_files(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("host\n")
    out = cli.ok("run", "--rm", "--read-only", "-h", "ro-box", "-v", f"{tmp_path}:/new/mnt",
                 "-w", "/some/where", "busybox", "sh", "-c",
                 "pwd; cat /new/mnt/f; cat /etc/hostname; grep -c localhost /etc/hosts; "
                 "test -f /etc/resolv.conf && echo resolv; touch /x 2>/dev/null || echo ro")
    assert out.split() == ["/some/where", "host", "ro-box", "2", "resolv", "ro"]


def test_logs_keep_streams_apart_and_attached_runs_are_logged(cli: CLI) -> None:
    res = cli("run", "--name", "talk", "busybox", "sh", "-c",
              "echo one; echo err1 >&2; echo two; echo err2 >&2")
    try:
        assert res.stdout == "one\ntwo\n" and res.stderr == "err1\nerr2\n"  # attached, echoed
        logs = cli("logs", "talk")
        assert logs.stdout == "one\ntwo\n" and logs.stderr == "err1\nerr2\n"
        tail = cli("logs", "--tail", "1", "talk")
        assert tail.stdout + tail.stderr in ("two\n", "err2\n")
        assert cli("logs", "--tail", "0", "talk").stdout == ""
        stamped = cli.ok("logs", "-t", "talk").splitlines()
        assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two"]
        assert stamped[0].split(" ", 1)[0].endswith("Z")
        assert cli.ok("logs", "--since", "10m", "talk") == "one\ntwo\n"
        assert cli.ok("logs", "--since", "2999-01-01T00:00:00Z", "talk") == ""
        bad = cli("logs", "--since", "yesterday-ish", "talk")
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    finally:
        cli("rm", "-f", "talk")


def test_stats_without_names_lists_every_running_container(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "st1", "busybox", "sleep", "1000")
    cli.ok("run", "-d", "--name", "st2", "--memory", "32m", "busybox", "sh", "-c",
           "while :; do :; done")
    try:
        lines = cli.ok("stats", "--no-stream").splitlines()
        assert lines[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/",
                                    "LIMIT", "MEM", "%", "PIDS", "/", "LIMIT"]
        rows = {line.split()[1]: line.split() for line in lines[1:]}
        assert set(rows) == {"st1", "st2"}
        busy = float(rows["st2"][2].rstrip("%"))
        assert busy > 20  # a busy loop uses a good part of a cpu
        assert rows["st2"][5] == "32.0MiB"
        assert 0 < float(rows["st2"][6].rstrip("%")) < 100
    finally:
        cli("rm", "-f", "st1", "st2")


def test_kill_wait_rename(cli: CLI, store: Store) -> None:
    cli.ok("run", "-d", "--name", "victim", "busybox", "sh", "-c",
           "trap 'exit 42' USR1; while :; do sleep 0.1; done")
    try:
        cli.ok("rename", "victim", "renamed")
        assert state.find(store, "victim") is None
        assert running(store, "renamed")
        res = cli("rename", "renamed", "bad/name")
        assert res.returncode != 0 and res.stderr.count("\n") == 1
        waiter = subprocess.Popen(cli.argv("wait", "renamed"), env=cli.env,
                                  stdout=subprocess.PIPE, text=True)
        cli.ok("kill", "-s", "USR1", "renamed")
        out, _ = waiter.communicate(timeout=20)
        assert out == "42\n"
        assert "Exited (42)" in cli.ok("ps", "-a")
        res = cli("kill", "renamed")
        assert res.returncode != 0 and "not running" in res.stderr
        assert cli("kill", "-s", "NOPE", "renamed").returncode != 0
    finally:
        cli("rm", "-f", "victim", "renamed")
