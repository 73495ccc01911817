"""The server's entry point: a checked :class:`MountSpec` becomes an engine and a
:class:`~unionfs.fuse.serve.ServerConfig`, and is served (``unionfs mount --foreground``)."""

from __future__ import annotations

import logging
import os

from unionfs.engine.union import StackConfig, Union
from unionfs.fuse.ops import Timeouts
from unionfs.fuse.serve import ServerConfig, run_server
from unionfs.mount import records
from unionfs.mount.spec import MountSpec

log = logging.getLogger(__name__)


def serve(spec: MountSpec, ready_fd: int | None = None) -> int:
    """Mount ``spec`` and serve it until unmounted or signalled; returns an exit status."""
    os.umask(0)  # before the engine makes anything: modes asked for are applied exactly
    return run_server(server_config(spec), open_union(spec), ready_fd)


def server_config(spec: MountSpec) -> ServerConfig:
    """What the adapter needs of ``spec``; the mount record is written and kept by it."""

    def record() -> object:
        return records.record_mount(spec, os.getpid())

    def switched(frozen: str) -> None:
        spec.lowers.insert(0, frozen)
        records.record_mount(spec, os.getpid())

    return ServerConfig(
        mountpoint=spec.mountpoint, control_path=str(records.control_path(spec.mountpoint)),
        timeouts=Timeouts(spec.entry_timeout, spec.attr_timeout, spec.negative_timeout),
        allow_other=spec.allow_other, read_only=spec.read_only, extensions=spec.extensions,
        poll_us=spec.poll_us, trace=spec.trace_path, fail=list(spec.fail),
        metrics=spec.metrics,
        describe=f"lowers {':'.join(spec.lowers)}, upper {spec.upper or 'none'}",
        record=record, switched=switched)


def open_union(spec: MountSpec) -> Union:
    """The engine for a checked spec; leftovers of interrupted copy-ups are removed."""
    config = StackConfig(
        lowers=spec.lowers,
        upper=spec.upper if spec.writable else None,
        workdir=spec.work_path,
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
