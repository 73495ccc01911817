"""Rootless containers: ``unionfs`` run by an unprivileged uid.

The user needs what a stock Debian gives it: a passwd entry (fusermount3 wants a name) and
a usable ``/dev/fuse`` and ``/dev/net/tun`` (0666 there; 0600 on this test machine). The
test provides them in a private mount namespace (a bind-mounted passwd copy and 0666 device
nodes), so the host is left untouched. The interpreter is Debian's python3 with a readable
copy of the project on ``PYTHONPATH`` (:mod:`.rootless_env`): the checkout and its venv may
be where other users cannot enter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOTLESS_UID, build_busybox_rootfs, process_leftovers, server_log_problems
from .rootless_env import SYSTEM_PYTHON, readable_install


class Rootless:
    """Runs shell scripts in which ``$UF`` is ``unionfs`` as the unprivileged user."""

    def __init__(self, base: Path, uid: int = ROOTLESS_UID) -> None:
        self.base = base
        self.uid = uid
        pythonpath = readable_install(base / "install")
        self.kept_logs = base / "server-logs"  # removed containers' unionfs server logs
        self.kept_logs.mkdir(exist_ok=True)
        os.chown(self.kept_logs, uid, uid)
        self.uf = (f"setpriv --reuid {uid} --regid {uid} --clear-groups "
                   f"env HOME={base} UNIONFS_STORE={base}/store PYTHONPATH={pythonpath} "
                   f"UNIONFS_KEEP_SERVER_LOGS={self.kept_logs} "
                   f"{SYSTEM_PYTHON} -m unionfs")

    def _subids(self) -> str:
        """Bind the test's /etc/subuid and /etc/subgid copies, where it made them."""
        return "".join(f"mount --bind {self.base}/{name} /etc/{name} && "
                       for name in ("subuid", "subgid") if (self.base / name).exists())

    def __call__(self, script: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        prelude = (f"mount --bind {self.base}/fuse /dev/fuse && "
                   f"mount --bind {self.base}/tun /dev/net/tun && "
                   f"mount --bind {self.base}/passwd /etc/passwd && {self._subids()}"
                   f"cd {self.base} && "
                   f"UF='{self.uf}'\n")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               prelude + script], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def rootless() -> Iterator[Rootless]:
    base = Path(tempfile.mkdtemp(prefix="unionfs-rootless-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        with open("/etc/passwd") as f:
            passwd = f.read()
        (base / "passwd").write_text(passwd + f"uftest:x:{ROOTLESS_UID}:{ROOTLESS_UID}::"
                                     f"{base}:/bin/sh\n")
        os.mknod(base / "fuse", 0o20666, os.makedev(10, 229))
        os.chmod(base / "fuse", 0o666)
        os.mknod(base / "tun", 0o20666, os.makedev(10, 200))
        os.chmod(base / "tun", 0o666)
        build_busybox_rootfs(base / "rootfs", owner=ROOTLESS_UID)
        (base / "store").mkdir()
        os.chown(base / "store", ROOTLESS_UID, ROOTLESS_UID)
        runner = Rootless(base)
        res = runner("$UF import rootfs -t busybox")
        assert res.returncode == 0, res.stderr
        yield runner
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def nothing_left(rootless: Rootless) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    while (left := process_leftovers(str(rootless.base))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"rootless processes left: {left}"
    problems = server_log_problems(rootless.base / "store" / "containers", rootless.kept_logs)
    assert not problems, "a container's unionfs server logged:\n" + "\n".join(problems)
    assert not list((rootless.base / "store" / "containers").glob("*/state.json")) or all(
        '"running"' not in p.read_text()
        for p in (rootless.base / "store" / "containers").glob("*/state.json"))


def test_rootless_sees_pid1_hostname_and_its_uid_map(rootless: Rootless) -> None:
    res = rootless("$UF run --rm -h rl busybox sh -c "
                   "'echo $$; hostname; id -u; cat /proc/self/uid_map; echo hi > /root/x; "
                   "stat -c %u /root/x /etc/passwd'")
    assert res.returncode == 0, res.stderr
    out = res.stdout.split()
    assert out[:3] == ["1", "rl", "0"]
    assert out[3:6] == ["0", str(ROOTLESS_UID), "1"]  # its own uid becomes root inside
    assert out[6:] == ["0", "0"]  # the image's and the new file's owner show as root


def test_rootless_writes_land_in_its_upper(rootless: Rootless) -> None:
    res = rootless("$UF run --name w busybox sh -c 'echo changed > /etc/motd' && "
                   "cat store/uppers/container/*/upper/etc/motd && cat rootfs/etc/motd && "
                   "stat -c %u store/uppers/container/*/upper/etc/motd && $UF rm w && "
                   "ls store/uppers/container | wc -l")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:5] == ["changed", "image one", str(ROOTLESS_UID), "w", "0"]


def test_rootless_limits_fail_clearly_without_delegation(rootless: Rootless) -> None:
    res = rootless("$UF run --rm --memory 64m busybox true; echo rc=$?; "
                   "ls store/containers | wc -l")
    assert "rc=125" in res.stdout  # docker's code for "the runtime failed"
    assert "cannot apply resource limits" in res.stderr
    # Without a subordinate range: one id, and a warning that says so and how to add one.
    assert "warning: no subordinate ids for uftest" in res.stderr
    assert "usermod --add-subuids" in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "warning: no subordinate ids" not in ln]
    assert len(errors) == 1
    assert res.stdout.split()[-1] == "0"  # nothing left in the store


def test_rootless_detached_exec_stop(rootless: Rootless) -> None:
    res = rootless(
        "$UF run -d --name bg --network none busybox sh -c "
        "'echo up > /root/f; trap \"\" TERM; while true; do sleep 0.2; done' >/dev/null && "
        "sleep 0.5 && $UF exec bg sh -c 'cat /root/f; ls /sys/class/net; cat /proc/1/cmdline' && "
        "echo && $UF stop -t 1 bg && $UF ps -a && $UF rm bg"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["up", "lo"]
    assert lines[2].startswith("sh")
    assert "Exited (137)" in res.stdout


def test_rootless_seccomp_and_no_device_nodes(rootless: Rootless) -> None:
    res = rootless("$UF run --rm busybox sh -c "
                   "'grep ^Seccomp: /proc/self/status; mknod /root/b b 8 0 || echo denied; "
                   "unshare -m true || echo nounshare'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["Seccomp:", "2", "denied", "nounshare"]


def test_rootless_attach_init_title_exec_tty_and_a_volume(rootless: Rootless) -> None:
    res = rootless(
        "$UF run -dit --name ra --network none busybox sh >/dev/null && "
        "printf 'echo R-$((4+4)); exit 7\\n' | $UF attach ra; echo rc=$?; $UF rm ra >/dev/null; "
        "$UF run --rm --init --network none busybox sh -c 'cat /proc/1/comm; ps -o pid,args' "
        "&& $UF run -d --name rx --network none busybox sleep 100 >/dev/null && "
        "$UF exec -t rx tty && $UF rm -f rx >/dev/null && "
        "$UF run --rm --network none -v rvol:/data busybox sh -c 'echo v > /data/f' && "
        "stat -c '%u %a' store/volumes store/volumes/rvol/_data/f && $UF volume rm rvol")
    assert res.returncode == 0, res.stderr
    out = res.stdout.replace("\r", "")
    assert "R-8" in out and "rc=7" in out  # attached through the supervisor's socket
    assert "unionfs-init\n" in out and "python" not in out
    assert "1 unionfs-init -- sh -c" in " ".join(out.split())
    assert "/dev/pts/0" in out  # exec -t: a pty of the container's devpts
    assert out.splitlines()[-3:] == [f"{ROOTLESS_UID} 700", f"{ROOTLESS_UID} 644", "rvol"]
