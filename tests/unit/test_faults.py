"""Fault rules: parsing and when a rule fires (pure, no I/O)."""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unionfs.core.faults import (
    Rule,
    RuleError,
    RuleState,
    parse_duration,
    parse_rule,
    parse_rules,
    parse_size,
)


def test_the_issues_examples_parse() -> None:
    rules = parse_rules("write:EIO:path=*.db:after=3,create:ENOSPC:after_bytes=10M,"
                        "fsync:EIO:every=5,read:EIO:path=data/*:probability=0.01,"
                        "lookup:delay=50ms")
    assert rules == [
        Rule("write:EIO:path=*.db:after=3", "write", errno.EIO, path="*.db", after=3),
        Rule("create:ENOSPC:after_bytes=10M", "create", errno.ENOSPC, after_bytes=10 << 20),
        Rule("fsync:EIO:every=5", "fsync", errno.EIO, every=5),
        Rule("read:EIO:path=data/*:probability=0.01", "read", errno.EIO, path="data/*",
             probability=0.01),
        Rule("lookup:delay=50ms", "lookup", None, delay=0.05),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("write", "expected REQUEST:ERRNO"),
    ("frobnicate:EIO", "unknown request 'frobnicate'"),
    ("write:EBOGUS", "'EBOGUS' is not an errno name"),
    ("write:errno", "'errno' is not an errno name"),
    ("write:EIO:EPERM", "more than one errno"),
    ("write:EIO:color=red", "unknown key 'color'"),
    ("write:EIO:after=-1", "bad after '-1'"),
    ("write:EIO:after=3:after=4", "after given twice"),
    ("write:EIO:every=0", "bad every '0'"),
    ("read:EIO:probability=1.5", "bad probability"),
    ("create:ENOSPC:after_bytes=10Q", "bad after_bytes"),
    ("lookup:delay=50", "bad delay '50'"),
    ("lookup:delay=2h", "bad delay"),
    ("lookup:delay=9999s", "at most 3600s"),
    ("write:path=*.db", "give an errno"),
    ("write:EIO:path=", "bad path"),
])
def test_bad_rules_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rule(text)


def test_no_rule_is_an_error() -> None:
    with pytest.raises(RuleError, match="no fault rule"):
        parse_rules(" , ")


def test_units() -> None:
    assert [parse_size(s) for s in ("4096", "64k", "10M", "1G", "2KiB")] == [
        4096, 65536, 10 << 20, 1 << 30, 2048]
    assert [parse_duration(s) for s in ("250us", "50ms", "2s", "1.5s")] == [
        250e-6, 0.05, 2.0, 1.5]


def fires(rule: str, requests: Sequence[tuple[str, str | None]], *, written: int = 0) -> list[int]:
    """Indices of ``requests`` (name, path) the rule fires on."""
    state = RuleState(parse_rule(rule))
    return [i for i, (name, path) in enumerate(requests)
            if state.fires(name, path, written)]


def test_after_lets_the_first_n_pass() -> None:
    assert fires("write:EIO:after=3", [("write", None)] * 6) == [3, 4, 5]


def test_every_counts_after_after() -> None:
    assert fires("fsync:EIO:every=5", [("fsync", None)] * 12) == [4, 9]
    assert fires("fsync:EIO:after=2:every=2", [("fsync", None)] * 8) == [3, 5, 7]


def test_times_caps_the_injections() -> None:
    assert fires("write:EIO:times=2", [("write", None)] * 5) == [0, 1]


def test_other_requests_and_paths_are_not_counted() -> None:
    requests = [("write", "a.db"), ("read", "a.db"), ("write", "a.txt"), ("write", "d/b.db"),
                ("write", "c.db")]
    assert fires("write:EIO:path=*.db:after=1", requests) == [3, 4]
    assert fires("*:EIO:path=a.*", requests) == [0, 1, 2]


def test_path_glob_star_crosses_directories_and_leading_slash_is_ignored() -> None:
    requests = [("read", "data/x"), ("read", "data/sub/y"), ("read", "other/data/z")]
    assert fires("read:EIO:path=/data/*", requests) == [0, 1]


def test_a_rule_with_a_path_needs_one() -> None:
    assert fires("read:EIO:path=*", [("read", None), ("read", "")]) == [1]


def test_after_bytes_counts_from_the_rule_and_includes_the_request() -> None:
    state = RuleState(parse_rule("write:ENOSPC:after_bytes=10k"), written_at_add=5000)
    assert not state.fires("write", None, written=5000, size=10240)
    assert state.fires("write", None, written=5000, size=10241)
    create = RuleState(parse_rule("create:ENOSPC:after_bytes=1k"), written_at_add=100)
    assert not create.fires("create", None, written=1124)
    assert create.fires("create", None, written=1125)


def test_probability_is_reproducible_with_a_seed() -> None:
    requests = [("read", None)] * 200
    first = fires("read:EIO:probability=0.25:seed=7", requests)
    assert first == fires("read:EIO:probability=0.25:seed=7", requests)
    rng = random.Random(7)
    assert first == [i for i in range(200) if rng.random() < 0.25]
    assert 20 < len(first) < 80


def test_delay_alone_or_with_an_errno() -> None:
    assert parse_rule("lookup:delay=1s").errno is None
    rule = parse_rule("lookup:ENOENT:delay=1s")
    assert (rule.errno, rule.delay, rule.errno_name) == (errno.ENOENT, 1.0, "ENOENT")


@given(st.integers(0, 20), st.integers(1, 7), st.integers(0, 60))
def test_after_and_every_fire_exactly_where_counted(after: int, every: int, n: int) -> None:
    got = fires(f"write:EIO:after={after}:every={every}", [("write", None)] * n)
    assert got == [i for i in range(n) if i + 1 > after and (i + 1 - after) % every == 0]
