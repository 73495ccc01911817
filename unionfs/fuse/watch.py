"""Watching requests: fault rules, the trace and the accounting behind ``unionfs watch``.

The request wrapper (``ops._errors``) hands a request to :meth:`Watch.around` only while
something watches (``ops.watch`` is not None); otherwise watching costs one attribute check.
:meth:`Watch.around` applies the fault rules first, before the handler runs, so an injected
failure never leaves the union half-changed, then serves the request, then accounts for it.
A node's path is only named when the trace or a fault rule with ``path=`` needs it, or when a
request enters the list of the slowest.

The control socket reaches this module through :func:`control` (ops ``metrics`` and
``faults``). The accounting attaches at the first ``metrics`` request (or at the mount with
``-o metrics``) and detaches itself after :data:`IDLE_SECONDS` without one.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from unionfs.core.faults import REQUESTS, Rule, RuleError, RuleState, parse_rules
from unionfs.engine.nodes import Node
from unionfs.fuse.metrics import Metrics
from unionfs.fuse.ops import errno_of
from unionfs.fuse.trace import TraceWriter

if TYPE_CHECKING:
    from unionfs.fuse.ops import UnionOperations

log = logging.getLogger(__name__)

IDLE_SECONDS = 600.0  # the accounting detaches after this long without a `metrics` request
IDLE_CHECK_EVERY = 4096  # requests between two looks at the clock for that
CONTROL_OPS = frozenset({"metrics", "faults"})

# Which argument names the request's node: (parent inode, name), an open file, an open dir.
ENTRY_REQUESTS = frozenset({"lookup", "create", "mkdir", "mknod", "symlink", "unlink",
                            "rmdir", "rename"})
FILE_REQUESTS = frozenset({"read", "write", "fsync", "release"})
NEW_NODE_REQUESTS = frozenset({"lookup", "mkdir", "mknod", "symlink", "link"})
UNLINKED = b"<unlinked>"

Target = tuple[Node | None, bytes | None]  # the node a request names, and a child's name


def _nothing() -> None:
    pass


class Faults:
    """The live fault rules of a mount."""

    def __init__(self) -> None:
        self.rules: list[RuleState] = []
        self.by_request: dict[str, list[RuleState]] = {}  # the rules that can match each
        self.next_id = 1
        self.written = 0  # bytes written through the mount while rules were live
        self.delayed = 0  # requests waiting in a delay now
        self.cleared = trio.Event()  # set at clear: wakes the delayed requests

    def add(self, rules: list[Rule]) -> list[RuleState]:
        added = []
        for rule in rules:
            state = RuleState(rule, self.next_id, self.written)
            self.next_id += 1
            self.rules.append(state)
            added.append(state)
            log.warning("fault rule %d added: %s", state.ident, rule.text)
        self._index()
        return added

    def _index(self) -> None:
        self.by_request = {}
        for state in self.rules:
            names = REQUESTS if state.rule.request == "*" else (state.rule.request,)
            for name in names:
                self.by_request.setdefault(name, []).append(state)

    def clear(self, idents: list[int] | None = None) -> int:
        """Remove the rules ``idents`` (all when None); requests in a delay go on now."""
        keep = [] if idents is None else [s for s in self.rules if s.ident not in idents]
        removed = len(self.rules) - len(keep)
        self.rules = keep
        self._index()
        self.cleared.set()
        self.cleared = trio.Event()
        log.warning("fault rules cleared (%d removed, %d left)", removed, len(keep))
        return removed

    def fire(self, rules: list[RuleState], request: str, size: int,
             path: str | None) -> list[RuleState]:
        """Those of ``rules`` that fire on this request (each injection is logged)."""
        fired = [s for s in rules if s.fires(request, path, self.written, size)]
        for state in fired:
            rule = state.rule
            log.warning("fault injected: %s /%s: %s (rule %d: %s)", request, path or "",
                        rule.errno_name or f"delay {rule.delay:g}s", state.ident, rule.text)
        return fired

    async def inject(self, fired: list[RuleState], before_wait: Callable[[], None]) -> None:
        """Wait the delays of the rules that fired, then raise the first errno."""
        delay = sum(s.rule.delay for s in fired)
        if delay:
            await self._delay(delay, before_wait)
        for state in fired:
            if state.rule.errno is not None:
                raise pyfuse3.FUSEError(state.rule.errno)

    async def _delay(self, seconds: float, before_wait: Callable[[], None]) -> None:
        self.delayed += 1
        try:
            before_wait()
            with trio.move_on_after(seconds):
                await self.cleared.wait()
        finally:
            self.delayed -= 1

    def describe(self) -> dict[str, Any]:
        return {"ok": True, "rules": [s.describe() for s in self.rules],
                "delayed": self.delayed, "written": self.written}


class Watch:
    """What watches the requests of one mount (any of the three parts may be None)."""

    def __init__(self, ops: UnionOperations) -> None:
        self.ops = ops
        self.metrics: Metrics | None = None
        self.trace: TraceWriter | None = None
        self.faults: Faults | None = None
        self.served = 0
        # Called before a request waits in a delay, so that the request loop hands reading on
        # to another task (read lazily: serve.py installs the hand-off after this is made).
        self.before_wait: Callable[[], None] = lambda: ops.slow.before_wait()

    async def around(self, name: str, func: Callable[..., Coroutine[Any, Any, Any]],
                     args: tuple[Any, ...]) -> Any:
        """Serve one request: fault rules, the handler, then the accounting and the trace."""
        ops = self.ops
        start = time.perf_counter_ns()
        views = ops.union.counters.views_built
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight += 1
        target: Target = (None, None)
        fired: list[RuleState] = []
        code = 0
        result: Any = None
        try:
            faults = self.faults
            rules = faults.by_request.get(name) if faults is not None else None
            if self.trace is not None or rules:
                target = self.target(name, args)
            if rules:
                assert faults is not None
                size = len(args[3]) if name == "write" else 0
                path = os.fsdecode(self.path_of(target) or b"")
                fired = faults.fire(rules, name, size, path)
                if fired:
                    await faults.inject(fired, self.before_wait)
            result = await func(*args)
            return result
        except pyfuse3.FUSEError as exc:
            code = exc.errno
            raise
        except Exception as exc:
            code = errno_of(exc, name, args[1:3])
            raise pyfuse3.FUSEError(code) from None
        except BaseException:  # cancelled: the caller gets EINTR
            code = errno.EINTR
            raise
        finally:
            end = time.perf_counter_ns()
            if metrics is not None:
                metrics.in_flight -= 1
            try:
                self.account(name, args, target, result, code, end - start, end, views, fired)
            except Exception:  # watching must never change what the caller gets
                log.exception("accounting for %s failed", name)

    def account(self, name: str, args: tuple[Any, ...], target: Target, result: Any,
                code: int, ns: int, end: int, views: int, fired: list[RuleState]) -> None:
        written = result if name == "write" and not code else 0  # what pwrite wrote
        if written and self.faults is not None:
            self.faults.written += written
        metrics = self.metrics
        if metrics is not None:
            self._count(metrics, name, args, result, code, ns, end, views, written)
        if self.trace is not None:
            node, _ = target
            detail = self._detail(name, args, result, code, fired)
            if name == "lookup" and not code and result.st_ino == 0:
                code = errno.ENOENT  # a negative entry: what the caller gets
            self.trace.add((time.time_ns(), name, None if node is None else node.id,
                            self.path_of(target), ns, code, detail))

    def _count(self, metrics: Metrics, name: str, args: tuple[Any, ...], result: Any,
               code: int, ns: int, end: int, views: int, written: int) -> None:
        metrics.stats_of(name).add(ns, code != 0)
        if written:
            metrics.bytes_written += written
        elif name == "read" and not code:
            metrics.bytes_read += len(result)
        elif name == "lookup":
            metrics.lookups += 1
            if views == self.ops.union.counters.views_built:
                metrics.lookups_from_view += 1
            if not code and result.st_ino == 0:
                metrics.negative += 1
        elif name == "readdir":
            metrics.readdirs += 1
            if views == self.ops.union.counters.views_built:
                metrics.readdirs_from_view += 1
        slowest = metrics.slowest
        if slowest.wants(ns, end):
            slowest.keep(name, ns, code, self.name_of(self.target(name, args)))
        self.served += 1
        if self.served % IDLE_CHECK_EVERY == 0 and not metrics.pinned and \
                time.monotonic() - metrics.last_asked > IDLE_SECONDS:
            log.info("no `unionfs watch` for %.0fs: request accounting detached", IDLE_SECONDS)
            self.metrics = None
            self.settle()

    # ---- naming what a request is about --------------------------------------------------

    def target(self, name: str, args: tuple[Any, ...]) -> Target:
        """The node a request names (and the child's name for entry requests)."""
        ops = self.ops
        if name == "statfs":
            return None, None
        if name in FILE_REQUESTS:
            handle = ops.files.get(args[1])
            return (None if handle is None else handle.node), None
        if name == "readdir":
            dir_handle = ops.dirs.get(args[1])
            return (None if dir_handle is None else dir_handle.node), None
        node = ops.union.table.get(args[1])
        return node, (args[2] if name in ENTRY_REQUESTS else None)

    def path_of(self, target: Target) -> bytes | None:
        """The path below the mount's root of a target (``<unlinked>`` for an orphan)."""
        node, child = target
        if node is None:
            return None
        if node.parent is None and node is not self.ops.union.root:
            return UNLINKED
        path = node.path()
        if child is None:
            return path
        return path + b"/" + child if path else child

    def name_of(self, target: Target) -> str:
        """``0x1 /d/name``: the node and its path, for people."""
        node = target[0]
        if node is None:
            return "-"
        return f"{node.id:#x} /{os.fsdecode(self.path_of(target) or b'')}"

    def _detail(self, name: str, args: tuple[Any, ...], result: Any, code: int,
                fired: list[RuleState]) -> str:
        parts = []
        if not code:
            if name in NEW_NODE_REQUESTS:
                parts.append("negative" if result.st_ino == 0 else f"-> {result.st_ino:#x}")
            elif name == "create":
                parts.append(f"-> {result[1].st_ino:#x}")
            elif name == "read":
                parts.append(f"off={args[2]} bytes={len(result)}")
            elif name == "open":
                parts.append(f"fh={result.fh}")
        if name == "write":
            parts.append(f"off={args[2]} bytes={len(args[3])}")
        elif name == "rename":
            to = self.path_of((self.ops.union.table.get(args[3]), args[4]))
            parts.append(f"to=/{os.fsdecode(to or b'')}")
        parts += [f"injected={state.rule.text}" for state in fired]
        return " ".join(parts)

    # ---- attaching and detaching ---------------------------------------------------------

    def settle(self) -> None:
        """Unhook from the requests when nothing watches any more."""
        if self.metrics is None and self.trace is None and self.faults is None:
            self.ops.watch = None


def watch_of(ops: UnionOperations) -> Watch:
    """The mount's watch, hooked into the requests."""
    if ops.watch is None:
        ops.watch = Watch(ops)
    return ops.watch


def install(ops: UnionOperations, *, trace: str | None, fail: list[str], metrics: bool,
            mountpoint: str) -> None:
    """At server start: ``-o trace=FILE``, ``-o fail=RULES``, ``-o metrics``."""
    if not (trace or fail or metrics):
        return
    watch = watch_of(ops)
    if metrics:
        watch.metrics = Metrics(ops.union.counters, pinned=True)
    if trace:
        watch.trace = TraceWriter(trace, mountpoint)
    if fail:
        watch.faults = Faults()
        watch.faults.add(parse_rules(fail))


def close(ops: UnionOperations) -> None:
    """At server end: the trace's last lines reach its file."""
    if ops.watch is not None and ops.watch.trace is not None:
        ops.watch.trace.close()


def control(ops: UnionOperations, request: dict[str, Any]) -> dict[str, Any]:
    """The control socket's ``metrics`` and ``faults`` requests."""
    if request.get("op") == "metrics":
        watch = watch_of(ops)
        if watch.metrics is None:
            watch.metrics = Metrics(ops.union.counters)
            log.info("request accounting attached (unionfs watch)")
        return {"ok": True, **watch.metrics.snapshot(dict(ops.requests))}
    return _faults_request(ops, request)


def _faults_request(ops: UnionOperations, request: dict[str, Any]) -> dict[str, Any]:
    action = request.get("action")
    watch = ops.watch
    faults = watch.faults if watch is not None else None
    if action == "add":
        try:
            rules = parse_rules([str(r) for r in request.get("rules") or []])
        except RuleError as exc:
            return {"ok": False, "error": str(exc)}
        watch = watch_of(ops)
        if watch.faults is None:
            watch.faults = Faults()
        added = watch.faults.add(rules)
        return {"ok": True, "added": [s.describe() for s in added]}
    if action == "list":
        return faults.describe() if faults is not None else {"ok": True, "rules": [],
                                                              "delayed": 0, "written": 0}
    if action == "clear":
        idents = request.get("ids")
        removed = 0
        if faults is not None and watch is not None:
            removed = faults.clear(None if idents is None else [int(i) for i in idents])
            if not faults.rules:
                watch.faults = None
                watch.settle()
        return {"ok": True, "removed": removed}
    return {"ok": False, "error": f"unknown faults action {action!r} (add, list, clear)"}
