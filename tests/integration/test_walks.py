"""Walks of a tree (find, ls -lR): what a directory's lookup and listing ask of the layers.

- A lookup of a directory whose view is not built reads its layers in a worker thread
  (``engine/slow.py: child_view``): other requests are answered while it waits.
- A listing reads its subdirectories ahead (``engine/ahead.py``); the lookups that follow
  take those views, which still follow every change made through the union.
- The first READDIRPLUS of a listing answers "." and ".." and the first entry without a
  leading dot: a caller that stats what it reads (``ls -l``) gets the rest with attributes
  (no lookup per entry).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Mounts, Stack
from tests.integration.test_cli import wait_until
from tests.integration.test_concurrency import Hold, holding, quick, started
from unionfs.api import server_stats

StackFactory = Callable[..., Stack]
SUBDIRS = 30


def requests(mnt: Path, name: str) -> int:
    return int(server_stats(mnt)["requests"].get(name, 0))


def read_ahead(mnt: Path) -> dict[str, int]:
    return dict(server_stats(mnt)["read_ahead"])


def test_a_cold_directory_lookup_waits_in_a_worker_thread(stack: StackFactory, mounts: Mounts,
                                                          tmp_path: Path) -> None:
    st = stack({"tree/a": "a", "tree/sub/b": "b", **{f"other/f{i}": str(i) for i in range(20)}},
               {"tree/sub/c": "c"})
    env = holding(tmp_path)
    mnt = mounts.unionfs(st, env=env)
    assert quick("ls", str(mnt / "other")).split() == sorted(f"f{i}" for i in range(20))
    os.stat(mnt / "tree")  # built before the hold: only tree/sub's lookup is held
    hold = Hold(Path(env["UNIONFS_TEST_HOLD"]), "view")
    with started(["stat", "-c", "%F", str(mnt / "tree" / "sub")]) as looking:
        assert hold.wait_held() == "view"
        assert looking.poll() is None  # held in the worker thread, the stat waits
        # Meanwhile the trio thread answers everything else.
        assert quick("stat", "-c", "%s", str(mnt / "other" / "f7")).strip() == "1"
        assert quick("cat", str(mnt / "tree" / "a")) == "a"
        hold.release()
        out, _ = looking.communicate(timeout=30)
        assert looking.returncode == 0 and out.strip() == "directory"
    assert sorted(os.listdir(mnt / "tree" / "sub")) == ["b", "c"]


def subdir_stack(stack: StackFactory) -> Stack:
    top: dict[str, object] = {f"d/s{i:02d}/x": "x" for i in range(SUBDIRS)}
    bottom: dict[str, object] = {f"d/s{i:02d}/y": "y" for i in range(SUBDIRS)}
    top["d/file"] = "f"
    return stack(top, bottom, upper={"d/s00/u": "u"})


def test_subdirectories_of_a_listing_are_read_ahead_and_follow_changes(
        stack: StackFactory, mounts: Mounts) -> None:
    st = subdir_stack(stack)
    mnt = mounts.unionfs(st)
    d = mnt / "d"
    assert len(os.listdir(d)) == SUBDIRS + 1
    # (The listing's first entry, if a directory, came with attributes: its view is built.)
    assert wait_until(lambda: read_ahead(mnt)["read"] >= SUBDIRS - 1), read_ahead(mnt)
    # Changes after the read-ahead, each in a directory not looked up before it.
    (d / "s01" / "new").write_text("n")
    os.unlink(d / "s02" / "y")  # a whiteout in a copied-up directory
    os.rename(d / "s04" / "x", d / "s05" / "x2")
    expected = {f"s{i:02d}": {"x", "y"} for i in range(SUBDIRS)}
    expected.update({"s00": {"x", "y", "u"}, "s01": {"x", "y", "new"}, "s02": {"x"},
                     "s04": {"y"}, "s05": {"x", "y", "x2"}})
    for name, names in expected.items():
        assert set(os.listdir(d / name)) == names, name
    counts = read_ahead(mnt)
    assert counts["used"] == counts["read"] >= SUBDIRS - 1, counts
    # A merged directory renamed (a redirect: paths below may differ from the union's
    # from now on, and views are read on the trio thread), another made in its place.
    os.rename(d / "s03", d / "moved")
    os.mkdir(d / "s03")
    expected.update({"s03": set(), "moved": {"x", "y"}})
    for name, names in expected.items():
        assert set(os.listdir(d / name)) == names, name
    # The same through a remount: what the changes left in the upper.
    mounts.unmount(mnt)
    mnt = mounts.unionfs(st)
    for name, names in expected.items():
        assert set(os.listdir(mnt / "d" / name)) == names, name


def test_a_long_listing_gets_attributes_with_the_listing(stack: StackFactory,
                                                         mounts: Mounts) -> None:
    st = stack({f"d/f{i:03d}": str(i) for i in range(200)}, {"d/.hidden": "h"})
    mnt = mounts.unionfs(st)
    os.stat(mnt / "d")
    lookups = requests(mnt, "lookup")
    out = subprocess.run(["ls", "-l", str(mnt / "d")], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert len(out.splitlines()) == 201  # "total" and 200 files
    # ls stats each entry as it reads it: the kernel sees the first one's attributes used
    # and asks READDIRPLUS for the rest, so the entries need no lookup of their own.
    assert requests(mnt, "lookup") - lookups < 10, server_stats(mnt)["requests"]


def test_a_names_only_walk_looks_up_directories_only(stack: StackFactory,
                                                     mounts: Mounts) -> None:
    st = subdir_stack(stack)
    mnt = mounts.unionfs(st)
    lookups = requests(mnt, "lookup")
    found = subprocess.run(["find", str(mnt / "d")], capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    assert len(found) == 1 + 1 + SUBDIRS * 3 + 1  # d, d/file, s*/{,x,y}, s00/u
    # One lookup per directory (d and its subdirectories, but for one that came with the
    # attributes of its listing's first answer), none of the 61 files.
    assert SUBDIRS <= requests(mnt, "lookup") - lookups <= 1 + SUBDIRS

