"""EntryLocks.busy: the fast path of unlink and rmdir says busy exactly while a request holds
or waits for one of the entries (then they wait, as with ``settled``)."""

from __future__ import annotations

import trio
import trio.testing

from unionfs.engine.locks import EntryLocks


async def test_busy_while_an_entry_is_held_or_waited_for() -> None:
    locks = EntryLocks()
    a, b = (1, b"a"), (1, b"b")
    assert not locks.busy(a, b)
    held, release = trio.Event(), trio.Event()
    order: list[str] = []

    async def hold() -> None:
        async with locks.holding(a):
            held.set()
            await release.wait()
            order.append("held released")

    async def settle() -> None:
        async with locks.settled(a):
            order.append("settled ran")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await held.wait()
        assert locks.busy(a) and locks.busy(b, a) and not locks.busy(b)
        nursery.start_soon(settle)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # the change waits for the holder
        release.set()
    assert order == ["held released", "settled ran"]
    assert not locks.busy(a, b) and len(locks) == 0
