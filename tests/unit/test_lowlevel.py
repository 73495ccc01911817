"""The safety checks of unionfs.fuse.lowlevel, without a mount."""

from __future__ import annotations

import ctypes
import logging

import pyfuse3
import pytest

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
    before = pyfuse3._wait_fuse_readable
    with caplog.at_level(logging.WARNING):
        assert lowlevel.install(lambda fh, mode, off, length: 0) is None
    assert "running without fallocate" in caplog.text  # the table is still empty
    assert pyfuse3._wait_fuse_readable is before
