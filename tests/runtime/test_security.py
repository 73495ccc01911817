"""A container cannot hurt the host: private store directories, seccomp, capabilities and
device nodes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from unionfs.runtime import capabilities, state
from unionfs.store import Store

from .conftest import CLI


def status_field(cli: CLI, name: str, *args: str) -> str:
    out = cli.ok("run", "--rm", *args, "busybox", "grep", f"^{name}:", "/proc/self/status")
    return out.split(":", 1)[1].strip()


def test_setuid_file_in_an_upper_is_out_of_other_users_reach(cli: CLI, store: Store) -> None:
    cli.ok("run", "--name", "suid", "busybox", "sh", "-c",
           "cp /bin/busybox /root/sh && chmod 4755 /root/sh")
    try:
        upper = state.container_upper(store, "suid")
        assert upper is not None
        assert (upper / "root/sh").stat().st_mode & stat.S_ISUID  # stored as made
        for sub in ("layers", "uppers", "tmp", "containers"):
            assert (store.root / sub).stat().st_mode & 0o077 == 0, sub
        # (through a shell: setpriv would open the program before it switches users)
        res = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                              "--clear-groups", "/bin/sh", "-c", f"{upper}/root/sh -c 'id -u'"],
                             capture_output=True, text=True)
        assert res.returncode == 126 and "Permission denied" in res.stderr
    finally:
        cli("rm", "-f", "suid")


def test_default_seccomp_profile_denies_with_eperm(cli: CLI) -> None:
    assert status_field(cli, "Seccomp") == "2"
    res = cli("run", "--rm", "busybox", "sh", "-c",
              "unshare -m true; echo rc=$?; mknod /root/blk b 8 0; echo rc=$?; "
              "mkfifo /root/fifo && echo fifo-ok")
    assert "rc=1" in res.stdout.split()[0] and res.stdout.split()[1] == "rc=1"
    assert "fifo-ok" in res.stdout
    assert res.stderr.count("Operation not permitted") == 2


def test_a_granted_capability_lifts_its_seccomp_rule(cli: CLI) -> None:
    out = cli.ok("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
                 "unshare -m true && echo unshared")
    assert out == "unshared\n"


def test_unconfined_and_a_profile_file(cli: CLI, tmp_path: Path) -> None:
    assert status_field(cli, "Seccomp", "--security-opt", "seccomp=unconfined") == "0"
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}]}))
    res = cli("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "sh", "-c",
              "mkdir /root/d || echo denied; touch /root/f && echo touched")
    assert res.stdout.split() == ["denied", "touched"]
    assert "Permission denied" in res.stderr


def test_exec_gets_the_containers_filter(cli: CLI) -> None:
    cli.ok("run", "-d", "--name", "filtered", "busybox", "sleep", "1000")
    try:
        out = cli.ok("exec", "filtered", "grep", "^Seccomp:", "/proc/self/status")
        assert out.split() == ["Seccomp:", "2"]
    finally:
        cli("rm", "-f", "filtered")


@pytest.mark.parametrize("content", ["{not json", '{"syscalls": []}',
                                     '{"defaultAction": "SCMP_ACT_NOPE"}'])
def test_a_bad_profile_is_refused_before_anything_runs(cli: CLI, store_root: Path,
                                                       tmp_path: Path, content: str) -> None:
    profile = tmp_path / "bad.json"
    profile.write_text(content)
    before = sorted((store_root / "containers").iterdir()) \
        if (store_root / "containers").exists() else []
    res = cli("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "true")
    assert res.returncode == 125
    assert res.stderr.startswith("unionfs: error: ") and res.stderr.count("\n") == 1
    assert "seccomp profile" in res.stderr
    after = sorted((store_root / "containers").iterdir()) \
        if (store_root / "containers").exists() else []
    assert after == before


def _mask(*names: str) -> str:
    return f"{capabilities.mask(list(names)):016x}"


def test_cap_add_cap_drop_privileged(cli: CLI) -> None:
    default = set(capabilities.DEFAULT)
    assert status_field(cli, "CapEff") == _mask(*capabilities.DEFAULT)
    assert status_field(cli, "CapEff", "--cap-drop", "chown", "--cap-add", "CAP_NET_ADMIN") \
        == _mask(*((default - {"CHOWN"}) | {"NET_ADMIN"}))
    assert status_field(cli, "CapEff", "--cap-drop", "ALL", "--cap-add", "KILL") == _mask("KILL")
    with open("/proc/self/status") as f:
        ours = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    assert status_field(cli, "CapEff", "--privileged") == ours  # all we have
    assert status_field(cli, "Seccomp", "--privileged") == "0"
    res = cli("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "1000", "/root")
    assert res.returncode == 1 and "Operation not permitted" in res.stderr
    res = cli("run", "--rm", "--cap-add", "NOPE", "busybox", "true")
    assert res.returncode == 125 and "unknown capability" in res.stderr


def test_device_nodes_only_with_privileged_or_device(cli: CLI, store: Store) -> None:
    cli.ok("run", "--name", "nodev", "busybox", "sh", "-c", "mknod /root/sda b 8 0 || true")
    try:
        upper = state.container_upper(store, "nodev")
        assert upper is not None and not (upper / "root/sda").exists()
    finally:
        cli("rm", "-f", "nodev")
    cli.ok("run", "--name", "priv", "--privileged", "busybox", "mknod", "/root/null", "c", "1",
           "3")
    try:
        upper = state.container_upper(store, "priv")
        assert upper is not None and stat.S_ISCHR((upper / "root/null").lstat().st_mode)
    finally:
        cli("rm", "-f", "priv")
    out = cli.ok("run", "--rm", "--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c",
                 "echo gone > /dev/mynull && stat -c '%F %t:%T' /dev/mynull")
    assert out == "character special file 1:3\n"
    res = cli("run", "--rm", "--device", "/etc/passwd", "busybox", "true")
    assert res.returncode == 125 and "not a device node" in res.stderr
    assert os.path.exists("/dev/null")
