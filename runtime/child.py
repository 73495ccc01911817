"""The code that runs after ``fork`` and ends in ``exec``.

Two processes: the *intermediate* enters the new namespaces and forks the container's PID 1,
then exits (the supervisor, a child subreaper, adopts PID 1). *PID 1* sets its hostname, mounts
the container's tree, pivots into it, drops privileges and execs the command (or runs the
small init of ``--init``). Any failure is written to the error pipe as ``"<code> <message>"``
and ends the process with that code; a successful exec closes the pipe (close-on-exec) empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from unionfs.runtime import capabilities, console, init, linux, mounts, namespaces, security
from unionfs.runtime.seccomp import Filter
from unionfs.runtime.spec import Spec


class ExecError(Exception):
    """A failure to report: the exit code and docker's wording of the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Stdio:
    """The container's standard streams, or a pty slave for all three."""

    stdin: int
    stdout: int
    stderr: int
    tty: int | None = None


@dataclass
class ChildConfig:
    """What the forked processes need; built by the supervisor before the fork."""

    spec: Spec
    root: str
    state_dir: str
    userns: bool
    stdio: Stdio
    sync_r: int
    sync_w: int
    err_w: int
    server_ns: bool = False  # the unionfs server is started in our user+mount namespace
    console: int | None = None  # with -t: the socket PID 1 sends its pty master on


@dataclass
class User:
    """The identity the command runs as."""

    uid: int
    gid: int
    home: str


def report(err_w: int, code: int, message: str) -> NoReturn:
    """Tell the supervisor why we failed, and exit with ``code``."""
    with contextlib.suppress(OSError):
        os.write(err_w, f"{code} {message}".encode())
    os._exit(code)


def read_line(fd: int) -> str:
    """One line from a pipe (without waiting for more)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def read_all(fd: int) -> str:
    """Everything a pipe delivers until end-of-file."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def guarded(err_w: int, body: Callable[[], object]) -> NoReturn:
    """Run ``body`` in a forked child: never return into the parent's code."""
    try:
        body()
        os._exit(0)
    except ExecError as exc:
        prefix = "unable to start container process: " if exc.code in (126, 127) else ""
        report(err_w, exc.code, prefix + str(exc))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        report(err_w, 1, f"container setup failed: {exc.strerror or exc}{where}")
    except BaseException as exc:
        report(err_w, 1, f"container setup failed: {exc!r}")


def _expect(fd: int, token: bytes) -> None:
    got = os.read(fd, len(token))
    if got != token:
        os._exit(1)  # the supervisor went away or gave up on us


def close_other_fds(keep: set[int]) -> None:
    """Close every fd but ``keep`` (a PID 1 that never execs must not hold the caller's)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def intermediate(cfg: ChildConfig) -> NoReturn:
    """Enter the namespaces and fork PID 1; report its pid as ``P<pid>``."""
    stdio = cfg.stdio
    close_other_fds({stdio.stdin, stdio.stdout, stdio.stderr, stdio.tty or 0, cfg.sync_r,
                     cfg.sync_w, cfg.err_w, cfg.console or 0})

    def body() -> None:
        _expect(cfg.sync_r, b"G")  # placed in the cgroup
        if cfg.userns:
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(cfg.sync_w, b"U")
            _expect(cfg.sync_r, b"M")  # maps written
            if cfg.server_ns:
                # A mount namespace of our user namespace, for the unionfs server; the
                # container's own mount namespace is made below it (pivot_root would
                # otherwise move the server's root too).
                linux.unshare(linux.CLONE_NEWNS)
                os.write(cfg.sync_w, b"N")
                _expect(cfg.sync_r, b"S")  # the server has mounted the root
        linux.unshare(namespaces.unshare_flags(cfg.spec.network))
        pid = os.fork()
        if pid == 0:
            guarded(cfg.err_w, lambda: container_main(cfg))
        os.write(cfg.sync_w, f"P{pid}\n".encode())

    guarded(cfg.err_w, body)


def container_main(cfg: ChildConfig) -> NoReturn:
    """PID 1: build the tree, pivot, drop privileges, exec."""
    os.close(cfg.sync_w)
    _expect(cfg.sync_r, b"R")  # reparented to the supervisor
    linux.prctl(linux.PR_SET_PDEATHSIG, 9)
    os.close(cfg.sync_r)
    spec = cfg.spec
    if cfg.console is None:
        attach_stdio(cfg.stdio)
    if spec.network != "host":
        namespaces.loopback_up()
    linux.sethostname(spec.hostname)
    steps = mounts.plan(spec, cfg.root, cfg.state_dir, userns=cfg.userns)
    mounts.execute(steps)
    if cfg.console is not None:
        master, slave, number = console.open_in_container(cfg.root)
        console.bind_console(cfg.root, number)
        console.send_master(cfg.console, master)
        attach_stdio(Stdio(slave, slave, slave, tty=slave))
    seccomp_filter = security.prepare_filter(spec)  # while the host's libseccomp is reachable
    mounts.pivot(cfg.root)
    if spec.init:
        init.run(lambda: guarded(cfg.err_w, lambda: finish(spec, spec.argv(),
                                                           seccomp_filter=seccomp_filter)),
                 tty_fd=0 if spec.tty else None, close_in_parent=(cfg.err_w,),
                 argv=spec.argv())
    finish(spec, spec.argv(), seccomp_filter=seccomp_filter)


def attach_stdio(stdio: Stdio) -> None:
    """A new session; the pty as controlling terminal and 0/1/2, or the given streams."""
    os.setsid()
    if stdio.tty is not None:
        fcntl.ioctl(stdio.tty, termios.TIOCSCTTY, 0)
        fds = (stdio.tty, stdio.tty, stdio.tty)
    else:
        fds = (stdio.stdin, stdio.stdout, stdio.stderr)
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    for fd in {*fds}:
        if fd > 2:
            os.close(fd)


def finish(spec: Spec, argv: list[str], workdir: str | None = None, *,
           seccomp_filter: Filter | None = None) -> NoReturn:
    """Switch user, drop capabilities, set no_new_privs, chdir, seccomp and exec ``argv``."""
    user = resolve_user(spec.user)
    env = spec.environment()
    if user.uid != 0 or spec.user:
        env["HOME"] = user.home
    wd = workdir or spec.workdir or "/"
    os.makedirs(wd, exist_ok=True)  # made while still root, as runc does (an image's user
    drop_privileges(user, capabilities.mask(security.kept_caps(spec)))  # may not create it)
    enter_workdir(wd)
    path = resolve_command(argv[0], env.get("PATH", ""))
    if seccomp_filter is not None:
        seccomp_filter.load()
    try:
        os.execve(path, argv, env)
    except PermissionError:
        raise ExecError(126, f'exec: "{argv[0]}": permission denied') from None
    except FileNotFoundError:
        raise ExecError(127, f'exec: "{argv[0]}": no such file or directory') from None
    except OSError as exc:
        raise ExecError(126, f'exec: "{argv[0]}": {exc.strerror}') from None


def enter_workdir(workdir: str) -> None:
    """chdir to the working directory, creating it as docker does."""
    try:
        os.chdir(workdir)
    except FileNotFoundError:
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)


def resolve_command(cmd: str, path: str) -> str:
    """The file to exec for ``cmd``, looked up in ``PATH`` as docker does."""
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise ExecError(127, f'exec: "{cmd}": stat {cmd}: no such file or directory')
        return cmd
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", cmd)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ExecError(127, f'exec: "{cmd}": executable file not found in $PATH')


def resolve_user(text: str) -> User:
    """``uid[:gid]`` or ``name[:group]``, names looked up in the container's /etc files."""
    if not text:
        return User(0, 0, "/root")
    name, _, group = text.partition(":")
    passwd = _table("/etc/passwd")
    entry = next((e for e in passwd if name in (e[0], e[2])), None)
    if entry is None and not name.isdigit():
        raise ExecError(1, f"unable to find user {name}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(name)
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    if group:
        groups = _table("/etc/group")
        gent = next((e for e in groups if group in (e[0], e[2])), None)
        if gent is None and not group.isdigit():
            raise ExecError(1, f"unable to find group {group}: no matching entries in group file")
        gid = int(gent[2]) if gent else int(group)
    return User(uid, gid, home)


def _table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 3]
    except OSError:
        return []


def drop_privileges(user: User, keep: int) -> None:
    """no_new_privs, the bounding set cut to ``keep``, then the uid/gid switch and capset."""
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    for cap in range(linux.last_cap() + 1):
        if not keep & (1 << cap):
            with contextlib.suppress(OSError):
                linux.prctl(linux.PR_CAPBSET_DROP, cap)
    if _setgroups_allowed():
        os.setgroups([user.gid] if user.gid else [])
    try:
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise ExecError(1, f"cannot switch to uid {user.uid} gid {user.gid}: "
                        f"{exc.strerror}") from None
    with contextlib.suppress(OSError):
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    if user.uid == 0:
        linux.capset(keep, keep, 0)
    else:
        linux.capset(0, 0, 0)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True
