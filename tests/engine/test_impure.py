"""Impure markers: an upper directory is marked before an entry with an origin appears in it
(copy-up, rename or link from elsewhere, lower hard links), so an unmarked one is listed
and looked up without an origin read per entry; an upper without a format record (from
before the markers) is walked and marked once, and its numbers stay what they were."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs.core.whiteout import TRUSTED, USER, XattrNamespace
from unionfs.engine.changes import Caller, Changes
from unionfs.engine.dirents import NameLister
from unionfs.engine.nodes import Node
from unionfs.engine.union import StackConfig, Union
from unionfs.layers import ondisk

ROOT = Caller(0, 0)


def stack(tmp_path: Path) -> Path:
    """lower: d/{low,low2,linked}, e/ and linked's second name e/alias; upper: d/, e/, f/
    with files of their own (a seed: not made by the mount)."""
    lower = tmp_path / "lower"
    for d in ("d", "e"):
        (lower / d).mkdir(parents=True)
    for name in ("low", "low2", "linked"):
        (lower / "d" / name).write_text(name)
    os.link(lower / "d/linked", lower / "e/alias")
    for d in ("d", "e", "f"):
        (tmp_path / "upper" / d).mkdir(parents=True)
        (tmp_path / "upper" / d / "seed").write_text("seed")
    return tmp_path


def mount(tmp_path: Path, ns: XattrNamespace = TRUSTED) -> Union:
    return Union(StackConfig([str(tmp_path / "lower")], str(tmp_path / "upper"),
                             str(tmp_path / "work"), ns))


@pytest.fixture
def union(tmp_path: Path) -> Iterator[Union]:
    u = mount(stack(tmp_path))
    yield u
    u.close()


def node(u: Union, path: bytes) -> Node:
    current = u.root
    for part in path.split(b"/"):
        found = u.lookup(current, part)
        assert found is not None, part
        current = found[0]
        current.lookups += 1
    return current


def marked(tmp_path: Path, ns: XattrNamespace = TRUSTED) -> set[str]:
    """The upper directories that carry the impure marker."""
    upper = tmp_path / "upper"
    found = set()
    for d in [upper, *(p for p in upper.rglob("*") if p.is_dir())]:
        get = lambda name, d=d: _get(d, name)  # noqa: E731
        if ondisk.is_impure(get, ns):
            found.add(str(d.relative_to(upper)))
    return found


def _get(path: Path, name: bytes) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def listed(u: Union, parent: Node) -> dict[bytes, int]:
    """The inode numbers a names-only listing gives."""
    lister = NameLister(u, parent)
    out = {}
    for name, entry in u.merged(parent).items():
        found = lister.dirent(name, entry)
        assert found is not None
        out[name] = found[0]
    return out


def test_a_fresh_upper_gets_a_format_record_and_no_marks(union: Union, tmp_path: Path
                                                          ) -> None:
    assert union.impure_kept
    record = (tmp_path / "work/unionfs-tmp" / os.fsdecode(ondisk.FORMAT_RECORD)).read_bytes()
    assert record == ondisk.format_record(os.stat(tmp_path / "upper"), TRUSTED)
    assert marked(tmp_path) == set()
    assert union.work is not None and union.work.clean() == 0  # the record is no leftover
    assert ondisk.read_format_record(union.work.fd) == record


def test_copy_up_rename_and_link_mark_the_directory_first(union: Union, tmp_path: Path
                                                          ) -> None:
    c = Changes(union)
    d, e, f = node(union, b"d"), node(union, b"e"), node(union, b"f")
    fd, _, _ = c.create(f, b"new", 0o644, os.O_RDWR, ROOT)
    os.close(fd)
    c.rename(f, b"new", e, b"new-moved", 0)  # made here: no origin, no mark
    c.rename(f, b"seed", e, b"seed-moved", 0)  # f is known unmarked: no origin
    assert marked(tmp_path) == set()
    union.copy_up(node(union, b"d/low"))
    assert marked(tmp_path) == {"d"}
    c.rename(d, b"low", f, b"low-moved", 0)  # a copy-up moves to f
    assert marked(tmp_path) == {"d", "f"}
    c.link(node(union, b"d/low2"), union.root, b"hard")  # copied up, then linked into /
    assert marked(tmp_path) == {"d", "f", "."}


def test_lower_hard_links_mark_their_directories(union: Union, tmp_path: Path) -> None:
    union.copy_up(node(union, b"d/linked"))
    assert os.stat(tmp_path / "upper/e/alias").st_ino == os.stat(
        tmp_path / "upper/d/linked").st_ino
    assert marked(tmp_path) == {"d", "e"}


def test_unmarked_directories_cost_no_origin_read(union: Union,
                                                  xattr_reads: list[bytes]) -> None:
    union.copy_up(node(union, b"d/low"))
    xattr_reads.clear()
    e, d = node(union, b"e"), node(union, b"d")
    listed(union, e)
    node(union, b"e/seed")
    assert xattr_reads == []
    listed(union, d)
    assert xattr_reads == [b"d/seed"]  # low is a node the kernel holds: its number is known


@pytest.mark.parametrize("ns", [TRUSTED, USER], ids=["trusted", "user"])
def test_an_upper_from_before_the_markers_is_walked_and_keeps_its_numbers(
        tmp_path: Path, ns: XattrNamespace) -> None:
    stack(tmp_path)
    old = mount(tmp_path, ns)
    numbers = {}
    for path in (b"d/low", b"e/alias"):
        old.copy_up(node(old, path))
        numbers[path] = node(old, path).id
    old.close()
    # As an older unionfs left it: copy-ups with origins, no marks, no record.
    for d in ("d", "e"):
        os.removexattr(tmp_path / "upper" / d, ns.impure)
    assert marked(tmp_path, ns) == set()
    (tmp_path / "work/unionfs-tmp" / os.fsdecode(ondisk.FORMAT_RECORD)).unlink()
    u = mount(tmp_path, ns)
    try:
        assert u.impure_kept
        assert marked(tmp_path, ns) == {"d", "e"}
        for path, number in numbers.items():
            parent, _, name = path.rpartition(b"/")
            assert listed(u, node(u, parent))[name] == number
            assert node(u, path).id == number
    finally:
        u.close()


def test_a_record_of_another_upper_is_not_trusted(tmp_path: Path) -> None:
    stack(tmp_path)
    u = mount(tmp_path)
    u.copy_up(node(u, b"d/low"))
    number = node(u, b"d/low").id
    u.close()
    os.removexattr(tmp_path / "upper/d", TRUSTED.impure)
    os.rename(tmp_path / "upper", tmp_path / "old-upper")  # same work dir, another upper
    os.mkdir(tmp_path / "upper")
    os.rename(tmp_path / "old-upper/d", tmp_path / "upper/d")
    u = mount(tmp_path)
    try:
        assert marked(tmp_path) == {"d"}
        assert listed(u, node(u, b"d"))[b"low"] == number
    finally:
        u.close()


def test_a_directory_that_cannot_be_marked_turns_the_markers_off(
        union: Union, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(target: object, ns: XattrNamespace) -> None:
        raise PermissionError(1, "refused")

    monkeypatch.setattr(ondisk, "mark_impure", refuse)
    union.copy_up(node(union, b"d/low"))
    assert not union.impure_kept
    assert union.work is not None and ondisk.read_format_record(union.work.fd) is None
    number = node(union, b"d/low").id
    monkeypatch.undo()
    u = mount(tmp_path)  # no record: walked and marked
    try:
        assert u.impure_kept
        assert marked(tmp_path) == {"d"}
        assert listed(u, node(u, b"d"))[b"low"] == number
    finally:
        u.close()


def test_a_walk_that_takes_too_long_leaves_the_markers_off(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    stack(tmp_path)
    monkeypatch.setattr("unionfs.engine.union.UPGRADE_SECONDS", -1.0)
    u = mount(tmp_path)
    try:
        assert not u.impure_kept  # every origin is read: right, only slower
        assert u.work is not None and ondisk.read_format_record(u.work.fd) is None
    finally:
        u.close()
