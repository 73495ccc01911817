"""Read-ahead of directories: the merged views a walk of a tree asks for next.

A walk (find, ls -R, du, a build tool scanning its sources) lists a directory, then looks up
and lists its subdirectories one by one, in the listing's order. Cold, each of those waits for
the disk (the subdirectory's inode, then its entries, in every layer it is in), one after
another. When a listing of a directory starts, its subdirectories whose views are not built
are read here, in worker threads of their own (:data:`LANES` at once, so the disk serves
several reads at a time), in listing order; a lookup of one of them takes the layers read
(or waits for them while they are being read) instead of reading them itself
(:meth:`SlowWork.child_view`).

Bounded: at most :data:`AHEAD` subdirectories per listing, :data:`KEPT` read-ahead entries in
all (the oldest dropped first). An entry lives in ``Union.read_ahead`` under the parent's node
and the name; whatever builds that directory's view first drops it (``Union.install_view``),
so a result that comes back later is thrown away, and a lookup uses one only while the parent's
entry, its layers and its path are still those it was read for (``SlowWork.install_child``).
The lower layers never change, and a change of the upper inside the directory builds its
view first: what was read is what a read now would give.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import trio

from unionfs.core.merge import Entry, LayerListing
from unionfs.engine.nodes import Node
from unionfs.engine.union import Union

log = logging.getLogger(__name__)

AHEAD = 256  # subdirectories read ahead per listing, at most
KEPT = 1024  # read-ahead entries kept in all (pending or read)
LANES = 2  # worker threads reading ahead at once (for one listing)


@dataclass(slots=True)
class ChildView:
    """The layers of directory ``path`` read for a lookup, with what they were read for: the
    parent's entry and its layers then."""

    entry: Entry
    path: bytes
    candidates: tuple[int, ...]
    listings: list[tuple[int, LayerListing]]
    lower_paths: dict[int, bytes]
    read_ahead: bool = False  # read by a read-ahead lane (not by the lookup itself)


@dataclass(slots=True)
class Pending:
    """A subdirectory to be read ahead; ``view`` once read (None: not readable)."""

    probe: Node  # a transient node, only for its paths in the layers
    entry: Entry
    path: bytes
    candidates: tuple[int, ...]
    done: trio.Event = field(default_factory=trio.Event)
    view: ChildView | None = None
    claimed: bool = False  # a lane has taken it (or a lookup reads it itself)


class ReadAhead:
    """Schedules and hands out directories read ahead, for one :class:`Union`."""

    def __init__(self, union: Union, stopping: threading.Event) -> None:
        self.union = union
        self.stopping = stopping
        self.limiter = trio.CapacityLimiter(LANES)

    def start(self, parent: Node) -> None:
        """A listing of ``parent`` starts (its view is built): read its subdirectories."""
        union = self.union
        merged = parent.merged
        if merged is None or union.has_redirects or self.stopping.is_set():
            return
        kept = union.read_ahead
        todo: list[tuple[tuple[int, bytes], Pending]] = []
        for name, entry in merged.items():
            if not entry.is_dir:
                continue
            key = (parent.id, name)
            known = parent.children.get(name)
            if key in kept or (known is not None and known.merged is not None):
                continue
            probe = Node(0, parent, name, True)
            pending = Pending(probe, entry, probe.path(), entry.dir_layers)
            todo.append((key, pending))
            if len(todo) == AHEAD:
                break
        if not todo:
            return
        for key, pending in todo:
            kept[key] = pending
        while len(kept) > KEPT:
            del kept[next(iter(kept))]
        token = trio.lowlevel.current_trio_token()
        for lane in range(min(LANES, len(todo))):
            trio.lowlevel.spawn_system_task(self._lane, todo[lane::LANES], token,
                                            name="unionfs-read-ahead")

    async def _lane(self, todo: list[tuple[tuple[int, bytes], Pending]],
                    token: trio.lowlevel.TrioToken) -> None:
        try:
            async with self.limiter:
                await trio.to_thread.run_sync(self._read_all, todo, token)
        except Exception:  # a background task: never let it end the server
            log.exception("read-ahead failed unexpectedly")
        finally:
            for _key, pending in todo:
                pending.done.set()  # nothing waits forever on a lane that stopped

    def _read_all(self, todo: list[tuple[tuple[int, bytes], Pending]],
                  token: trio.lowlevel.TrioToken) -> None:
        """In a worker thread: read each pending directory no lookup has claimed, and hand
        each result to the trio thread as soon as it is read."""
        read = self.union.read_listings
        for key, pending in todo:
            if self.stopping.is_set():
                return
            if pending.claimed:
                continue
            pending.claimed = True
            try:
                listings, lower_paths = read(pending.probe, pending.candidates)
            except OSError as exc:  # the lookup meets it again, if it matters
                log.debug("read-ahead of %r: %s", pending.path, exc)
                listings = None
            try:
                if listings is None:
                    token.run_sync_soon(pending.done.set)
                else:
                    view = ChildView(pending.entry, pending.path, pending.candidates,
                                     listings, lower_paths, read_ahead=True)
                    token.run_sync_soon(self._publish, key, pending, view)
            except trio.RunFinishedError:  # the server is stopping
                return


    def _publish(self, key: tuple[int, bytes], pending: Pending, view: ChildView) -> None:
        if self.union.read_ahead.get(key) is pending:  # else: built or dropped meanwhile
            pending.view = view
            self.union.counters.views_read_ahead += 1
        pending.done.set()

    def ready(self, parent: Node, name: bytes) -> ChildView | None:
        """The read-ahead view of ``parent/name`` if it is read already (never waits)."""
        key = (parent.id, name)
        pending = self.union.read_ahead.get(key)
        if not isinstance(pending, Pending) or pending.view is None:
            return None
        del self.union.read_ahead[key]
        return pending.view

    async def take(self, parent: Node, name: bytes) -> ChildView | None:
        """The read-ahead view of ``parent/name``: ready, or waited for while a lane reads
        it; None when none is pending (or it is not yet taken by a lane: then it is claimed,
        and the caller reads it itself)."""
        key = (parent.id, name)
        pending = self.union.read_ahead.get(key)
        if pending is None or not isinstance(pending, Pending):
            return None
        if not pending.claimed:
            pending.claimed = True
            del self.union.read_ahead[key]
            return None
        await pending.done.wait()
        if self.union.read_ahead.get(key) is pending:
            del self.union.read_ahead[key]
        return pending.view
