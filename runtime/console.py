"""``-t``: the container's terminal, made in the container's own devpts instance.

PID 1 opens the pty through the new ``/dev/pts/ptmx`` (so ``tty`` inside names
``/dev/pts/0``, which exists there), binds the slave onto ``/dev/console``, and hands the
master to the supervisor over a unix socket (``SCM_RIGHTS``), as runc's console socket does.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import socket
import struct

from unionfs.runtime import linux

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def socket_pair() -> tuple[socket.socket, int]:
    """(the supervisor's end, the fd the container's PID 1 sends on)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.set_inheritable(False)
    fd = theirs.detach()
    os.set_inheritable(fd, False)
    return ours, fd


def open_in_container(root: str) -> tuple[int, int, int]:
    """(master, slave, number) of a new pty of the devpts mounted at ``root``/dev/pts."""
    master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    slave = os.open(f"{root}/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    return master, slave, number


def bind_console(root: str, number: int) -> None:
    """``/dev/console`` is the container's terminal (docker's convention)."""
    target = f"{root}/dev/console"
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    linux.mount(f"{root}/dev/pts/{number}", target, None, linux.MS_BIND)


def send_master(sock_fd: int, master: int) -> None:
    """Hand the pty master to the supervisor and close our copies."""
    with socket.socket(fileno=sock_fd) as sock:
        sock.sendmsg([b"M"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [master]))])
    os.close(master)


def receive_master(sock: socket.socket) -> int | None:
    """The master PID 1 sent (None: it failed before sending)."""
    with sock, contextlib.suppress(OSError):
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        return fds[0] if fds else None
    return None
