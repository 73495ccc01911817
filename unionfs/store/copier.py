"""Many small regular files copied at once by worker threads, their data handed back in order.

A commit copies thousands of small files from an upper into a new layer. One by one, each
copy waits for the disk (a cold source) and then for the file system to create the copy,
while the other core idles. Here worker threads copy batches of files (each file read once:
its data is written to the copy and kept for the caller), so reads queue on the device
together and creations run on both cores (the system calls release the GIL); the caller
takes the results back in submission order, which is the order its tar hash needs.

The queue of pending work (:class:`Ordered`) holds byte strings and copies in the order they
were given; :meth:`Ordered.ready` yields the leading items that are complete. Its bounds
(files and bytes in flight) keep memory flat whatever the layer's size.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from unionfs.store.tree import Node

WORKERS = 4  # enough to keep reads queued on the device and both cores creating files
BATCH_FILES = 16  # files per task: thread hand-offs cost more than a small file's copy
BATCH_BYTES = 4 << 20
MAX_FILES = 1024  # in flight (submitted, not yet taken back)
MAX_BYTES = 32 << 20
SMALL_FILE = 1 << 20  # larger files are copied by the caller itself, streamed


@dataclass(slots=True)
class Copy:
    """One file to copy; the work fills in ``data`` (what was read and written) and
    ``exact`` (False: the copy differs from its node), or ``error`` is set."""

    node: Node
    size: int  # the node's size, for the bounds in flight
    data: bytes = b""
    exact: bool = True
    error: BaseException | None = None
    batch: concurrent.futures.Future[None] | None = field(default=None, repr=False)


Work = Callable[[Copy], None]


def _run_batch(work: Work, batch: list[Copy]) -> None:
    for item in batch:
        try:
            work(item)
        except BaseException as exc:  # handed to the caller with this file's result
            item.error = exc


class Ordered:
    """Byte strings and copies in one order; copies run in worker threads, batched.

    Use as a context manager (the threads are joined on exit). ``work`` copies one file
    (it runs in a worker thread: it must not touch the caller's state).
    """

    def __init__(self, work: Work, workers: int = WORKERS) -> None:
        self._work = work
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "layer-copy")
        self._items: collections.deque[bytes | Copy] = collections.deque()
        self._batch: list[Copy] = []
        self._batch_bytes = 0
        self._files = 0
        self._bytes = 0

    def __enter__(self) -> Ordered:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __bool__(self) -> bool:
        return bool(self._items)

    def put_bytes(self, data: bytes) -> None:
        self._items.append(data)

    def put_copy(self, item: Copy) -> None:
        self._items.append(item)
        self._batch.append(item)
        self._batch_bytes += item.size
        self._files += 1
        self._bytes += item.size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._submit()

    def full(self) -> bool:
        """Whether the caller should take results back before it adds more copies."""
        return self._files >= MAX_FILES or self._bytes >= MAX_BYTES

    def _submit(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        future = self._pool.submit(_run_batch, self._work, batch)
        for item in batch:
            item.batch = future

    def ready(self, wait: bool = False) -> Iterator[bytes | Copy]:
        """Take back the leading items that are done, in order. With ``wait`` every item
        (waiting for the copies); otherwise it waits only while the queue is over its
        bounds. A failed copy raises its error here."""
        if wait:
            self._submit()
        while self._items:
            item = self._items[0]
            if isinstance(item, Copy):
                if not (wait or self.full() or (item.batch is not None and item.batch.done())):
                    return
                if item.batch is None:  # still in the batch being filled
                    self._submit()
                assert item.batch is not None
                item.batch.result()
                self._files -= 1
                self._bytes -= item.size
                if item.error is not None:
                    raise item.error
            self._items.popleft()
            yield item
