"""The locks of requests that wait in the middle of a change.

Every change to the union's state (nodes, merged views, the upper's entries) runs on the trio
thread, and code between two checkpoints is atomic: a request that never waits needs no lock.
Only requests that hand slow I/O to a worker thread (a file's data copy-up, fsync, a large
read or write) yield while they are halfway, and they hold these locks while they do.

Lock order (a request takes its locks in this order, and never one that comes earlier than
one it holds):

1. **The gate** (:class:`Gate`), shared by every request that waits while it changes the
   upper (copy-up, offloaded writes); exclusive for ``switch_upper`` (a live commit), which
   so waits for every such writer to finish and holds back new ones until the switch is done.
2. **Entry locks** (:class:`EntryLocks`), one per directory entry ``(parent inode, name)``:
   a copy-up holds the entry of the file it copies; unlink, rmdir, rename, link and the
   attribute changes hold the entries they change, so they run after a copy-up of the same
   file, exactly as the kernel's overlayfs orders them. A request takes all the entry locks
   it needs at once, in ascending order (parent inode number first, then the name), so the
   parent's entry comes before an entry in it whenever the parent's number is lower, and
   between unrelated entries the lower inode number always comes first. A tree copy-up (the
   first rename of a merged directory) copies the files below it one at a time, each under
   its own entry lock and holding no other, before it takes the rename's locks.

Nothing else waits while holding a lock, so the order cannot deadlock. Before a request
blocks on a lock it calls ``before_wait`` (the request loop's hand-off: another task goes
on reading requests), so a request that waits never stalls the others.

The reader threads of :mod:`unionfs.fuse.reads` take none of these locks: they change
nothing, they only read an open handle's fd and reply to the kernel. The writer threads of
:mod:`unionfs.fuse.writes` take none either: the trio thread takes the gate for each write
it hands them (:meth:`Gate.share_now`, which never waits) and releases it when the thread
hands the write back, answered (:meth:`Gate.unshare`, on the trio thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import trio


def _nothing() -> None:
    pass


class Gate:
    """A readers-writer lock: many writers share it, ``switch_upper`` takes it alone (and
    once it waits, new writers wait behind it). Taking it shared never yields while no
    switch is pending: the fast path stays a counter."""

    def __init__(self, before_wait: Callable[[], None] = _nothing) -> None:
        self.before_wait = before_wait
        self.sharers = 0
        self._switching = trio.Lock()
        self._reopened: trio.Event | None = None  # set once a pending switch is done
        self._drained: trio.Event | None = None  # set when the last sharer leaves

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while self._reopened is not None:
            self.before_wait()
            await self._reopened.wait()
        self.sharers += 1
        try:
            yield
        finally:
            self.unshare()

    @property
    def switch_pending(self) -> bool:
        """A switch waits for the sharers (or runs): new sharers wait."""
        return self._reopened is not None

    def share_now(self) -> bool:
        """Take it shared without waiting, if no switch is pending (then True: the caller
        must :meth:`unshare` later, on the trio thread). For work handed to a thread that
        ends outside any task (the WRITE slot's writer threads)."""
        if self._reopened is not None:
            return False
        self.sharers += 1
        return True

    def unshare(self) -> None:
        """Leave a shared hold (from :meth:`share_now`, or at the end of :meth:`shared`)."""
        self.sharers -= 1
        if not self.sharers and self._drained is not None:
            self._drained.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self.before_wait()
        async with self._switching:
            reopened = self._reopened = trio.Event()
            try:
                while self.sharers:
                    drained = self._drained = trio.Event()
                    await drained.wait()
                self._drained = None
                yield
            finally:
                self._reopened = self._drained = None
                reopened.set()


Key = tuple[int, bytes]


class EntryLocks:
    """One lock per directory entry ``(parent inode number, name)``, made on demand and
    dropped when nobody holds or waits for it."""

    def __init__(self, before_wait: Callable[[], None] = _nothing) -> None:
        self.before_wait = before_wait
        self._locks: dict[Key, tuple[trio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def holding(self, *keys: Key) -> AsyncIterator[None]:
        """Hold the locks of ``keys`` (taken in the documented order)."""
        taken: list[Key] = []
        try:
            for key in sorted(set(keys)):
                await self._acquire(key)
                taken.append(key)
            yield
        finally:
            for key in reversed(taken):
                self._release(key)

    def busy(self, *keys: Key) -> bool:
        """True when a request holds (or waits for) one of ``keys``. A change that does not
        wait may run at once when this is False, with no await in between: the same as
        :meth:`settled`, without the cost of an async context manager (an unlink of 10k
        files paid a third of its handler time for it)."""
        locks = self._locks
        return bool(locks) and any(key in locks for key in keys)

    @contextlib.asynccontextmanager
    async def settled(self, *keys: Key) -> AsyncIterator[None]:
        """For a change that does not wait: run it once no request holds ``keys``. Free
        entries (the usual case) cost a dict lookup each, and no lock is made."""
        if any(key in self._locks for key in keys):
            async with self.holding(*keys):
                yield
        else:
            yield

    async def _acquire(self, key: Key) -> None:
        slot = self._locks.get(key)
        if slot is None:
            slot = self._locks[key] = (trio.Lock(), [0])
        lock, users = slot
        users[0] += 1
        try:
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                self.before_wait()
                await lock.acquire()
        except BaseException:
            self._unuse(key)
            raise

    def _release(self, key: Key) -> None:
        self._locks[key][0].release()
        self._unuse(key)

    def _unuse(self, key: Key) -> None:
        users = self._locks[key][1]
        users[0] -= 1
        if not users[0]:
            del self._locks[key]
