"""Starting and stopping servers: mount a union in a server process, and unmount it.

Everything outside the filesystem itself (the CLI's background mode, the container runtime,
the benchmarks, the tests) mounts through :func:`mount`, which starts
``python -m unionfs mount --foreground`` as a separate process and returns once the mount is
live. The server stays a separate process, so whatever happens to the caller (an OOM kill in
a container, a ``kill -9 -1``) the union stays served until it is unmounted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import OperationFailed, UserError
from unionfs.mount.client import request
from unionfs.mount.options import MountOptions, PathLike, escape_layer
from unionfs.mount.records import mount_record


@dataclass
class MountHandle:
    """A live union served by a background process."""

    mountpoint: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount and wait for the server to exit (it is killed if it does not)."""
        if self.process.poll() is None:
            with contextlib.suppress(OperationFailed):
                unmount(self.mountpoint)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            unmount(self.mountpoint, lazy=True, missing_ok=True)

    def __enter__(self) -> MountHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def server_command(
    lowers: Sequence[PathLike], mountpoint: PathLike, upper: PathLike | None,
    options: MountOptions,
) -> list[str]:
    """The argv of a foreground server for this union."""
    lowerspec = ":".join(escape_layer(os.fspath(p)) for p in lowers)
    argv = [sys.executable, "-m", "unionfs", "mount", "--foreground", *options.to_args(), lowerspec]
    if upper is not None:
        argv.append(os.fspath(upper))
    argv.append(os.fspath(mountpoint))
    return argv


def mount(
    lowers: Sequence[PathLike],
    mountpoint: PathLike,
    upper: PathLike | None = None,
    *,
    options: MountOptions | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> MountHandle:
    """Mount ``lowers`` (first has precedence) with optional ``upper`` at ``mountpoint``.

    ``wrapper`` is an argv prefix the server is started through (the container runtime's
    ``nsenter`` into a rootless container's namespaces). Returns once the mount is live.
    Raises :class:`UserError` with the server's one-line
    message if it refuses the input, :class:`OperationFailed` if it dies or times out.
    """
    options = options or MountOptions()
    read_fd, write_fd = os.pipe()
    argv = server_command(lowers, mountpoint, upper, options)
    argv[4:4] = ["--ready-fd", str(write_fd)]
    argv[:0] = wrapper
    proc = subprocess.Popen(
        argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True, env=env,
    )
    os.close(write_fd)
    try:
        ready = _wait_ready(read_fd, proc, timeout)
    except OperationFailed:
        _give_up(proc, mountpoint)
        raise
    finally:
        os.close(read_fd)
    if not ready:
        err = _drain(proc)
        raise (UserError if proc.returncode == 2 else OperationFailed)(
            err or f"unionfs server exited with status {proc.returncode} before mounting"
        )
    # The server keeps stderr for its own log lines; stop reading it here.
    assert proc.stderr is not None
    proc.stderr.close()
    return MountHandle(Path(mountpoint), proc)


def _wait_ready(read_fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the server's one-byte "mounted" message on the pipe."""
    import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([read_fd], [], [], 0.2)
        if r:
            return os.read(read_fd, 1) == b"1"
        if proc.poll() is not None:
            return False
    raise OperationFailed(f"unionfs server did not mount within {timeout:.0f}s")


def _give_up(proc: subprocess.Popen[bytes], mountpoint: PathLike, grace: float = 10.0) -> None:
    """Stop a server that did not report in time; it unmounts what it mounted (if it does
    not exit within ``grace`` seconds it is killed, and its mount, if any, detached)."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    unmount(mountpoint, lazy=True, missing_ok=True)


def _drain(proc: subprocess.Popen[bytes]) -> str:
    """The server's last error line, once it has exited."""
    proc.wait()
    assert proc.stderr is not None
    text = proc.stderr.read().decode(errors="replace").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].removeprefix("unionfs: error: ") if lines else ""


def is_mounted(path: PathLike) -> bool:
    """True when ``path`` is a mount point in this mount namespace."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and unescape_mountinfo(fields[4]) == target:
                return True
    return False


def unescape_mountinfo(field_: str) -> str:
    """A path as /proc/self/mountinfo escapes it, unescaped."""
    return field_.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\"
    )


def unmount(mountpoint: PathLike, *, lazy: bool = False, missing_ok: bool = False) -> None:
    """Unmount a union (``fusermount3 -u``); the server then exits by itself."""
    if not is_mounted(mountpoint):
        if missing_ok:
            return
        raise UserError(f"{os.fspath(mountpoint)} is not mounted")
    argv = ["fusermount3", "-u", *(["-z"] if lazy else []), os.fspath(mountpoint)]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0 and is_mounted(mountpoint):
        msg = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
        raise OperationFailed(f"cannot unmount {os.fspath(mountpoint)}: {msg}")


def mount_info(mountpoint: PathLike) -> dict[str, object] | None:
    """What the union at ``mountpoint`` is made of (lowers, upper, workdir, pid), or None."""
    if not is_mounted(mountpoint):
        return None
    return mount_record(os.fspath(mountpoint))


def switch_upper(mountpoint: PathLike) -> Path:
    """Freeze the upper of a live union and continue it on a fresh, empty upper.

    The kernel's dirty pages are written out first, so everything written before the call is
    in the frozen upper. Returns the frozen directory: the live mount still reads it as its
    top lower layer, so move it (on the same filesystem) rather than delete it.
    """
    info = mount_info(mountpoint)
    if info is None:
        raise UserError(f"{os.fspath(mountpoint)} is not a unionfs mount")
    if not info.get("upper") or info.get("read_only"):
        raise UserError(f"{os.fspath(mountpoint)} has no upper to commit")
    syncfs(mountpoint)
    reply = request(str(info["control"]), {"op": "switch_upper"})
    if not reply.get("ok"):
        raise OperationFailed(f"cannot switch the upper of {os.fspath(mountpoint)}: "
                              f"{reply.get('error')}")
    return Path(str(reply["frozen"]))


def server_stats(mountpoint: PathLike) -> dict[str, Any]:
    """What the server of a live union reports: requests served by type, the extra features
    installed (see unionfs.fuse.lowlevel), and the number of inodes the kernel holds."""
    info = mount_info(mountpoint)
    if info is None:
        raise UserError(f"{os.fspath(mountpoint)} is not a unionfs mount")
    reply = request(str(info["control"]), {"op": "stats"})
    if not reply.get("ok"):
        raise OperationFailed(f"no stats from {os.fspath(mountpoint)}: {reply.get('error')}")
    return reply


def server_metrics(mountpoint: PathLike) -> dict[str, Any]:
    """One sample of the request accounting of a live union (what ``unionfs watch --json``
    prints). The first call attaches the accounting: latencies, bytes and cache counts are
    counted from then on (from the mount with ``-o metrics``), request counts from the mount."""
    return _control(mountpoint, {"op": "metrics"}, "no metrics")


def add_fault_rules(mountpoint: PathLike, rules: Sequence[str]) -> list[dict[str, Any]]:
    """Add fault rules (see unionfs.core.faults) to a live union; returns them with ids.
    A rule that does not parse raises :class:`UserError` and adds nothing."""
    from unionfs.core.faults import RuleError, parse_rules

    try:
        parse_rules(list(rules))
    except RuleError as exc:
        raise UserError(str(exc)) from None
    reply = _control(mountpoint, {"op": "faults", "action": "add", "rules": list(rules)},
                     "cannot add fault rules to")
    return list(reply["added"])


def fault_rules(mountpoint: PathLike) -> dict[str, Any]:
    """The live fault rules of a union, with how often each matched and fired, and how many
    requests wait in a delay now."""
    return _control(mountpoint, {"op": "faults", "action": "list"}, "no fault rules from")


def clear_fault_rules(mountpoint: PathLike, ids: Sequence[int] | None = None) -> int:
    """Remove fault rules (all, or those ``ids``); requests waiting in a delay go on now.
    Returns how many were removed."""
    message: dict[str, Any] = {"op": "faults", "action": "clear"}
    if ids is not None:
        message["ids"] = list(ids)
    return int(_control(mountpoint, message, "cannot clear fault rules of")["removed"])


def _control(mountpoint: PathLike, message: dict[str, Any], failing: str) -> dict[str, Any]:
    info = mount_info(mountpoint)
    if info is None:
        raise UserError(f"{os.fspath(mountpoint)} is not a unionfs mount")
    reply = request(str(info["control"]), message)
    if not reply.get("ok"):
        raise OperationFailed(f"{failing} {os.fspath(mountpoint)}: {reply.get('error')}")
    return reply


def syncfs(path: PathLike) -> None:
    """syncfs(2) on the filesystem of ``path``: for a FUSE mount, flushes the kernel's cache."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)
