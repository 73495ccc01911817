"""Seccomp: docker-format profiles compiled with libseccomp and loaded before the exec.

Binding: a thin ctypes layer over ``libseccomp.so.2`` (Debian's ``libseccomp2``). Debian's
``python3-seccomp`` module is built for the system interpreter and lives outside every venv
(and pyenv) interpreter; PyPI has no maintained wheel of it. The six calls used here are
libseccomp's stable C API, so a binding of our own is small and works in any interpreter.

The library is opened and the filter built *before* the pivot (afterwards the host's
library is out of reach); :meth:`Filter.load` is the last step before ``execve``.

Profiles use docker's JSON format (``defaultAction``, ``syscalls`` with ``names``,
``action``, ``errnoRet``, ``args`` and ``includes``/``excludes`` by capability). The default
profile has docker's semantics: an allow list (``runtime/seccomp_allow.py``), so a call
not on it fails (with ENOSYS, so that libc falls back as it does on an older kernel, as runc
answers calls newer than its profile); the calls docker's default denies (modules, kexec,
reboot, clock setting, keyrings, bpf, perf, mount and namespace calls, namespace flags on
clone, ...) fail with EPERM unless the capability docker ties them to is granted, and are
allowed when it is; ``clone3`` fails with ENOSYS so libc falls back to ``clone``. It also
denies creating device nodes (pass devices in with ``--device``).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from typing import Any

from unionfs.errors import UserError
from unionfs.runtime.seccomp_allow import ALLOWED

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000
SCMP_ACT_TRACE = 0x7FF00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
_NR_SCMP_ERROR = -1  # what libseccomp resolves an unknown name to (other arches' calls: < -1)
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_EXTRA_ARCHES = {"x86_64": (0x40000003, 0x4000003E)}  # x86 and x32 beside the native one

S_IFMT, S_IFCHR, S_IFBLK = 0o170000, 0o020000, 0o060000
S_IFREG, S_IFDIR, S_IFIFO, S_IFSOCK, S_IFLNK = 0o100000, 0o040000, 0o010000, 0o140000, 0o120000
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)  # NEWNS CGROUP UTS IPC USER PID NET TIME


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _allow(names: list[str] | tuple[str, ...], *, if_any: list[str] | None = None,
           unless: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ALLOW"}
    if if_any:
        rule["includes"] = {"caps": [f"CAP_{c}" for c in if_any]}
    if unless:
        rule["excludes"] = {"caps": [f"CAP_{c}" for c in unless]}
    return rule


def _allow_args(name: str, index: int, value: int, mask: int, *,
                unless: list[str] | None = None) -> dict[str, Any]:
    rule = _allow([name], unless=unless)
    rule["args"] = [{"index": index, "value": mask, "valueTwo": value,
                     "op": "SCMP_CMP_MASKED_EQ"}]
    return rule


def _deny(names: list[str], *, unless: list[str] | None = None,
          errno_ret: int = errno.EPERM) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret}
    if unless:
        rule["excludes"] = {"caps": [f"CAP_{c}" for c in unless]}
    return rule


def _deny_args(name: str, index: int, value: int, mask: int, *,
               unless: list[str] | None = None) -> dict[str, Any]:
    rule = _deny([name], unless=unless)
    rule["args"] = [{"index": index, "value": mask, "valueTwo": value,
                     "op": "SCMP_CMP_MASKED_EQ"}]
    return rule


# Calls denied (EPERM) unless the container holds one of the capabilities docker ties them to;
# with it they are allowed.
_CAPABLE = (
    (("acct",), ["SYS_PACCT"]),
    (("bpf",), ["SYS_ADMIN", "BPF"]),
    (("perf_event_open",), ["SYS_ADMIN", "PERFMON"]),
    (("clock_adjtime", "clock_settime", "settimeofday", "stime"), ["SYS_TIME"]),
    (("create_module", "delete_module", "finit_module", "get_kernel_syms", "init_module",
      "query_module"), ["SYS_MODULE"]),
    (("kexec_file_load", "kexec_load", "reboot"), ["SYS_BOOT"]),
    (("ioperm", "iopl"), ["SYS_RAWIO"]),
    (("get_mempolicy", "mbind", "set_mempolicy", "move_pages"), ["SYS_NICE"]),
    (("open_by_handle_at",), ["DAC_READ_SEARCH"]),
    (("syslog",), ["SYSLOG"]),
    (("kcmp", "process_vm_readv", "process_vm_writev"), ["SYS_PTRACE"]),
    (("vhangup",), ["SYS_TTY_CONFIG"]),
    (("mount", "umount", "umount2", "pivot_root", "setns", "unshare", "swapon", "swapoff",
      "quotactl", "name_to_handle_at", "fanotify_init", "fsopen", "fsconfig", "fsmount",
      "fspick", "open_tree", "move_mount", "mount_setattr", "lookup_dcookie"), ["SYS_ADMIN"]),
)
_ALL_NAMESPACES = 0
for _flag in NAMESPACE_FLAGS:
    _ALL_NAMESPACES |= _flag


def default_profile() -> dict[str, Any]:
    """The profile applied unless ``--security-opt seccomp=...`` says otherwise."""
    rules = [
        _allow(ALLOWED),
        _deny(["add_key", "keyctl", "request_key", "lookup_dcookie", "nfsservctl", "uselib",
               "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "userfaultfd",
               "io_uring_setup", "io_uring_enter", "io_uring_register"]),
        *(_deny(list(names), unless=caps) for names, caps in _CAPABLE),
        *(_allow(names, if_any=caps) for names, caps in _CAPABLE),
        _deny(["clone3"], unless=["SYS_ADMIN"], errno_ret=errno.ENOSYS),
        _allow(["clone", "clone3"], if_any=["SYS_ADMIN"]),
        # clone without namespace flags is allowed; with any of them, EPERM.
        _allow_args("clone", 0, 0, _ALL_NAMESPACES, unless=["SYS_ADMIN"]),
        *(_deny_args("clone", 0, flag, flag, unless=["SYS_ADMIN"]) for flag in NAMESPACE_FLAGS),
        # Files, directories, FIFOs and sockets may be made with mknod; device nodes not (pass
        # devices in with --device).
        *(_allow_args(name, index, kind, S_IFMT)
          for name, index in (("mknod", 1), ("mknodat", 2))
          for kind in (0, S_IFREG, S_IFDIR, S_IFIFO, S_IFSOCK, S_IFLNK)),
        *(_deny_args(name, index, kind, S_IFMT) for name, index in (("mknod", 1),
                                                                    ("mknodat", 2))
          for kind in (S_IFCHR, S_IFBLK)),
    ]
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
            "syscalls": rules}


def parse_option(value: str) -> str | dict[str, Any]:
    """``--security-opt seccomp=VALUE``: ``unconfined``, or a docker JSON profile's path
    (read now: the container keeps the profile it was created with)."""
    if value == "unconfined":
        return "unconfined"
    try:
        with open(value) as f:
            profile = json.load(f)
    except OSError as exc:
        raise UserError(f"opening seccomp profile ({value}) failed: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"decoding seccomp profile failed: {value}: {exc.msg}") from None
    check(profile)
    return profile


def check(profile: Any) -> None:
    """Refuse what cannot be compiled (one-line errors), before anything runs."""
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise UserError("seccomp profile: a JSON object with a defaultAction is needed")
    action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    for rule in profile.get("syscalls") or []:
        if not isinstance(rule, dict) or not isinstance(rule.get("names", []), list):
            raise UserError(f"seccomp profile: bad syscalls entry {rule!r}")
        action(rule.get("action", ""), rule.get("errnoRet"))
        for arg in rule.get("args") or []:
            if arg.get("op") not in _OPS:
                raise UserError(f"seccomp profile: unknown comparison {arg.get('op')!r}")


def action(name: str, errno_ret: int | None = None) -> int:
    """A docker action name as libseccomp's action value."""
    simple = {"SCMP_ACT_KILL": SCMP_ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD":
              SCMP_ACT_KILL_THREAD, "SCMP_ACT_KILL_PROCESS": SCMP_ACT_KILL_PROCESS,
              "SCMP_ACT_TRAP": SCMP_ACT_TRAP, "SCMP_ACT_ALLOW": SCMP_ACT_ALLOW,
              "SCMP_ACT_LOG": SCMP_ACT_LOG}
    if name in simple:
        return simple[name]
    if name == "SCMP_ACT_ERRNO":
        return SCMP_ACT_ERRNO | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return SCMP_ACT_TRACE | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    raise UserError(f"seccomp profile: unknown action {name!r}")


def applies(rule: dict[str, Any], caps: list[str], arch: str) -> bool:
    """Docker's ``includes``/``excludes``: by capabilities held and by architecture."""
    held = {f"CAP_{c}" for c in caps}
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) & held:
        return False
    if exc.get("caps") and set(exc["caps"]) & held:
        return False
    arches = {_arch_name(a) for a in inc.get("arches") or []}
    if arches and arch not in arches:
        return False
    return arch not in {_arch_name(a) for a in exc.get("arches") or []}


def _arch_name(docker_arch: str) -> str:
    names = {"amd64": "x86_64", "SCMP_ARCH_X86_64": "x86_64", "arm64": "aarch64",
             "SCMP_ARCH_AARCH64": "aarch64"}
    return names.get(docker_arch, docker_arch)


class Filter:
    """A compiled filter, ready to load (build it while the host's libseccomp is reachable)."""

    def __init__(self, profile: dict[str, Any], caps: list[str]) -> None:
        self.lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
            ctypes.POINTER(_ArgCmp)]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
        self.ctx = self.lib.seccomp_init(default)
        if not self.ctx:
            raise OSError(errno.EINVAL, "seccomp_init failed")
        machine = os.uname().machine
        for token in _EXTRA_ARCHES.get(machine, ()):
            self.lib.seccomp_arch_add(self.ctx, token)  # -EEXIST or unsupported: ignored
        for rule in profile.get("syscalls") or []:
            if applies(rule, caps, machine):
                self._add(rule, default)

    def _add(self, rule: dict[str, Any], default: int) -> None:
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            return  # libseccomp refuses a rule that says what the default says
        args = rule.get("args") or []
        array = (_ArgCmp * max(len(args), 1))()
        for i, arg in enumerate(args):
            array[i] = _ArgCmp(int(arg["index"]), _OPS[arg["op"]], int(arg.get("value", 0)),
                               int(arg.get("valueTwo", 0)))
        for name in rule.get("names") or [rule.get("name", "")]:
            number = self.lib.seccomp_syscall_resolve_name(name.encode())
            if number == _NR_SCMP_ERROR:
                continue  # a name libseccomp does not know
            res = self.lib.seccomp_rule_add_array(self.ctx, act, number, len(args), array)
            if res < 0 and number < 0:
                continue  # a call of another architecture that the filter does not cover
            if res < 0:
                raise UserError(f"seccomp profile: cannot add the rule for {name}: "
                                f"{os.strerror(-res)}")

    def load(self) -> None:
        """Install the filter on this process (no_new_privs must be set already)."""
        res = self.lib.seccomp_load(self.ctx)
        if res < 0:
            raise OSError(-res, f"seccomp_load: {os.strerror(-res)}")


def prepare(setting: str | dict[str, Any], caps: list[str], privileged: bool) -> Filter | None:
    """The filter a container's processes get (None: unconfined or privileged)."""
    if privileged or setting == "unconfined":
        return None
    profile = default_profile() if setting == "default" else setting
    assert isinstance(profile, dict)
    return Filter(profile, caps)
