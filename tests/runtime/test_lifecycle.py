"""Lifecycle faults: other mount namespaces, early signals, broken state, killed helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from runtime import state
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
