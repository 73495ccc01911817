"""``exec``: run another process in a running container's namespaces and cgroup.

Like a start, in two forks: the first joins the cgroup and the namespaces (user first), the
second is born inside the container's pid namespace, switches user, drops privileges and
execs. We are a child subreaper, so we wait for the second one directly. With ``-t`` the
first one opens a pty of the container's own devpts (``tty`` inside names a ``/dev/pts/N``
of the container) and sends us its master (runtime.console).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace

from unionfs.errors import UserError
from unionfs.runtime import cgroups, child, console, init, linux, namespaces, relay, security, state
from unionfs.runtime.child import read_all, read_line
from unionfs.runtime.supervisor import StartFailed


def exec_in(container: state.Container, argv: list[str], *, interactive: bool, tty: bool,
            user: str | None, workdir: str | None, env: list[str]) -> int:
    """Run ``argv`` in ``container``; its exit code."""
    st = container.state()
    if not container.running():
        raise UserError(f"container {container.name} is not running")
    spec = replace(container.spec, tty=tty, interactive=interactive,
                   env=[*container.spec.env, *env])
    if user is not None:
        spec.user = user
    cg = cgroups.load(st["cgroup"]) if st.get("cgroup") else None
    opened = namespaces.open_namespaces(int(st["pid"]))
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    console_sock, console_fd = console.socket_pair() if tty else (None, None)
    if tty:
        stdio = child.Stdio(-1, -1, -1)  # the pty is made inside (see _join_and_fork)
    else:
        stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY)
        stdio = child.Stdio(stdin, 1, 2)
    up_r, up_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        child.close_other_fds({stdio.stdin, stdio.stdout, stdio.stderr, console_fd or 0,
                               up_w, err_w, *(fd for fd, _ in opened)})
        child.guarded(err_w, lambda: _join_and_fork(cg, opened, stdio, spec, argv, workdir,
                                                    up_w, err_w, console_fd))
    for fd, _ in opened:
        os.close(fd)
    os.close(up_w)
    os.close(err_w)
    if console_fd is not None:
        os.close(console_fd)
    elif stdio.stdin != 0:
        os.close(stdio.stdin)
    line = read_line(up_r)
    os.close(up_r)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    message = read_all(err_r)
    os.close(err_r)
    master = console.receive_master(console_sock) if console_sock is not None else None
    target = int(line[1:]) if line.startswith("P") else None
    if message or target is None or (tty and master is None):
        if master is not None:
            os.close(master)
        if target is not None:
            relay.wait(target)
        code, _, text = message.partition(" ")
        raise StartFailed(text or "exec failed", int(code) if code.isdigit() else 1)
    return init.exit_code(_wait(target, master, interactive))


def _join_and_fork(cg: cgroups.Cgroup | None, opened: list[tuple[int, int]],
                   stdio: child.Stdio, spec: object, argv: list[str], workdir: str | None,
                   up_w: int, err_w: int, console_fd: int | None) -> None:
    if cg is not None:
        cg.add(os.getpid())
    seccomp_filter = security.prepare_filter(spec)  # type: ignore[arg-type]
    namespaces.join(opened)  # the mount namespace's root is the container's now
    if console_fd is not None:
        master, slave, _ = console.open_in_container("")
        console.send_master(console_fd, master)
        stdio = child.Stdio(slave, slave, slave, tty=slave)
    pid = os.fork()
    if pid == 0:
        def body() -> None:
            child.attach_stdio(stdio)
            child.finish(spec, argv, workdir,  # type: ignore[arg-type]
                         seccomp_filter=seccomp_filter)
        child.guarded(err_w, body)
    os.write(up_w, f"P{pid}\n".encode())


def _wait(pid: int, master: int | None, interactive: bool) -> int:
    with relay.forwarding(pid):
        if master is None:
            return relay.wait(pid)
        try:
            return relay.pty_session(pid, master, stdin=0 if interactive else None, stdout=1)
        finally:
            os.close(master)
