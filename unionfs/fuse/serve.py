"""Serving a union: mount, report that the mount is live, answer requests, unmount.

:func:`run_server` is what ``unionfs mount --foreground`` runs. SIGTERM, SIGINT and SIGHUP
unmount cleanly; so does ``fusermount3 -u`` from outside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

import pyfuse3
import trio

from unionfs import state
from unionfs.engine.union import StackConfig, Union
from unionfs.errors import OperationFailed
from unionfs.fuse import lowlevel
from unionfs.fuse.control import Handler, serve_control
from unionfs.fuse.ops import Timeouts, UnionOperations
from unionfs.mountspec import MountSpec

log = logging.getLogger(__name__)

WORKERS = 8  # pyfuse3's worker tasks when its own request loop is used


def fuse_options(spec: MountSpec) -> set[str]:
    """The mount options passed to libfuse."""
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks access
    opts |= {"fsname=unionfs", "subtype=unionfs"}
    if spec.allow_other:
        opts.add("allow_other")
    if spec.read_only:
        opts.add("ro")
    return opts


def open_union(spec: MountSpec) -> Union:
    """The engine for a checked spec; leftovers of interrupted copy-ups are removed."""
    config = StackConfig(
        lowers=spec.lowers,
        upper=spec.upper if spec.writable else None,
        workdir=spec.workdir,
        xattr_ns=spec.xattr_ns,
        sync=not spec.volatile,
        redirect_dir=spec.redirect_dir,
    )
    if spec.upper is not None and spec.read_only:
        config.lowers = [spec.upper, *spec.lowers]
    union = Union(config)
    if union.work is not None:
        leftovers = union.work.clean()
        if leftovers:
            log.warning("removed %d leftover(s) of interrupted copy-ups in %s", leftovers,
                        union.work.tmp_path)
    return union


def run_server(spec: MountSpec, ready_fd: int | None = None) -> int:
    """Mount ``spec`` and serve it until unmounted or signalled; returns an exit status."""
    os.umask(0)  # modes asked for by callers are applied exactly
    union = open_union(spec)
    ops = UnionOperations(union, Timeouts(spec.entry_timeout, spec.attr_timeout,
                                          spec.negative_timeout))
    try:
        pyfuse3.init(ops, spec.mountpoint, fuse_options(spec))
    except RuntimeError as exc:  # libfuse says only "fuse_session_mount failed"
        union.close()
        raise OperationFailed(f"cannot mount {spec.mountpoint}: {exc}") from None
    # Kept referenced while serving: libfuse calls into it.
    extensions = lowlevel.install(ops.fallocate, poll_us=spec.poll_us)
    record = state.record_mount(spec, os.getpid())
    log.info("mounted %s (lowers %s, upper %s)%s", spec.mountpoint, ":".join(spec.lowers),
             spec.upper or "none", "" if extensions else " without fallocate and dir caching")
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        _detach_stderr()
    def control(request: dict[str, object]) -> dict[str, object]:
        if request.get("op") == "ping":
            return {"ok": True, "pid": os.getpid()}
        if request.get("op") == "stats":
            features = list(extensions.features) if extensions else []
            return {"ok": True, "requests": dict(ops.requests), "features": features,
                    "nodes": len(union.table.nodes)}
        if request.get("op") == "switch_upper":
            frozen = ops.switch_upper()
            spec.lowers.insert(0, frozen)
            state.record_mount(spec, os.getpid())
            return {"ok": True, "frozen": frozen}
        return {"ok": False, "error": f"unknown request {request.get('op')!r}"}

    try:
        trio.run(_serve, str(state.control_path(spec.mountpoint)), control,
                 extensions.workers if extensions else WORKERS)
    finally:
        with contextlib.suppress(Exception):
            pyfuse3.close(unmount=True)
        union.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record)
        log.info("unmounted %s", spec.mountpoint)
    return 0


def _detach_stderr() -> None:
    """The starter stops reading our stderr once we are mounted: point it at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


async def _serve(control_path: str, control: Handler, workers: int) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        await nursery.start(serve_control, control_path, control)
        await pyfuse3.main(min_tasks=1, max_tasks=workers)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return

