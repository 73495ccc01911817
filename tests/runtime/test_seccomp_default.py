"""The default seccomp profile on the real kernel: an allow list with docker's exceptions.

The filter is compiled and loaded in a forked child of the test (the same ``Filter`` the
container's last step before ``execve`` loads); the child reports each call's errno.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path

import pytest

from unionfs.runtime import seccomp

PR_SET_NO_NEW_PRIVS = 38
# x86-64 numbers of the calls tried
GETPID, UNSHARE, KEYCTL, CLONE3, KCMP, MKNOD = 39, 272, 250, 435, 312, 133
LSM_GET_SELF_ATTR = 459  # Linux 6.8: newer than the allow list, so never allowed by it
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                "SETPCAP", "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD",
                "AUDIT_WRITE", "SETFCAP"]


def _errnos_under_filter(caps: list[str], tmp: Path) -> dict[str, int]:
    """Each call's errno (0: it worked) in a child that loaded the default profile."""
    libc = ctypes.CDLL(None, use_errno=True)
    fifo, chr_dev = os.fsencode(tmp / "fifo"), os.fsencode(tmp / "chr")

    def call(number: int, *args: ctypes.c_long | bytes) -> int:
        res = libc.syscall(ctypes.c_long(number), *args)
        return 0 if res >= 0 else ctypes.get_errno()

    compiled = seccomp.Filter(seccomp.default_profile(), caps)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            compiled.load()
            child = os.fork()
            if child == 0:
                os._exit(7)
            results = {
                "getpid": call(GETPID),
                "fork": 0 if os.waitpid(child, 0)[1] >> 8 == 7 else 1,
                "unshare": call(UNSHARE, ctypes.c_long(0x00020000)),  # CLONE_NEWNS
                "keyctl": call(KEYCTL, ctypes.c_long(0)),
                "clone3": call(CLONE3, ctypes.c_long(0), ctypes.c_long(0)),
                "kcmp": call(KCMP, *(ctypes.c_long(0),) * 5),
                "mknod_fifo": call(MKNOD, fifo, ctypes.c_long(0o010600), ctypes.c_long(0)),
                "mknod_chr": call(MKNOD, chr_dev, ctypes.c_long(0o020600), ctypes.c_long(0)),
                "newer_call": call(LSM_GET_SELF_ATTR, *(ctypes.c_long(0),) * 4),
            }
            os.write(write_end, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the call numbers are x86-64's")
def test_default_profile_is_an_allow_list_with_dockers_denials(tmp_path: Path) -> None:
    got = _errnos_under_filter(DEFAULT_CAPS, tmp_path)
    assert got == {"getpid": 0, "fork": 0, "unshare": errno.EPERM, "keyctl": errno.EPERM,
                   "clone3": errno.ENOSYS, "kcmp": errno.EPERM, "mknod_fifo": 0,
                   "mknod_chr": errno.EPERM, "newer_call": errno.ENOSYS}
    assert (tmp_path / "fifo").exists() and not (tmp_path / "chr").exists()


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the call numbers are x86-64's")
def test_capabilities_allow_what_docker_ties_to_them(tmp_path: Path) -> None:
    got = _errnos_under_filter([*DEFAULT_CAPS, "SYS_ADMIN", "SYS_PTRACE"], tmp_path)
    assert got["unshare"] == 0  # allowed (the child's own mount namespace)
    assert got["clone3"] == errno.EINVAL  # reached the kernel: a null argument
    assert got["kcmp"] == errno.ESRCH  # reached the kernel: no process 0
    assert got["keyctl"] == errno.EPERM  # denied whatever the capabilities
    assert got["mknod_chr"] == errno.EPERM  # devices only with --device
    assert got["newer_call"] == errno.ENOSYS


def test_the_profile_is_docker_shaped() -> None:
    profile = seccomp.default_profile()
    seccomp.check(profile)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == errno.ENOSYS
    allowed = {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
               and not r.get("args") and not r.get("includes") for n in r["names"]}
    assert {"read", "write", "openat", "execve", "clone3"} - allowed == {"clone3"}
    assert not allowed & {"mount", "keyctl", "kexec_load", "bpf", "mknod", "clone"}
