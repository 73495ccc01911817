"""Watching a live union (`unionfs watch`, -o trace) and faults on purpose (-o fail,
`unionfs fail`), on real mounts."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mounts, Stack, unionfs_cli
from unionfs import api
from unionfs.core.faults import RuleState, parse_rule

StackFactory = Callable[..., Stack]


def watch_json(mnt: Path) -> dict[str, Any]:
    res = unionfs_cli("watch", str(mnt), "--json")
    assert res.returncode == 0, res.stderr
    sample: dict[str, Any] = json.loads(res.stdout)
    return sample


def errno_of(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def write_and_sync(path: Path, chunks: list[tuple[int, bytes]]) -> list[int]:
    """Write each chunk at its offset and fsync: one WRITE request each. The errno of each
    step (0 when it worked)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        codes = []
        for offset, data in chunks:
            os.pwrite(fd, data, offset)
            codes.append(errno_of(lambda: os.fsync(fd)))
        return codes
    finally:
        os.close(fd)


# ---- unionfs watch ------------------------------------------------------------------------

def test_watch_counts_what_the_test_did(stack: StackFactory, mounts: Mounts) -> None:
    files = {f"d/f{i}": "x" * 100 for i in range(20)}
    st = stack({**files, "big": "b" * 5000})
    mnt = mounts.unionfs(st)
    before = watch_json(mnt)  # attaches the accounting
    for i in range(20):
        os.stat(mnt / f"d/f{i}")
    for i in range(3):
        assert not (mnt / f"d/missing{i}").exists()
    data = os.urandom(12345)
    write_and_sync(mnt / "new", [(0, data)])
    assert (mnt / "d/f0").read_text() == "x" * 100
    after = watch_json(mnt)
    counts = after["requests_since_mount"]
    assert counts["lookup"] - before["requests_since_mount"].get("lookup", 0) >= 23
    assert after["requests"]["lookup"]["count"] >= 23
    assert after["cache"]["negative_entries"] == 4  # the 3 missing, and "new" before create
    assert after["cache"]["lookups_from_view"] >= 22  # all but the first in d/
    assert after["bytes"] == {"read": 100, "written": len(data)}
    assert after["copy_ups"] == {"count": 0, "bytes": 0}
    with open(mnt / "big", "a") as f:  # a copy-up of 5000 bytes
        f.write("!")
    assert watch_json(mnt)["copy_ups"] == {"count": 1, "bytes": 5000}
    assert after["threads"]["requests_in_flight"] == 0
    assert after["requests"]["lookup"]["p50_us"] > 0
    assert any(item["request"] in ("lookup", "create", "fsync", "write", "open")
               for item in after["slowest"])
    assert all(re.fullmatch(r"(0x[0-9a-f]+ /.*|-)", item["target"]) for item in after["slowest"])


def test_watch_json_interval_gives_rates(stack: StackFactory, mounts: Mounts) -> None:
    """With -o metrics the accounting counts from the mount, before anyone looked."""
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st, metrics=True)
    os.stat(mnt / "f")
    res = unionfs_cli("watch", str(mnt), "--json", "--interval", "0.2", "--count", "2")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 2
    assert all(line["rates"]["seconds"] > 0 for line in lines)
    assert lines[0]["requests"]["lookup"]["count"] == 1


def test_watch_screen_and_bad_mount(stack: StackFactory, mounts: Mounts,
                                    tmp_path: Path) -> None:
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    os.stat(mnt / "f")
    res = unionfs_cli("watch", str(mnt), "--count", "1", "--interval", "0.1")
    assert res.returncode == 0, res.stderr
    assert "requests" in res.stdout and "slowest recent requests" in res.stdout
    res = unionfs_cli("watch", str(tmp_path), "--json")
    assert res.returncode == 2
    assert res.stderr.strip() == f"unionfs: error: {tmp_path} is not a unionfs mount"


# ---- -o trace -----------------------------------------------------------------------------

TRACE_LINE = re.compile(r"(\S+Z) (\w+) (0x[0-9a-f]+|-) (\S+) (\d+\.\d)us (OK|E[A-Z]+)(?: (.*))?")


def test_trace_shows_the_requests_and_the_errno(stack: StackFactory, mounts: Mounts,
                                                tmp_path: Path) -> None:
    st = stack({"full/a": "a"})
    trace = tmp_path / "trace.log"
    mnt = mounts.unionfs(st, trace=trace)
    (mnt / "hello world.txt").write_bytes(b"hi there")
    assert errno_of(lambda: os.rmdir(mnt / "full")) == errno.ENOTEMPTY
    assert not (mnt / "nothere").exists()
    mounts.unmount(st.mnt)  # the server writes what is left before it exits
    lines = trace.read_text().splitlines()
    assert lines[0].startswith(f"# unionfs trace of {mnt}")
    parsed = [TRACE_LINE.fullmatch(line) for line in lines[2:]]
    assert all(parsed), [line for line, m in zip(lines[2:], parsed, strict=True) if not m]
    seen = [(m[2], m[4], m[6]) for m in parsed if m]
    assert ("create", r"/hello\x20world.txt", "OK") in seen
    assert ("rmdir", "/full", "ENOTEMPTY") in seen
    assert ("lookup", "/nothere", "ENOENT") in seen
    writes = [m for m in parsed if m and m[2] == "write"]
    assert writes and writes[0][7] == "off=0 bytes=8"


def test_bad_trace_file_mounts_nothing(stack: StackFactory) -> None:
    st = stack({"f": "x"})
    res = unionfs_cli("mount", "-o", f"trace={st.mnt}/t.log", str(st.lowers[0]),
                      str(st.upper), str(st.mnt))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"unionfs: error: trace file {st.mnt}/t.log is inside the "
                                  f"mount point {st.mnt}")
    assert not api.is_mounted(st.mnt)


# ---- -o fail ------------------------------------------------------------------------------

def test_write_fails_after_n_on_matching_paths_and_leaves_the_file(
        stack: StackFactory, mounts: Mounts) -> None:
    st = stack({})
    mnt = mounts.unionfs(st, fail=["write:EIO:path=*.db:after=3"])
    chunks = [(i, bytes([97 + i])) for i in range(5)]
    assert write_and_sync(mnt / "x.txt", chunks) == [0, 0, 0, 0, 0]
    assert write_and_sync(mnt / "sub.db", chunks[:3]) == [0, 0, 0]
    assert write_and_sync(mnt / "sub.db", chunks[3:4]) == [errno.EIO]
    assert (st.upper / "sub.db").read_bytes() == b"abc"  # the failed write changed nothing
    assert (st.upper / "x.txt").read_bytes() == b"abcde"
    rules = api.fault_rules(mnt)["rules"]
    assert rules == [{"id": 1, "rule": "write:EIO:path=*.db:after=3", "matched": 4,
                      "injected": 1}]


def test_create_fails_once_enough_bytes_are_written(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    st = stack({})
    mnt = mounts.unionfs(st, fail=["create:ENOSPC:after_bytes=64k"])
    write_and_sync(mnt / "one", [(0, b"x" * 40_000)])
    (mnt / "two").write_text("small")
    write_and_sync(mnt / "one", [(40_000, b"y" * 40_000)])
    assert errno_of(lambda: (mnt / "three").write_text("no room")) == errno.ENOSPC
    assert not (st.upper / "three").exists()  # a failed create leaves no file
    assert not (mnt / "three").exists()
    assert sorted(os.listdir(st.upper)) == ["one", "two"]
    assert errno_of(lambda: os.mkdir(mnt / "dir")) == 0  # only create was named


def test_fsync_fails_every_nth(stack: StackFactory, mounts: Mounts) -> None:
    st = stack({})
    mnt = mounts.unionfs(st, fail=["fsync:EIO:every=5"])
    codes = write_and_sync(mnt / "f", [(i, b"z") for i in range(12)])
    assert [i + 1 for i, c in enumerate(codes) if c] == [5, 10]
    assert {codes[4], codes[9]} == {errno.EIO}


def test_probability_with_a_seed_is_reproducible(stack: StackFactory, mounts: Mounts) -> None:
    """open, not read: the kernel retries a failed page read once, which a rule counts."""
    files = {f"data/f{i:02d}": "d" for i in range(40)} | {f"other/f{i:02d}": "o"
                                                        for i in range(10)}
    st = stack(files)
    rule = "open:EIO:path=data/*:probability=0.3:seed=7"
    mnt = mounts.unionfs(st, fail=[rule])
    failed = [i for i in range(40) if errno_of((mnt / f"data/f{i:02d}").read_text)]
    assert all(errno_of((mnt / f"other/f{i:02d}").read_text) == 0 for i in range(10))
    model = RuleState(parse_rule(rule))
    assert failed == [i for i in range(40) if model.fires("open", f"data/f{i:02d}", 0)]
    assert 0 < len(failed) < 40


def test_bad_rule_is_one_line_and_mounts_nothing(stack: StackFactory) -> None:
    st = stack({"f": "x"})
    res = unionfs_cli("mount", "-o", "fail=write:EIO,read:EWHAT", str(st.lowers[0]),
                      str(st.upper), str(st.mnt))
    assert res.returncode == 2
    assert res.stderr.strip() == ("unionfs: error: fault rule 'read:EWHAT': 'EWHAT' is not an "
                                  "errno name (EIO, ENOSPC...)")
    assert not api.is_mounted(st.mnt)
    assert os.listdir(st.upper) == []


def test_rules_added_listed_and_cleared_live(stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    res = unionfs_cli("fail", str(mnt), "add", "unlink:EACCES:path=f", "rename:EXDEV")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["added rule 1: unlink:EACCES:path=f",
                                       "added rule 2: rename:EXDEV"]
    assert errno_of(lambda: os.unlink(mnt / "f")) == errno.EACCES
    assert errno_of(lambda: os.rename(mnt / "f", mnt / "g")) == errno.EXDEV
    assert os.listdir(st.upper) == []  # neither left a whiteout nor a copy
    listed = unionfs_cli("fail", str(mnt), "list")
    assert listed.stdout.splitlines() == [
        "  1  unlink:EACCES:path=f  (matched 1, injected 1)",
        "  2  rename:EXDEV  (matched 1, injected 1)"]
    bad = unionfs_cli("fail", str(mnt), "add", "unlink:EACCES:when=now")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("unionfs: error: fault rule 'unlink:EACCES:when=now': "
                                  "unknown key 'when'")
    assert unionfs_cli("fail", str(mnt), "clear", "2").stdout.strip() == "removed 1 rule(s)"
    assert [r["id"] for r in api.fault_rules(mnt)["rules"]] == [1]
    assert unionfs_cli("fail", str(mnt), "clear").stdout.strip() == "removed 1 rule(s)"
    os.unlink(mnt / "f")
    assert not (mnt / "f").exists()


@pytest.fixture(params=[[], ["no_extensions"]], ids=["extensions", "plain"])
def delayed_lookup(request: pytest.FixtureRequest, stack: StackFactory,
                   mounts: Mounts) -> Iterator[tuple[Path, threading.Event]]:
    """A mount (with the libfuse extensions, and without) where a lookup of ``slow`` waits
    (60 s, or until the rules are cleared), and a thread already waiting in it; yields
    (mount, set when the thread's stat returned). ``sub`` is looked up before."""
    st = stack({"slow": "s", "fast": "f", "sub/inner": "i"})
    mnt = mounts.unionfs(st, fail=["lookup:delay=60s:path=slow"], extra=request.param)
    os.stat(mnt / "sub")  # its entry is in the kernel's cache from now on
    done = threading.Event()

    def stat_slow() -> None:
        os.stat(mnt / "slow")
        done.set()

    thread = threading.Thread(target=stat_slow, daemon=True)
    thread.start()
    try:
        wait_until(lambda: api.fault_rules(mnt)["delayed"] == 1)
        yield mnt, done
    finally:
        api.clear_fault_rules(mnt)
        thread.join(30)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError("condition not reached")


def test_delay_holds_the_request_not_the_server(
        delayed_lookup: tuple[Path, threading.Event]) -> None:
    """While a lookup waits in its delay, the server answers its control socket; clearing
    the rules lets the waiting request go on at once."""
    mnt, done = delayed_lookup
    assert not done.is_set()
    listed = api.fault_rules(mnt)
    assert listed["rules"][0]["injected"] == 1 and listed["delayed"] == 1
    assert api.clear_fault_rules(mnt) == 1
    assert done.wait(30)


def stat_in_thread(path: Path) -> tuple[threading.Event, list[int]]:
    """``os.stat(path)`` in a thread of its own: (set when it returned, [its thread id])."""
    returned = threading.Event()
    tid: list[int] = []

    def stat() -> None:
        tid.append(threading.get_native_id())
        os.stat(path)
        returned.set()

    threading.Thread(target=stat, daemon=True).start()
    return returned, tid


def kernel_stack(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/stack").read_text()


def test_delay_lets_other_requests_through(
        delayed_lookup: tuple[Path, threading.Event]) -> None:
    """A lookup in another directory is answered while a lookup waits in its delay."""
    mnt, done = delayed_lookup
    returned, _ = stat_in_thread(mnt / "sub" / "inner")
    assert returned.wait(30)
    assert not done.is_set()  # the slow one still waits: the other one went past it


def test_delay_lets_lookups_of_the_same_directory_through(
        delayed_lookup: tuple[Path, threading.Event]) -> None:
    """With the extensions the kernel sends lookups of one directory in parallel (our
    handshake grants FUSE_PARALLEL_DIROPS, which libfuse < 3.17.1 leaves out of its INIT
    reply): a sibling's lookup is answered while the slow one waits. Without them the
    kernel holds the directory's FUSE inode mutex (``fuse_lock_inode``) across each lookup:
    the sibling waits there until the delay ends (libfuse's behaviour, kept on purpose)."""
    mnt, done = delayed_lookup
    features = api.server_stats(mnt)["features"]
    returned, tid = stat_in_thread(mnt / "fast")
    if features:
        assert "parallel_dirops" in features
        assert returned.wait(30)
        assert not done.is_set()
        return
    wait_until(lambda: bool(tid) and "fuse_lock_inode" in kernel_stack(tid[0]))
    assert not returned.is_set() and not done.is_set()
    api.clear_fault_rules(mnt)
    assert done.wait(30) and returned.wait(30)
