"""Operations on existing containers: stop, start, restart, remove, top, stats, logs."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

from unionfs.errors import UserError
from unionfs.runtime import cgroups, network, pause, state, supervisor
from unionfs.runtime.imageconfig import stop_signal
from unionfs.runtime.rootfs import cleanup_stale, end_server

SUPERVISOR_GRACE = 30.0


def stop(container: state.Container, timeout: float = 10.0) -> None:
    """The image's StopSignal (SIGTERM) to PID 1, SIGKILL after ``timeout``; returns once
    cleanup is done."""
    st = container.state()
    if container.running():
        pid, start = st["pid"], st.get("pid_start")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, stop_signal(container.spec))
        pause.thaw_if_paused(container)  # a paused container gets the signal once thawed
        if not state.wait_gone(pid, start, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            state.wait_gone(pid, start, SUPERVISOR_GRACE)
    wait_supervisor(container)


def wait_supervisor(container: state.Container) -> None:
    """Wait for the supervisor to finish its cleanup; clean up after it if it died.

    After a killed supervisor: the container's processes (its cgroup, or PID 1), the unionfs
    server (ended deliberately: its mount may live only in its own mount namespace), the
    mount and the cgroup.
    """
    st = container.state()
    state.wait_gone(st.get("supervisor"), st.get("supervisor_start"), SUPERVISOR_GRACE)
    if not container.dir.exists():
        return
    cg = cgroups.load(st["cgroup"]) if st.get("cgroup") else None
    if cg is not None:
        with contextlib.suppress(OSError):
            cg.kill_all()
    if state.pid_alive(st.get("pid"), st.get("pid_start")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(st["pid"], signal.SIGKILL)
        state.wait_gone(st["pid"], st.get("pid_start"), SUPERVISOR_GRACE)
    end_server(st.get("server"), st.get("server_start"), container.rootfs)
    _stop_leftover(st.get("pasta"))
    cleanup_stale(container.rootfs)
    if cg is not None:
        with contextlib.suppress(OSError):
            cg.remove()


def _stop_leftover(recorded: list[int | None] | None) -> None:
    """End a process a killed supervisor left (the server, pasta): the same process only."""
    if recorded and state.pid_alive(recorded[0], recorded[1]):
        network.stop_pid(recorded[0])


def start(container: state.Container) -> None:
    """Start a stopped container again, detached, on the same upper."""
    if container.broken:
        raise UserError(f"cannot start container {container.id[:12]}: {container.broken}")
    if pause.is_paused(container):
        raise UserError("cannot start a paused container, try unpause instead")
    if container.running():
        return
    wait_supervisor(container)
    supervisor.run_detached(container)


def remove(container: state.Container, force: bool = False) -> None:
    """Delete the container and its upper; a running one only with ``force`` (SIGKILL)."""
    if container.running():
        if not force:
            raise UserError(f"cannot remove running container {container.name}: stop it "
                            "first or use rm -f")
        st = container.state()
        with contextlib.suppress(ProcessLookupError):
            os.kill(st["pid"], signal.SIGKILL)
        pause.thaw_if_paused(container)
        state.wait_gone(st["pid"], st.get("pid_start"), SUPERVISOR_GRACE)
    wait_supervisor(container)
    state.delete(container)


@dataclass
class Proc:
    """One process of a container, as ``top`` lists it."""

    uid: int
    pid: int
    ppid: int
    cmd: str


def processes(container: state.Container) -> list[Proc]:
    """The container's processes: those in the pid namespace of its PID 1."""
    if not container.running():
        raise UserError(f"container {container.name} is not running")
    pid1 = container.state()["pid"]
    target = os.stat(f"/proc/{pid1}/ns/pid").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != target:
                continue
            found.append(_proc(int(entry)))
        except OSError:
            continue
    return sorted(found, key=lambda p: p.pid)


def _proc(pid: int) -> Proc:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    uid = os.stat(f"/proc/{pid}").st_uid
    return Proc(uid, pid, ppid, cmd or stat[stat.index("(") + 1:stat.rindex(")")])


def stats(container: state.Container) -> cgroups.Stats:
    """Memory, cpu and pids from the container's cgroup."""
    st = container.state()
    if not container.running():
        raise UserError(f"container {container.name} is not running")
    if not st.get("cgroup"):
        raise UserError(f"container {container.name} runs without a cgroup (rootless, not "
                        "delegated): no stats")
    return cgroups.load(st["cgroup"]).stats()


def logs(container: state.Container, *, follow: bool = False, tail: int | None = None,
         since: str | None = None, timestamps: bool = False) -> None:
    """Write the container's logged output back to stdout and stderr (see runtime.logs)."""
    from unionfs.runtime import logs as logfile

    when = logfile.parse_since(since) if since else None
    logfile.show(container.log_path, tail=tail, since=when, timestamps=timestamps,
                 follow=follow, running=container.running)


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL`` or ``9`` as a signal number."""
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        with contextlib.suppress(AttributeError):
            return int(getattr(signal.Signals, name))
    raise UserError(f"invalid signal: {text}")


def kill(container: state.Container, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to the container's PID 1."""
    if not container.running():
        raise UserError(f"cannot kill container {container.name}: it is not running")
    st = container.state()
    if state.pid_alive(st["pid"], st.get("pid_start")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(st["pid"], signum)
        pause.thaw_if_paused(container)  # as docker's kill: delivered once thawed


def wait(container: state.Container) -> int:
    """Block until the container has stopped (and been cleaned up); its exit code."""
    st = container.state()
    while container.running():
        state.wait_gone(st.get("pid"), st.get("pid_start"), 3600)
    state.wait_gone(st.get("supervisor"), st.get("supervisor_start"), SUPERVISOR_GRACE)
    code = container.state().get("exit_code")
    return int(code) if code is not None else 0


def rename(store: object, container: state.Container, new_name: str) -> None:
    """Give the container another (unused) name."""
    from unionfs.runtime.spec import check_name

    check_name(new_name)
    with state.store_lock(store):
        if any(c.name == new_name for c in state.all_containers(store)):
            raise UserError(f'Conflict. The container name "/{new_name}" is already in use')
        container.config["name"] = new_name
        container.config["spec"]["name"] = new_name
        state.write_config(container)
