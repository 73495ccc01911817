"""Serving a union: mount, report that the mount is live, answer requests, unmount.

:func:`run_server` is what ``unionfs mount --foreground`` runs (through
:mod:`unionfs.mount.server`, which turns the checked mount spec into a :class:`ServerConfig`
and an engine). Once the kernel mount exists,
every way out of it unmounts first: a failure while installing the libfuse extensions,
writing the mount record or telling the starter that the mount is live; SIGTERM, SIGINT and
SIGHUP at any moment (a copy-up in progress is abandoned and its work file removed);
``fusermount3 -u`` from outside.

``UNIONFS_TEST_FAIL_AT`` (tests only) makes one of the steps after the kernel mount fail:
``extensions``, ``record`` or ``ready``; ``hang`` waits for a signal instead of reporting in.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from unionfs.engine.union import Union
from unionfs.errors import OperationFailed
from unionfs.fuse import lowlevel, readahead, watch
from unionfs.fuse.control import Handler, serve_control
from unionfs.fuse.ops import FIRST_PLUS, Timeouts, UnionOperations
from unionfs.fuse.reads import ReadSource
from unionfs.fuse.writes import WriteSource

log = logging.getLogger(__name__)

WORKERS = 8  # pyfuse3's worker tasks when its own request loop is used
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# A worker thread back from its pwrite or lstat, or the trio thread back from a read of the
# FUSE device, waits for the GIL up to this long while another thread runs Python code:
# with the default, every 1 MiB WRITE of a big write waited up to 5 ms for it in its worker
# thread, and a probe's LOOKUP behind them (benchmarks/README.md, issue 11's latency rows).
SWITCH_INTERVAL = 0.0005
FAIL_AT_ENV = "UNIONFS_TEST_FAIL_AT"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived before the request loop ran."""


def _nothing(*args: object) -> None:
    pass


@dataclass
class ServerConfig:
    """How to serve a union: what the mount API's checked spec says, in the adapter's terms.

    ``record`` is called once the kernel mount exists (it writes the mount record and
    returns its path, removed at unmount); ``switched`` after a live commit, with the frozen
    upper that is now the top lower layer."""

    mountpoint: str
    control_path: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    allow_other: bool = False
    read_only: bool = False
    extensions: bool = True  # the libfuse extensions of unionfs.fuse.lowlevel
    poll_us: int = 50
    trace: str | None = None
    fail: list[str] = field(default_factory=list)
    metrics: bool = False
    describe: str = ""  # the layers, for the log line "mounted ..."
    record: Callable[[], object] = _nothing
    switched: Callable[[str], None] = _nothing


def fuse_options(config: ServerConfig) -> set[str]:
    """The mount options passed to libfuse."""
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks access
    opts |= {"fsname=unionfs", "subtype=unionfs"}
    if config.allow_other:
        opts.add("allow_other")
    if config.read_only:
        opts.add("ro")
    return opts


def run_server(config: ServerConfig, union: Union, ready_fd: int | None = None) -> int:
    """Mount ``union`` and serve it until unmounted or signalled; returns an exit status."""
    os.umask(0)  # modes asked for by callers are applied exactly
    _quiet_abandoned_replies()
    ops = UnionOperations(union, config.timeouts)
    watch.install(ops, trace=config.trace, fail=config.fail, metrics=config.metrics,
                  mountpoint=config.mountpoint)
    record = None
    with _stop_signals_raise():
        try:
            pyfuse3.init(ops, config.mountpoint, fuse_options(config))
        except RuntimeError as exc:  # libfuse says only "fuse_session_mount failed"
            union.close()
            raise OperationFailed(f"cannot mount {config.mountpoint}: {exc}") from None
        try:
            # From here the kernel mount exists: whatever happens, unmount before exiting.
            # Before the INIT reply, which can only narrow it: 1 MiB reads, several at once.
            readahead.widen(config.mountpoint)
            extensions = _install_extensions(config, ops)
            _fail_for_test("record")
            record = config.record()
            log.info("mounted %s (%s)%s", config.mountpoint, config.describe,
                     "" if extensions else " without the libfuse extensions")
            if ready_fd is not None:
                _tell_ready(ready_fd)
            workers = extensions.workers if extensions else WORKERS
            control = _control_handler(config, ops, extensions)
            sys.setswitchinterval(SWITCH_INTERVAL)
            try:
                trio.run(_serve, config.control_path, control, workers, ops)
            finally:
                if extensions is not None:
                    extensions.close()
        except Stopped:
            log.info("signalled while starting: unmounting")
        finally:
            _shut_down(config, union, record)
    return 0


class _AbandonedReplyFilter(logging.Filter):
    """Logs pyfuse3's "fuse_reply_* failed with ENOENT" as INFO, not ERROR.

    The kernel answers a reply with ENOENT when it no longer waits for it: the request was
    interrupted, or (for a release sent while unmounting) the connection is already going.
    Nothing failed on our side, so it is no error for the operator or the test fixtures.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and _ABANDONED in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_ABANDONED = "fuse_reply_* failed with " + os.strerror(errno.ENOENT)


def _quiet_abandoned_replies() -> None:
    logger = logging.getLogger("pyfuse3")
    if not any(isinstance(f, _AbandonedReplyFilter) for f in logger.filters):
        logger.addFilter(_AbandonedReplyFilter())


def _install_extensions(config: ServerConfig, ops: UnionOperations
                        ) -> lowlevel.Installed | None:
    _fail_for_test("extensions")
    if not config.extensions:
        log.info("libfuse extensions off (-o no_extensions)")
        return None
    # Kept referenced while serving: libfuse calls into it.
    extensions = lowlevel.install(ops.fallocate, poll_us=config.poll_us,
                                  readdir_names=ops.readdir_names,
                                  max_readahead=readahead.READ_AHEAD_KB << 10,
                                  xattr_absent=ops.xattr_known_absent,
                                  lseek=ops.lseek,
                                  reads=ReadSource(ops.read_fd, ops.slow.read_wait,
                                                   functools.partial(ops.slow.hold, "read")),
                                  writes=WriteSource(ops.write_route, ops.write_at,
                                                     functools.partial(ops.slow.hold, "write")))
    if extensions is not None:
        ops.slow.before_wait = extensions.hand_off
        if "readdir_names" in extensions.features:
            ops.first_plus = FIRST_PLUS
    return extensions


def _tell_ready(ready_fd: int) -> None:
    """Tell the starter the mount is live (it may have given up: EPIPE, then we unmount)."""
    try:
        _fail_for_test("ready")
        while os.environ.get(FAIL_AT_ENV) == "hang":  # until a stop signal raises Stopped
            signal.pause()
        os.write(ready_fd, b"1")
    finally:
        os.close(ready_fd)
    _detach_stderr()


def _shut_down(config: ServerConfig, union: Union, record: object) -> None:
    for signum in _STOP_SIGNALS:  # the cleanup itself must not be interrupted
        signal.signal(signum, signal.SIG_IGN)
    try:
        pyfuse3.close(unmount=True)
    except Exception:
        log.exception("unmounting %s failed", config.mountpoint)
    union.close()
    if record is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(record))
    log.info("unmounted %s", config.mountpoint)


def _fail_for_test(step: str) -> None:
    if os.environ.get(FAIL_AT_ENV) == step:
        raise OperationFailed(f"failing at {step} ({FAIL_AT_ENV}, tests only)")


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Until the request loop takes them over, a stop signal raises :class:`Stopped`."""
    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _control_handler(config: ServerConfig, ops: UnionOperations,
                     extensions: lowlevel.Installed | None) -> Handler:
    union = ops.union

    async def control(request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stats":
            features = list(extensions.features) if extensions else []
            return {"ok": True, "requests": dict(ops.requests), "features": features,
                    "nodes": len(union.table.nodes), "open_files": len(ops.files),
                    "open_dirs": len(ops.dirs), "fds": _count_fds(),
                    "cached_dir_fds": sum(layer.cached_fds for layer in union.layers),
                    "threads": threading.active_count(), "slow_in_flight": ops.slow.in_flight,
                    "switch_interval": sys.getswitchinterval(),
                    "entry_locks": len(ops.slow.entries),
                    "gate": {"sharers": ops.slow.gate.sharers,
                             "switch_pending": ops.slow.gate.switch_pending},
                    "read_ahead": {"read": union.counters.views_read_ahead,
                                   "used": union.counters.views_from_read_ahead}}
        if op in watch.CONTROL_OPS:  # metrics, faults
            return watch.control(ops, request)
        if op == "switch_upper":
            frozen = await ops.switch_upper_exclusively()
            config.switched(frozen)
            return {"ok": True, "frozen": frozen}
        return {"ok": False, "error": f"unknown request {op!r}"}

    return control


def _count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _detach_stderr() -> None:
    """The starter stops reading our stderr once we are mounted: point it at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


async def _serve(control_path: str, control: Handler, workers: int,
                 ops: UnionOperations) -> None:
    ops.call_soon = trio.lowlevel.current_trio_token().run_sync_soon
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, ops)
        await nursery.start(serve_control, control_path, control)
        await pyfuse3.main(min_tasks=1, max_tasks=workers)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(ops: UnionOperations) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            ops.slow.stop()  # copies in progress are abandoned (their work files removed)
            pyfuse3.terminate()
            return
