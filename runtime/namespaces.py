"""Namespaces: which ones a container gets, its uid/gid maps, and joining them (``exec``)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from unionfs.runtime import linux
from unionfs.runtime.linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

# Joined in this order by exec: the user namespace first, so the others are ours to enter.
JOIN_ORDER = (
    ("user", CLONE_NEWUSER), ("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET), ("cgroup", CLONE_NEWCGROUP), ("pid", CLONE_NEWPID),
    ("mnt", CLONE_NEWNS),
)
ROOT_USERNS_SIZE = 65536


@dataclass(frozen=True)
class IdMap:
    """One line of ``uid_map``/``gid_map``: ``inside outside count``."""

    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}\n"


def wants_userns(explicit: bool) -> bool:
    """A user namespace is used when asked for, and always when we are not root."""
    return explicit or os.geteuid() != 0


def unshare_flags(network: str) -> int:
    """The namespaces (besides user) a container is created in."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP
    if network != "host":
        flags |= CLONE_NEWNET
    return flags


def id_maps(euid: int, egid: int) -> tuple[list[IdMap], list[IdMap]]:
    """The maps for a new user namespace.

    Unprivileged: our own uid and gid become root inside (the only map the kernel lets an
    unprivileged process write itself; :mod:`runtime.idmap` adds the subordinate range
    through newuidmap/newgidmap). Root with ``--userns``: ids 0-65535 map to themselves, so
    the image's root-owned files stay root's while capabilities are confined to the
    namespace (shifting to subordinate ranges would need the layers' owners shifted too).
    """
    if euid == 0:
        return [IdMap(0, 0, ROOT_USERNS_SIZE)], [IdMap(0, 0, ROOT_USERNS_SIZE)]
    return [IdMap(0, euid, 1)], [IdMap(0, egid, 1)]


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (``SIOCSIFFLAGS``)."""
    import fcntl
    import socket
    import struct

    siocsifflags, iff_up, iff_loopback, iff_running = 0x8914, 0x1, 0x8, 0x40
    ifreq = struct.pack("16sH22s", b"lo", iff_up | iff_loopback | iff_running, b"")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), siocsifflags, ifreq)


def open_namespaces(pid: int) -> list[tuple[int, int]]:
    """Open the namespaces of ``pid`` that differ from ours, as (fd, type) in join order."""
    opened: list[tuple[int, int]] = []
    for name, flag in JOIN_ORDER:
        theirs = f"/proc/{pid}/ns/{name}"
        if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
            continue
        opened.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), flag))
    return opened


def join(opened: list[tuple[int, int]]) -> None:
    """Enter the namespaces from :func:`open_namespaces` (pid applies to children)."""
    for fd, flag in opened:
        linux.setns(fd, flag)
        with contextlib.suppress(OSError):
            os.close(fd)
