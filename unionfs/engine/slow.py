"""Slow work off the trio thread: a file's data copy-up, syncs, cold reads, big writes.

(A small cold read from a fast disk waits on the trio thread: a thread hop costs more than
that read, see :mod:`unionfs.engine.readwait`.)

Requests are served on one trio thread. What may take long (it waits for a disk) runs here,
in worker threads bounded by three limiters (bulk data work; directory reads and stats, so
that data work never holds every thread; calls that wait for this server's own answers, so
that they never hold a thread the answer needs), while the trio thread goes on with other requests;
the state of the union (nodes, merged views, the upper's entries) still changes only on the
trio thread. The locks that makes necessary, and their order, are in
:mod:`unionfs.engine.locks`.

``UNIONFS_TEST_HOLD`` (tests only) names a directory of FIFOs: when ``<kind>.held`` exists
there, a worker thread about to do slow work of that kind (``copy-up``, ``fsync``, ``read``:
a cold read about to wait for the disk, ``copy-up-sync``: a copy-up's data is written, its
sync comes next, or ``view``: the layers of a directory being looked up are read) writes the
kind to it,
then waits until a byte can be read from ``<kind>.release``: a test can hold a copy-up as
long as it likes and show that other requests complete meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import trio

from unionfs.engine.ahead import ChildView, ReadAhead
from unionfs.engine.counters import ThreadGauge
from unionfs.engine.locks import EntryLocks, Gate
from unionfs.engine.nodes import Node
from unionfs.engine.readwait import ReadWait, read_cached, read_complete
from unionfs.engine.union import Union
from unionfs.layers.syscalls import open_beneath

log = logging.getLogger(__name__)

T = TypeVar("T")
THREADS = 4  # worker threads for bulk data work (copy-ups, syncs, large cold reads, big writes)
# Worker threads for metadata work (merged views, dirents, stats ahead of a listing): their
# own, so that bulk data work, which can wait seconds for the disk, never holds them all.
META_THREADS = 2
APART_THREADS = 8  # threads for calls that wait on this server's own answers (run_apart)
HOLD_ENV = "UNIONFS_TEST_HOLD"
INLINE_COPY = 1 << 20  # a volatile mount copies files up to this size on the trio thread


def _nothing() -> None:
    pass


class SlowWork:
    """Worker threads for a :class:`Union`, with the gate and the entry locks."""

    def __init__(self, union: Union, threads: int = THREADS,
                 meta_threads: int = META_THREADS) -> None:
        self.union = union
        self.limiter = trio.CapacityLimiter(threads)  # bulk data work
        self.meta_limiter = trio.CapacityLimiter(meta_threads)  # directory reads, stats
        self.apart = trio.CapacityLimiter(APART_THREADS)
        self.stopping = threading.Event()  # set at shutdown: long copies are abandoned
        # Called before a request waits (the request loop hands reading on to another task).
        self.before_wait: Callable[[], None] = _nothing
        self.gate = Gate(self._before_wait)
        self.entries = EntryLocks(self._before_wait)
        self.in_flight = 0
        self.read_wait = ReadWait()  # where cold reads wait for the disk
        self.ahead = ReadAhead(union, self.stopping)  # subdirectories of listed directories
        self._holds = os.environ.get(HOLD_ENV) or None
        union.counters.threads = self._gauge

    def _gauge(self) -> ThreadGauge:
        """Worker threads, how many are busy, how much slow work waits (``unionfs watch``)."""
        limiters = (self.limiter, self.meta_limiter)
        return ThreadGauge(sum(int(limiter.total_tokens) for limiter in limiters),
                           sum(int(limiter.borrowed_tokens) for limiter in limiters),
                           sum(limiter.statistics().tasks_waiting for limiter in limiters))

    def _before_wait(self) -> None:
        self.before_wait()

    def stop(self) -> None:
        """Shutting down: copies in progress stop at their next chunk (and leave nothing)."""
        self.stopping.set()

    async def run(self, func: Callable[..., T], *args: object, hold: str | None = None) -> T:
        """``func(*args)`` (bulk data work) in a worker thread; other requests are served
        meanwhile."""
        return await self._run(self.limiter, func, args, hold)

    async def run_meta(self, func: Callable[..., T], *args: object,
                       hold: str | None = None) -> T:
        """:meth:`run` for metadata work (reading directories, stats), on threads of its
        own: a lookup or a listing never queues behind copies, syncs and data I/O."""
        return await self._run(self.meta_limiter, func, args, hold)

    async def _run(self, limiter: trio.CapacityLimiter, func: Callable[..., T],
                   args: tuple[object, ...], hold: str | None) -> T:
        self.before_wait()
        self.in_flight += 1
        try:
            return await trio.to_thread.run_sync(self._call, func, args, hold, limiter=limiter)
        finally:
            self.in_flight -= 1

    async def run_apart(self, func: Callable[..., T], *args: object) -> T:
        """``func(*args)`` in a thread outside :attr:`limiter`: for a call that returns only
        once this server has answered other requests (a notification that makes the kernel
        write its dirty pages back). Those requests may need the limiter's threads (a large
        write goes to one), so waiting for one of them here could deadlock."""
        self.before_wait()
        return await trio.to_thread.run_sync(func, *args, limiter=self.apart)

    def hold(self, kind: str) -> None:
        """A test hold point of ``kind`` in the calling worker thread (``UNIONFS_TEST_HOLD``;
        nothing without it)."""
        if self._holds is not None:
            _hold_for_test(self._holds, kind)

    def _before_sync(self) -> None:
        """In a copy-up's worker thread, its data written, before its sync (a test hold)."""
        if self._holds is not None:
            _hold_for_test(self._holds, "copy-up-sync")

    def _call(self, func: Callable[..., T], args: tuple[object, ...], hold: str | None) -> T:
        if hold is not None and self._holds is not None:
            _hold_for_test(self._holds, hold)
        return func(*args)

    # ---- copy-up --------------------------------------------------------------------------

    async def copy_up(self, node: Node) -> None:
        """Copy a regular file up with its data copied in a worker thread, so that the
        ``Union.copy_up`` the request makes next finds it done. Anything else (directories,
        symlinks, a small file of a volatile mount) is left to that call: it is quick."""
        union = self.union
        parent = node.parent
        if parent is None or node is union.root or union.copier is None:
            return
        if union.entry(node).layer == 0:
            return
        async with self.gate.shared(), self.entries.holding((parent.id, node.name)):
            await self._copy_file_up(node)

    async def _copy_file_up(self, node: Node) -> None:
        union = self.union
        copier = union.require_upper()
        parent = node.parent
        if parent is None:  # unlinked while we waited: the request's own step says ENOENT
            return
        entry = union.entry(node)
        source = entry.layer
        if source == 0 or entry.is_dir:
            return
        layer = union.layers[source]
        where = union.dir_path(parent, source)  # elsewhere below a redirected directory
        st = layer.lstat(where, node.name)
        if not stat.S_ISREG(st.st_mode) or (not copier.sync and st.st_size <= INLINE_COPY):
            return
        union.copy_up(parent)  # directories: quick
        sfd, st = copier.open_source(layer, where, node.name)
        tmp = copier.work.new_name()
        try:
            copied = await self.run(copier.build_file, sfd, st, tmp, node.id,
                                    self.stopping.is_set, self._before_sync, hold="copy-up")
            if st.st_nlink > 1:  # the first copy-up of a lower hard link walks the layer
                await self.run(layer.names_of, st.st_ino)
        except BaseException:
            copier.work.remove(tmp)
            raise
        finally:
            os.close(sfd)
        # Back on the trio thread. The entry lock kept the name; a rename of a directory
        # above may have moved it, or copied it up (a tree copy-up) meanwhile.
        parent = node.parent
        if parent is None or union.merged(parent).get(node.name) is not entry or (
                entry.layer != source):
            copier.work.remove(tmp)
            return
        union.copy_up(parent)
        union.mark_impure(parent)
        copier.install(tmp, parent.path(), node.name)
        union.copied_up(node, entry, source, st, copied)

    async def copy_up_tree(self, node: Node) -> None:
        """Before the first rename of merged directory ``node`` (which copies its tree up):
        copy the files below it up here, one at a time, so the rename itself only makes
        directories. Names that change meanwhile are left to the rename."""
        union = self.union
        for name, entry in list(union.merged(node).items()):
            if entry.layer == 0 and not entry.is_dir:
                continue
            try:
                child = union.view_of(node, name)
                if entry.is_dir:
                    union.merged(child)
                    if child.layers != (0,):
                        await self.copy_up_tree(child)
                else:
                    await self.copy_up(child)
            except OSError as exc:  # changed meanwhile: the rename sees it afresh
                log.debug("tree copy-up of %r: %s", name, exc)

    async def view(self, node: Node) -> None:
        """Build the merged view of directory ``node`` with its layers read in a worker
        thread (a cold directory waits for the disk), unless it is known already."""
        union = self.union
        if node.merged is not None or not node.is_dir:
            return
        path = node.path()
        candidates = union._candidate_layers(node)
        if union.has_redirects:  # paths through redirects read other views: not in a thread
            union.merged(node)
            return
        listings, lower_paths = await self.run_meta(union.read_listings, node, candidates)
        # Back on the trio thread: a change through the union may have built the view
        # meanwhile (it is newer), or moved the directory (the listing may be stale), or the
        # listing met the first redirect (its paths must be found on this thread).
        if node.merged is None and node.path() == path and (
                union._candidate_layers(node) == candidates):
            if lower_paths or union.has_redirects:
                union.merged(node)
            else:
                union.install_view(node, listings, lower_paths)

    async def child_view(self, parent: Node, name: bytes) -> ChildView | None:
        """Before a lookup of ``parent/name``: when it is a directory whose merged view is
        not built, read its layers in a worker thread (a cold directory waits for the disk
        there, twice per layer: its inode, then its entries), so that the lookup's own lstat
        finds the inode cached and :meth:`install_child` gives the node its view without
        another read. None when there is nothing to read (the view is built, not a
        directory, or a redirect is known: paths through redirects are found on the trio
        thread)."""
        union = self.union
        entry = union.merged(parent).get(name)
        if entry is None or not entry.is_dir or union.has_redirects:
            return None
        known = parent.children.get(name)
        if known is not None and known.merged is not None:
            return None
        ahead = await self.ahead.take(parent, name)
        if ahead is not None:
            return ahead
        probe = Node(0, parent, name, True)  # transient: only for its paths in the layers
        path = probe.path()
        candidates = entry.dir_layers
        listings, lower_paths = await self.run_meta(union.read_listings, probe, candidates,
                                                    hold="view")
        return ChildView(entry, path, candidates, listings, lower_paths)

    def install_child(self, node: Node, view: ChildView) -> None:
        """Give directory ``node`` (just looked up) the view :meth:`child_view` read, unless
        the directory changed meanwhile (moved, copied up, replaced: then it is read again
        when needed) or the listing met a redirect."""
        union = self.union
        parent = node.parent
        if (node.merged is None and node.is_dir and parent is not None
                and not view.lower_paths and not union.has_redirects
                and union.merged(parent).get(node.name) is view.entry
                and view.entry.dir_layers == view.candidates and node.path() == view.path):
            if view.read_ahead:
                union.counters.views_from_read_ahead += 1
            union.install_view(node, view.listings, view.lower_paths)

    async def stat_entries(self, node: Node, names: list[bytes] | None = None) -> None:
        """Before a listing of directory ``node`` answers with every entry's attributes
        (or those of ``names``): stat them in a worker thread once, so the kernel's caches
        have their inodes and the answer does not wait for the disk on the trio thread."""
        union = self.union
        merged = node.merged
        if merged is None or not merged:
            return
        by_layer: dict[int, list[bytes]] = {}
        for name in merged if names is None else names:
            entry = merged.get(name)
            if entry is not None:
                by_layer.setdefault(entry.layer, []).append(name)
        if not by_layer:
            return
        path = node.path()
        await self.run_meta(_stat_all, [(union.layers[i].root_fd, path, names)
                                        for i, names in by_layer.items()])

    # ---- data -----------------------------------------------------------------------------

    async def read(self, fd: int, size: int, offset: int) -> bytes | bytearray:
        """pread, at once from the page cache; what is not cached waits for the disk where
        :class:`ReadWait` says (a small read from a fast disk on this thread, the others in
        a worker thread).

        The first attempt is the real read with RWF_NOWAIT (same offsets and sizes as a
        plain read, so the kernel's readahead sees the same sequential pattern and starts
        the I/O the second read then waits for)."""
        buf = bytearray(size)
        got = read_cached(fd, buf, offset)
        if got is None:
            return os.pread(fd, size, offset)  # the file cannot tell: read as it is
        if read_complete(fd, got, size, offset):
            del buf[got:]
            return buf
        rest = await self._read_cold(fd, size - got, offset + got)
        if not got:
            return rest
        del buf[got:]
        buf += rest
        return buf

    async def _read_cold(self, fd: int, size: int, offset: int) -> bytes:
        wait = self.read_wait
        if wait.inline(size):
            start = time.perf_counter_ns()
            data = os.pread(fd, size, offset)
            wait.took(size, time.perf_counter_ns() - start)
            return data
        data, ns = await self.run(_timed_pread, fd, size, offset, hold="read")
        wait.took(size, ns)
        return data

    async def sync(self, fd: int, datasync: bool) -> None:
        await self.run(os.fdatasync if datasync else os.fsync, fd, hold="fsync")


def _timed_pread(fd: int, size: int, offset: int) -> tuple[bytes, int]:
    """pread, and how long it waited (in a worker thread: the hop is not counted)."""
    start = time.perf_counter_ns()
    data = os.pread(fd, size, offset)
    return data, time.perf_counter_ns() - start


def _stat_all(work: list[tuple[int, bytes, list[bytes]]]) -> None:
    """lstat ``names`` in directory ``path`` of each layer (by its root fd); errors are
    left for the request to meet."""
    for root_fd, path, names in work:
        try:
            fd = open_beneath(root_fd, path, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            for name in names:
                with contextlib.suppress(OSError):
                    os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)


def _hold_for_test(directory: str, kind: str) -> None:
    held = os.path.join(directory, f"{kind}.held")
    if not os.path.exists(held):
        return
    with open(held, "w") as fifo:  # blocks until the test reads
        fifo.write(kind + "\n")
    # One byte per held thread: a test that holds several releases them one by one.
    fd = os.open(os.path.join(directory, f"{kind}.release"), os.O_RDONLY)
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)
