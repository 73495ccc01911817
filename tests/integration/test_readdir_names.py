"""Listings that need only names: plain READDIR, answered without an lstat per entry.

With FUSE_CAP_READDIRPLUS_AUTO the kernel asks for attributes (READDIRPLUS) only for the
first chunk of a listing and when the caller looks entries up; a caller that only reads
names (``ls -U``, ``os.scandir`` without stat) gets the rest by plain READDIR. Its answer
must carry the inode number a stat gives and the right file type.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Mounts, Stack
from unionfs.api import server_stats

StackFactory = Callable[..., Stack]
MANY = 1500  # names per layer: listings of several chunks


def requests(mnt: Path, name: str) -> int:
    return int(server_stats(mnt)["requests"].get(name, 0))


def names_only(path: Path) -> dict[str, tuple[int, int]]:
    """What a names-only listing shows: name -> (d_ino, file type bits), no stat."""
    found = {}
    with os.scandir(path) as it:
        for e in it:
            kind = (stat.S_IFDIR if e.is_dir(follow_symlinks=False) else
                    stat.S_IFLNK if e.is_symlink() else
                    stat.S_IFREG if e.is_file(follow_symlinks=False) else 0)
            found[e.name] = (e.inode(), kind)
    return found


def assert_matches_stat(path: Path, listing: dict[str, tuple[int, int]]) -> None:
    for name, (ino, kind) in listing.items():
        st = os.lstat(path / name)
        assert ino == st.st_ino, name
        expected = stat.S_IFMT(st.st_mode)
        assert kind == (expected if expected in (stat.S_IFDIR, stat.S_IFLNK, stat.S_IFREG)
                        else 0), name


def big_stack(stack: StackFactory) -> Stack:
    top: dict[str, object] = {f"d/a{i:04d}": "a" for i in range(MANY)}
    top.update({"d/sub/": None, "d/link": ("symlink", "a0000"), "d/hidden": ("whiteout",)})
    bottom: dict[str, object] = {f"d/b{i:04d}": "b" for i in range(MANY)}
    bottom.update({"d/hidden": "gone", "d/a0001": "covered", "d/sub/inner": "x"})
    upper: dict[str, object] = {f"d/u{i:04d}": "u" for i in range(MANY)}
    return stack(top, bottom, upper=upper)


def expected_names() -> set[str]:
    names = {f"{p}{i:04d}" for p in "abu" for i in range(MANY)}
    return names | {"sub", "link"}


def test_names_only_listing_is_served_without_lookups(stack: StackFactory,
                                                      mounts: Mounts) -> None:
    st = big_stack(stack)
    mnt = mounts.unionfs(st)
    os.mkfifo(mnt / "d" / "fifo")
    lookups = requests(mnt, "lookup")
    listing = names_only(mnt / "d")
    assert set(listing) == expected_names() | {"fifo"}
    assert requests(mnt, "readdir_names") > 0, server_stats(mnt)
    assert requests(mnt, "lookup") == lookups, "a names-only listing looked entries up"
    assert listing["sub"][1] == stat.S_IFDIR
    assert listing["link"][1] == stat.S_IFLNK
    assert listing["fifo"][1] == 0  # neither file, dir nor link: a FIFO
    assert_matches_stat(mnt / "d", listing)


def test_inode_numbers_follow_changes(stack: StackFactory, mounts: Mounts) -> None:
    """Copy-ups keep their number, new and renamed files show theirs, removed ones go."""
    st = big_stack(stack)
    mnt = mounts.unionfs(st)
    d = mnt / "d"
    before = names_only(d)
    with open(d / "b0007", "a") as f:  # a copy-up keeps its inode number
        f.write("more")
    (d / "b0008").rename(d / "moved")  # a copy-up under a new name
    (d / "a0009").unlink()
    (d / "new").write_text("n")
    os.mkdir(d / "newdir")
    after = names_only(d)
    assert after["b0007"][0] == before["b0007"][0]
    assert after["moved"][0] == before["b0008"][0]
    assert "a0009" not in after and "b0008" not in after
    assert after["newdir"][1] == stat.S_IFDIR
    assert set(after) == (expected_names() - {"a0009", "b0008"}) | {"moved", "new", "newdir"}
    assert_matches_stat(d, after)


def test_names_only_listing_after_remount_keeps_copy_up_numbers(
        stack: StackFactory, mounts: Mounts) -> None:
    """A copy-up made by an earlier mount is numbered by its origin (an xattr of the upper
    file) in a names-only listing too."""
    st = big_stack(stack)
    mnt = mounts.unionfs(st)
    with open(mnt / "d" / "b0003", "a") as f:
        f.write("more")
    number = os.lstat(mnt / "d" / "b0003").st_ino
    mounts.unmount(mnt)
    mnt = mounts.unionfs(st)
    listing = names_only(mnt / "d")
    assert listing["b0003"][0] == number
    assert_matches_stat(mnt / "d", listing)


def test_without_extensions_listings_are_whole(stack: StackFactory, mounts: Mounts) -> None:
    """-o no_extensions: pyfuse3's READDIRPLUS alone answers every listing."""
    st = big_stack(stack)
    mnt = mounts.unionfs(st, extra=["no_extensions"])
    listing = names_only(mnt / "d")
    assert set(listing) == expected_names()
    assert requests(mnt, "readdir_names") == 0
    assert_matches_stat(mnt / "d", listing)


def test_copy_ups_keep_their_numbers_in_listings_across_remounts(stack: StackFactory,
                                                                  mounts: Mounts) -> None:
    """Copy-ups (also moved and linked into other directories) list the inode number a
    stat gives, before and after a remount, and after a remount of an upper written before
    the impure markers (marks and format record removed: it is walked and marked again)."""
    st = stack({f"d/f{i}": str(i) for i in range(40)} | {"e/": None})
    mnt = mounts.unionfs(st)
    for i in range(0, 40, 4):
        with open(mnt / f"d/f{i}", "a") as f:  # copy-up
            f.write("+")
    os.mkdir(mnt / "moved")
    os.rename(mnt / "d/f0", mnt / "moved/f0")
    os.link(mnt / "d/f4", mnt / "e/linked")
    before = {d: names_only(mnt / d) for d in ("d", "e", "moved")}
    for d, listing in before.items():
        assert_matches_stat(mnt / d, listing)
    mounts.unmount(mnt)
    for legacy in (False, True):
        if legacy:  # as an older unionfs left it
            for d in ("", "d", "e", "moved"):
                with contextlib.suppress(OSError):
                    os.removexattr(st.upper / d, "trusted.overlay.unionfs.impure")
            (st.work / "unionfs-tmp" / "upper-format").unlink()
        mnt = mounts.unionfs(st)
        for d, listing in before.items():
            assert names_only(mnt / d) == listing, d
            assert_matches_stat(mnt / d, listing)
        mounts.unmount(mnt)
