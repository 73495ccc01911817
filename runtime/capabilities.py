"""Capability names and the set a container runs with (docker's default, ``--cap-add``,
``--cap-drop``, ``--privileged``)."""

from __future__ import annotations

from unionfs.errors import UserError

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # index = capability number (linux/capability.h)

DEFAULT = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
           "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP")


def normalize(name: str) -> str:
    """``net_admin``, ``CAP_NET_ADMIN`` -> ``NET_ADMIN`` (``ALL`` stays); unknown: an error."""
    upper = name.strip().upper().removeprefix("CAP_")
    if upper != "ALL" and upper not in NAMES:
        raise UserError(f"unknown capability: {name!r}")
    return upper


def names_of(add: list[str], drop: list[str], privileged: bool,
             known: int = len(NAMES)) -> list[str]:
    """The capability names a container keeps, in number order (docker's rules: the default
    set, minus ``drop``, plus ``add``; ``ALL`` means every one; privileged keeps all)."""
    every = list(NAMES[:known])
    if privileged:
        return every
    added = {normalize(n) for n in add}
    dropped = {normalize(n) for n in drop}
    kept = set() if "ALL" in dropped else set(DEFAULT) - dropped
    kept |= set(every) if "ALL" in added else added
    return [n for n in every if n in kept]


def mask(names: list[str]) -> int:
    """The bit mask of capability ``names``."""
    bits = 0
    for name in names:
        bits |= 1 << NAMES.index(name)
    return bits
