"""A tiny init for ``--init``: runs the command as its child, forwards signals, reaps zombies.

It runs in the already-loaded interpreter of the container's PID 1 (the image has no Python),
so it uses only ``os`` and ``signal``, both built in, and the already-loaded ``ctypes`` of
:mod:`runtime.linux`, after the pivot. It shows itself as ``unionfs-init -- CMD...`` (as
docker's ``docker-init -- CMD``), never as the host's Python command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import NoReturn

from unionfs.runtime import linux

TITLE = "unionfs-init"

FORWARDED = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
)


def exit_code(status: int) -> int:
    """A wait status as a shell-style exit code (128 + signal for a killed process)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(start_child: Callable[[], NoReturn], tty_fd: int | None = None,
        close_in_parent: tuple[int, ...] = (), argv: list[str] | None = None) -> NoReturn:
    """Fork ``start_child`` (which must exec or exit) and supervise it until it ends.

    ``close_in_parent`` are fds only the child needs (the error pipe: it must close when the
    command execs, not when init ends); ``argv`` is the command, shown in init's title.
    """
    watched = {*FORWARDED, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        os.setpgid(0, 0)
        if tty_fd is not None:
            # The command's group gets the terminal, so Ctrl-C reaches it once, not twice.
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(tty_fd, os.getpgrp())
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        start_child()
    for fd in close_in_parent:
        os.close(fd)
    linux.set_process_title([TITLE, "--", *(argv or [])])
    _supervise(pid, watched)


def _supervise(pid: int, watched: set[signal.Signals]) -> NoReturn:
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)
            continue
        code = _reap(pid)
        if code is not None:
            os._exit(code)


def _reap(main_pid: int) -> int | None:
    """Reap every exited child; the main child's exit code once it has ended."""
    result = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return result
        if pid == 0:
            return result
        if pid == main_pid:
            result = exit_code(status)
