"""The supervisor: one run of a container from mount to cleanup.

Order: write the /etc files, make the cgroup, mount the root (the unionfs server is our
child, started before the container, so it is in neither the container's pid namespace nor
its cgroup), fork the container (see :mod:`runtime.child`), record it as running, wait while
relaying signals and terminal, then remove the cgroup, release the mount and record the exit.
The supervisor is a child subreaper, so PID 1 becomes its child once the intermediate exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.runtime import (
    attach,
    cgroups,
    child,
    console,
    idmap,
    init,
    initlayer,
    linux,
    logs,
    namespaces,
    network,
    relay,
    state,
)
from unionfs.runtime.child import read_all, read_line
from unionfs.runtime.rootfs import RootMount, cleanup_stale, mount_root, private_mounts
from unionfs.runtime.spec import Spec


class StartFailed(UserError):
    """The container could not start; the exit code is the one docker would give."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(" ".join(message.split("\n")))
        self.exit_code = code


class Interrupted(StartFailed):
    """A termination signal arrived before the container was running: nothing is kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} while starting the "
                         "container", 128 + signum)


STARTUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Note termination signals instead of dying of them, so a start can be undone at a safe
    point (:func:`check_signals`); the list holds the signals received."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    old = {s: signal.signal(s, note) for s in STARTUP_SIGNALS}
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def check_signals(received: list[int]) -> None:
    """Raise :class:`Interrupted` when a termination signal came while starting."""
    if received:
        raise Interrupted(received[0])


@dataclass
class Started:
    """A container process we spawned."""

    pid: int
    master: int | None  # the pty's master side with -t


def write_etc_files(container: state.Container, spec: Spec) -> None:
    """The files bound onto /etc/hostname, /etc/hosts and /etc/resolv.conf."""
    d = container.dir
    (d / "hostname").write_text(f"{spec.hostname}\n")
    extra = network.hosts_extra() if spec.network == "private" else ""
    (d / "hosts").write_text(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{spec.hostname}\n{extra}"
    )
    resolv = ""
    if spec.network == "host":
        with contextlib.suppress(OSError):
            resolv = Path("/etc/resolv.conf").read_text()
    elif spec.network == "private":
        resolv = network.resolv_conf()
    (d / "resolv.conf").write_text(resolv)


@dataclass
class Resources:
    """What one run started, for the cleanup: the root mount and the network."""

    root: RootMount | None = None
    net: network.Network | None = None


def container_maps(spec: Spec) -> idmap.Maps | None:
    """The maps of the container's user namespace (None: it gets none)."""
    if not namespaces.wants_userns(spec.userns):
        return None
    if os.geteuid() != 0:
        return idmap.rootless_maps()
    if spec.uidmap or spec.gidmap:
        return idmap.Maps(spec.uidmap or spec.gidmap, spec.gidmap or spec.uidmap, full=False)
    uid_map, gid_map = namespaces.id_maps(0, 0)
    return idmap.Maps(uid_map, gid_map, full=False)


def mount_container_root(container: state.Container, spec: Spec,
                         in_ns_of: int | None = None) -> RootMount:
    """The container's root: its init layer (mount points, runtime.initlayer) over the
    image's layers; with ``in_ns_of``, served from that process's user and mount namespaces
    (a rootless container's, where the server may create files of any owner)."""
    wrapper = ([] if in_ns_of is None else
               ["nsenter", f"--target={in_ns_of}", "--user", "--mount", "--"])
    lowers = container.config["layer_dirs"]
    init_layer = initlayer.build(container.dir, lowers, spec)
    return mount_root([str(init_layer), *lowers], container.upper, container.work,
                      container.rootfs, allow_other=os.geteuid() == 0 or bool(wrapper),
                      log_file=container.dir / "unionfs.log", wrapper=wrapper)


def make_cgroup(container: state.Container, spec: Spec) -> cgroups.Cgroup | None:
    """The container's cgroup with its limits; None when there can be none and none asked."""
    try:
        cg = cgroups.create(container.id)
    except cgroups.CgroupUnavailable as exc:
        if spec.limits.any():
            raise UserError(f"cannot apply resource limits: {exc}") from None
        return None
    try:
        cg.apply(spec.limits)
    except OSError as exc:
        cg.remove()
        raise UserError(f"cannot apply resource limits: {exc.strerror}: {exc.filename}") from None
    return cg


def supervise(container: state.Container, *, attached: bool,
              notify: Callable[[], None] | None = None, hold_output: bool = False) -> int:
    """Run the container once; its exit code. ``notify()`` is called once it started.

    A termination signal before the container runs undoes the start (mount, cgroup, and with
    ``--rm`` the container); after that, signals are forwarded to the container. A ``-t``
    container's terminal is served on its attach socket (runtime.attach); with
    ``hold_output`` its output waits for the first client (``run -it``).
    """
    spec = container.spec
    with deferred_signals() as received:
        maps = container_maps(spec)
        # A rootless container with the whole range: its server runs in its namespaces.
        server_ns = maps is not None and maps.full and os.geteuid() != 0
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        write_etc_files(container, spec)
        console_server = attach.ConsoleServer(attach.socket_path(container)) if spec.tty \
            else None
        cleanup_stale(container.rootfs)
        private = private_mounts()
        cg = make_cgroup(container, spec)
        res = Resources()
        started: Started | None = None
        logger = logs.Logger(container.log_path)
        code: int | None = None

        def in_ns(pid: int) -> None:
            res.root = mount_container_root(container, spec, pid)

        def connect(pid1: int) -> None:
            if spec.network == "private":
                res.net = network.start(pid1, spec.ports, container.dir,
                                        join_userns=maps is not None)

        try:
            check_signals(received)
            if not server_ns:
                res.root = mount_container_root(container, spec)
            check_signals(received)
            started = spawn(container, spec, cg, maps=maps, attached=attached, logger=logger,
                            on_ns=in_ns if server_ns else None, on_pid1=connect)
            check_signals(received)
            assert res.root is not None
            _record_running(container, started, cg, res, private)
            if notify is not None:
                notify()
            watch_server(res.root, started.pid)
            status = wait_container(started, spec, logger, attached=attached,
                                    pending=received, console=console_server,
                                    hold_output=hold_output)
            _record_exit(container, status, cg, res.root)
            code = int(container.state()["exit_code"])
            return code
        finally:
            _cleanup(started, cg, res)
            logger.close()
            if spec.remove:
                state.delete(container)
            if console_server is not None:
                console_server.close(code)  # attached clients learn the code after cleanup


def watch_server(root: RootMount, pid1: int) -> None:
    """Kill the container when its filesystem server dies: without it nothing in the
    container works (a thread waits for the server; a pidfd names PID 1 safely)."""
    if root.handle is None:
        return
    process = root.handle.process
    pidfd = os.pidfd_open(pid1)

    def wait() -> None:
        try:
            process.wait()
            if not root.released:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)

    threading.Thread(target=wait, name="server-watch", daemon=True).start()


def _record_running(container: state.Container, started: Started, cg: cgroups.Cgroup | None,
                    res: Resources, private: bool) -> None:
    me = os.getpid()
    root = res.root
    server = root.handle.pid if root is not None and root.handle is not None else None
    container.write_state(
        status="running", pid=started.pid, pid_start=state.pid_start_time(started.pid),
        supervisor=me, supervisor_start=state.pid_start_time(me),
        server=server, server_start=state.pid_start_time(server) if server else None,
        private_mounts=private, cgroup=cg.to_dict() if cg else None,
        started_at=state.now_iso(), exit_code=None, oom_killed=False, finished_at=None,
        error="", network=res.net.to_dict() if res.net else None,
        pasta=_pid_and_start(res.net.pid if res.net else None),
    )


def _record_exit(container: state.Container, status: int, cg: cgroups.Cgroup | None,
                 root: RootMount) -> None:
    code = init.exit_code(status)
    oom = cg.oom_killed() if cg else False
    if oom and code != 0:
        code = 137
    error = ""
    died = root.server_died
    if died is not None:
        error = f"the container's filesystem server died (status {died})"
    container.write_state(status="exited", exit_code=code, oom_killed=oom,
                          finished_at=state.now_iso(), error=error)


def _pid_and_start(pid: int | None) -> list[int | None] | None:
    """A helper process as the state records it: pid and start time (pids are reused)."""
    return [pid, state.pid_start_time(pid)] if pid else None


def _cleanup(started: Started | None, cg: cgroups.Cgroup | None, res: Resources) -> None:
    if started is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(started.pid, 0)
        if started.master is not None:
            os.close(started.master)
    if res.net is not None:
        res.net.stop()
    if cg is not None:
        cg.remove()
    if res.root is not None:
        res.root.release()


def _stdio(logger: logs.Logger, spec: Spec, attached: bool,
           ) -> tuple[child.Stdio, list[int], int | None]:
    """The container's streams, the fds to close after the fork, and the pty master.

    Without ``-t``, stdout and stderr are pipes to the logger (which copies them to ours
    when attached); with it, PID 1 makes the pty itself (runtime.console).
    """
    if spec.tty:
        return child.Stdio(-1, -1, -1), [], None
    stdin = 0 if attached and spec.interactive else os.open(os.devnull, os.O_RDONLY)
    out = logger.stream("stdout", echo=1 if attached else None)
    err = logger.stream("stderr", echo=2 if attached else None)
    return child.Stdio(stdin, out, err), [fd for fd in (stdin, out, err) if fd != 0], None


def spawn(container: state.Container, spec: Spec, cg: cgroups.Cgroup | None, *,
          maps: idmap.Maps | None, attached: bool, logger: logs.Logger,
          on_ns: Callable[[int], None] | None = None,
          on_pid1: Callable[[int], None] | None = None) -> Started:
    """Fork the container and wait for its exec; :class:`StartFailed` when it cannot start.

    ``on_ns(pid)`` runs once the intermediate has its user and first mount namespace (the
    unionfs server is started there); ``on_pid1(pid)`` before PID 1 may go on (network).
    """
    stdio, to_close, master = _stdio(logger, spec, attached)
    down_r, down_w = os.pipe2(os.O_CLOEXEC)
    up_r, up_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    console_sock, console_fd = console.socket_pair() if spec.tty else (None, None)
    cfg = child.ChildConfig(spec, str(container.rootfs), str(container.dir), maps is not None,
                            stdio, down_r, up_w, err_w, server_ns=on_ns is not None,
                            console=console_fd)
    pid = os.fork()
    if pid == 0:
        os.close(down_w)
        os.close(up_r)
        os.close(err_r)
        if master is not None:
            os.close(master)
        child.intermediate(cfg)
    for fd in (down_r, up_w, err_w, *to_close):
        os.close(fd)
    if console_fd is not None:
        os.close(console_fd)
    pid1: int | None = None
    try:
        pid1 = _handshake(pid, cg, maps, down_w, up_r, on_ns)
        if pid1 is not None and on_pid1 is not None:
            on_pid1(pid1)
    except BaseException:
        if pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid1, 0)
        raise
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        # The intermediate is reaped, so PID 1 is our child now: it may arm its parent-death
        # signal, and dies with us even if we are killed.
        with contextlib.suppress(OSError):
            os.write(down_w, b"R")
        os.close(down_w)
        os.close(up_r)
    message = read_all(err_r)
    os.close(err_r)
    if console_sock is not None:
        master = console.receive_master(console_sock)
    if message or pid1 is None or (spec.tty and master is None):
        code, _, text = message.partition(" ")
        if pid1 is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid1, 0)
        if master is not None:
            os.close(master)
        raise StartFailed(text or "container process failed to start",
                          int(code) if code.isdigit() else 1)
    return Started(pid1, master)


def _handshake(pid: int, cg: cgroups.Cgroup | None, maps: idmap.Maps | None, down: int,
               up: int, on_ns: Callable[[int], None] | None) -> int | None:
    """Place the intermediate in the cgroup, write its id maps, let ``on_ns`` start the
    server in its namespaces; PID 1's pid (None: failed)."""
    try:
        if cg is not None:
            cg.add(pid)
        os.write(down, b"G")
        if maps is not None:
            if os.read(up, 1) != b"U":
                return None
            idmap.write_maps(pid, maps)
            os.write(down, b"M")
            if on_ns is not None:
                if os.read(up, 1) != b"N":
                    return None
                on_ns(pid)
                os.write(down, b"S")
        line = read_line(up)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    return int(line[1:]) if line.startswith("P") else None


def wait_container(started: Started, spec: Spec, logger: logs.Logger, *,
                   attached: bool, pending: list[int] | None = None,
                   console: attach.ConsoleServer | None = None,
                   hold_output: bool = False) -> int:
    """Wait for PID 1 with signals forwarded and the terminal relayed; its wait status.

    ``pending`` are signals that arrived since the container was recorded running: they are
    forwarded first. With ``console``, the terminal goes to the log and the attached clients.
    """
    with relay.forwarding(started.pid):
        for signum in pending or ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, signum)
        if started.master is None:
            return relay.wait(started.pid)
        out = logger.stream("stdout", echo=1 if attached else None)
        stdin = 0 if attached and spec.interactive else None
        try:
            if console is not None:
                return console.serve(started.pid, started.master, out,
                                     interactive=spec.interactive, hold=hold_output)
            return relay.pty_session(started.pid, started.master, stdin=stdin, stdout=out)
        finally:
            os.close(out)


# -- foreground and detached ------------------------------------------------------------


def run_attached(container: state.Container) -> int:
    """``run`` without ``-d``: supervise here; the container's exit code."""
    return supervise(container, attached=True)


def run_detached(container: state.Container, *, hold_output: bool = False) -> None:
    """Start a daemon that supervises the container; return once it runs (or failed).
    ``hold_output``: a ``-t`` container's output waits for the first attached client."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _daemon(container, w, hold_output)
    os.close(w)
    os.waitpid(pid, 0)
    message = read_all(r)
    os.close(r)
    code, _, text = message.partition(" ")
    if code != "0":
        raise StartFailed(text or "the container supervisor died while starting",
                          int(code) if code.isdigit() else 1)


def _daemon(container: state.Container, fd: int, hold_output: bool = False) -> Any:
    """The detached supervisor: a new session, stdio to files, then :func:`supervise`.

    ``fd`` gets ``"0 ok"`` once the container runs, or ``"<code> <message>"``; it is closed
    then, so the starting command sees end-of-file and returns.
    """
    pending = [fd]

    def tell(message: str) -> None:
        if pending:
            with contextlib.suppress(OSError):
                os.write(pending[0], message.encode())
            os.close(pending.pop())

    code = 1
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(container.dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o640)
        for target, fd in ((0, null), (1, log), (2, log)):
            os.dup2(fd, target)
        os.close(null)
        os.close(log)
        os.chdir("/")
        code = supervise(container, attached=False, notify=lambda: tell("0 ok"),
                         hold_output=hold_output)
    except UserError as exc:
        tell(f"{exc.exit_code} {exc}")
        code = exc.exit_code
    except BaseException as exc:
        tell(f"1 supervisor failed: {exc!r}")
    tell(f"{code} the container exited with status {code} while starting")
    os._exit(code)


def discard(container: state.Container) -> None:
    """Forget a container that never ran (bad input found while starting it)."""
    state.delete(container)
    with contextlib.suppress(OSError):
        shutil.rmtree(container.dir)
