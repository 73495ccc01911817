"""Inode numbers of upper files when the kernel forgets their nodes and looks them up again."""

from __future__ import annotations

import os
from pathlib import Path

from unionfs.core.whiteout import TRUSTED
from unionfs.engine.changes import Caller, Changes
from unionfs.engine.nodes import Node
from unionfs.engine.union import StackConfig, Union


def make_union(tmp_path: Path) -> Union:
    (tmp_path / "lower/d").mkdir(parents=True)
    for name in ("low", "low2"):
        (tmp_path / "lower/d" / name).write_text(name)
    (tmp_path / "upper").mkdir()
    return Union(StackConfig([str(tmp_path / "lower")], str(tmp_path / "upper"),
                             str(tmp_path / "work"), TRUSTED))


def known(u: Union, parent: Node, name: bytes) -> Node:
    found = u.lookup(parent, name)
    assert found is not None
    found[0].lookups += 1
    return found[0]


def test_numbers_after_forget(tmp_path: Path, xattr_reads: list[bytes]) -> None:
    """New files (also renamed) are numbered without reading an origin xattr; copied-up
    files and new links read it; every number stays what it was."""
    u = make_union(tmp_path)
    c = Changes(u)
    d = known(u, u.root, b"d")
    for name in (b"new", b"moved"):
        fd, node, _ = c.create(d, name, 0o644, os.O_RDWR, Caller(0, 0))
        os.close(fd)
        node.lookups += 1
    c.rename(d, b"moved", d, b"there", 0)
    low, low2 = known(u, d, b"low"), known(u, d, b"low2")
    c.link(low2, d, b"link")
    u.copy_up(low)
    c.rename(d, b"low", d, b"low-moved", 0)
    names = (b"low-moved", b"link", b"new", b"there")
    before = {n: known(u, d, n).id for n in names}
    for node in {d.children[n] for n in names}:
        u.table.forget(node.id, node.lookups)
    assert not set(names) & set(d.children)
    xattr_reads.clear()
    assert {n: known(u, d, n).id for n in names} == before
    assert sorted(xattr_reads) == [b"d/link", b"d/low-moved"]
    u.close()
