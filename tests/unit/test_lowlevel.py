"""The safety checks of unionfs.fuse.lowlevel, without a mount."""

from __future__ import annotations

import ctypes
import logging

import pyfuse3
import pytest
import trio
import trio.testing

from unionfs.fuse import lowlevel


def test_symbols_of_pyfuse3_are_found() -> None:
    """This machine's pyfuse3 keeps its symbol table: the table and its handlers resolve."""
    symbols = lowlevel._Symbols(pyfuse3.__file__)
    table = symbols.address("__pyx_v_7pyfuse3_fuse_ops")
    assert symbols.size("__pyx_v_7pyfuse3_fuse_ops") >= lowlevel._MIN_SLOTS * lowlevel._PTR
    assert symbols.address("__pyx_f_7pyfuse3_fuse_opendir") != table
    with pytest.raises(lowlevel.Unsupported, match="not found"):
        symbols.address("__pyx_no_such_symbol")


def test_find_copy_needs_exactly_one_match() -> None:
    table = bytes(range(1, 65))
    session = ctypes.create_string_buffer(lowlevel._SESSION_SCAN + len(table))
    ctypes.memmove(ctypes.addressof(session) + 32, table, len(table))
    assert lowlevel._find_copy(ctypes.addressof(session), table) == ctypes.addressof(session) + 32
    ctypes.memmove(ctypes.addressof(session) + 32, bytes(len(table)), len(table))
    with pytest.raises(lowlevel.Unsupported):
        lowlevel._find_copy(ctypes.addressof(session), table)


def test_install_before_init_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Without a session (no pyfuse3.init yet) nothing is written and the reason is logged."""
    before = getattr(pyfuse3, "_wait_fuse_readable")  # noqa: B009 (not declared by pyfuse3)
    with caplog.at_level(logging.WARNING):
        assert lowlevel.install(lambda fh, mode, off, length: 0) is None
    assert "running without fallocate" in caplog.text  # the table is still empty
    assert getattr(pyfuse3, "_wait_fuse_readable") is before  # noqa: B009


def test_lseek_slot_is_checked() -> None:
    """lseek goes in only where pyfuse3's table reaches its slot and leaves it (and
    copy_file_range before it) empty; otherwise the reason says why it is left out."""
    slots = (ctypes.c_void_p * (lowlevel.SLOT_LSEEK + 1))()
    full = ctypes.sizeof(slots)
    assert lowlevel._lseek_problem(slots, full) is None
    assert "ends before the lseek slot" in str(lowlevel._lseek_problem(slots, full - 8))
    for slot in (lowlevel.SLOT_COPY_FILE_RANGE, lowlevel.SLOT_LSEEK):
        taken = (ctypes.c_void_p * (lowlevel.SLOT_LSEEK + 1))()
        taken[slot] = 0x1000
        assert "already fills" in str(lowlevel._lseek_problem(taken, full))


def test_lseek_slot_of_this_pyfuse3() -> None:
    """This machine's pyfuse3 table has the lseek slot (libfuse 3.8+ headers)."""
    symbols = lowlevel._Symbols(pyfuse3.__file__)
    assert symbols.size("__pyx_v_7pyfuse3_fuse_ops") >= (lowlevel.SLOT_LSEEK + 1) * lowlevel._PTR


def test_parked_worker_tasks_end_when_the_reader_left_without_handing_off() -> None:
    """The reader found the session gone in its read and left pyfuse3's loop without a
    hand-off (ENODEV after a lazy unmount's last close): the parked tasks still see the
    end within PARKED_CHECK and stop, instead of keeping the server alive for ever."""
    readers = lowlevel._Readers()
    ended = False
    results: list[bool] = []

    async def gone_reader() -> None:
        assert await readers.take(lambda: ended)  # becomes the reader, then leaves

    async def parked() -> None:
        results.append(await readers.take(lambda: ended))

    async def main() -> None:
        with trio.fail_after(100 * lowlevel.PARKED_CHECK):  # a hang fails (virtual time)
            await both()

    async def both() -> None:
        nonlocal ended
        async with trio.open_nursery() as nursery:
            await gone_reader()
            for _ in range(3):
                nursery.start_soon(parked)
            await trio.sleep(5 * lowlevel.PARKED_CHECK)
            assert results == []  # the session is alive: they wait
            ended = True
        assert results == [False, False, False]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
