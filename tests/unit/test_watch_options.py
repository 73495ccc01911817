"""The watch options of a mount and the trace's line format (pure, no I/O)."""

from __future__ import annotations

import errno

import pytest

from unionfs.errors import UserError
from unionfs.fuse.trace import escape_path, format_record
from unionfs.mount.options import MountOptions, options_from_text, parse_options


def test_fail_rules_go_on_after_commas() -> None:
    opts = parse_options("ro,fail=write:EIO:path=*.db:after=3,fsync:EIO:every=5,"
                         "lookup:delay=50ms,metrics,workdir=/a:b")
    assert opts == {"ro": True, "fail": "write:EIO:path=*.db:after=3,fsync:EIO:every=5,"
                    "lookup:delay=50ms", "metrics": True, "workdir": "/a:b"}


def test_a_rule_without_fail_is_an_unknown_option() -> None:
    with pytest.raises(UserError, match="unknown mount option 'write:EIO'"):
        parse_options("write:EIO")


def test_bad_rules_are_refused_before_mounting() -> None:
    with pytest.raises(UserError, match="fault rule 'read:EWHAT'"):
        options_from_text("fail=write:EIO,read:EWHAT")


def test_watch_options_say_the_options_again() -> None:
    options = MountOptions(metrics=True, trace="/t/a,b.log",
                           fail=["write:EIO", "fsync:EIO:every=2"])
    items = options.watch_items()
    assert items == ["metrics", "trace=/t/a\\,b.log", "fail=write:EIO,fsync:EIO:every=2"]
    again = options_from_text(",".join(items))
    assert (again.metrics, again.trace, again.fail) == (True, "/t/a,b.log", options.fail)


def test_trace_lines() -> None:
    end = 1796152825_703460_123
    assert format_record((end, "lookup", 1, b"x.db", 90_250, errno.ENOENT, "negative")) == (
        "2026-12-01T19:20:25.703460Z lookup 0x1 /x.db 90.2us ENOENT negative\n")
    assert format_record((end, "statfs", None, None, 1000, 0, "")) == (
        "2026-12-01T19:20:25.703460Z statfs - - 1.0us OK\n")
    assert format_record((end, "read", 5, b"<unlinked>", 1000, 0, "off=0 bytes=3")) == (
        "2026-12-01T19:20:25.703460Z read 0x5 <unlinked> 1.0us OK off=0 bytes=3\n")


def test_paths_stay_one_field() -> None:
    assert escape_path(b"d/plain-name.txt") == "d/plain-name.txt"
    assert escape_path(b"a b\\c\nd") == "a\\x20b\\x5cc\\x0ad"
    assert escape_path("é".encode() + b"\xff") == "é\\xff"
