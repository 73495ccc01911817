"""The engine's changes called directly on real directories, without a kernel mount.

Each test drives ``Changes`` (what ``fuse/ops.py`` calls) over a lower and an upper, then
checks the answer, the upper on disk, and what a new ``Union`` over the same directories
sees (a remount): the plans of ``unionfs/core`` executed for real.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_tree
from unionfs.core.rename import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT
from unionfs.core.whiteout import TRUSTED
from unionfs.engine.changes import Caller, Changes
from unionfs.engine.nodes import Node
from unionfs.engine.union import StackConfig, Union

ROOT = Caller(0, 0)
LOWER = {"f": "lower f", "g": "lower g", "d/a": "a", "d/sub/b": "b", "e/": None,
         "full/x": "x"}


class Stack:
    def __init__(self, base: Path, redirect_dir: bool = True) -> None:
        self.lower = make_tree(base / "lower", LOWER)
        self.upper = make_tree(base / "upper", {})
        self.work = base / "work"
        self.redirect_dir = redirect_dir
        self.unions: list[Union] = []

    def union(self) -> Union:
        u = Union(StackConfig([str(self.lower)], str(self.upper), str(self.work), TRUSTED,
                              redirect_dir=self.redirect_dir))
        self.unions.append(u)
        return u

    def tree(self) -> dict[str, str]:
        """The merged tree a new union (a remount) shows: path -> "dir" or file content."""
        u = self.union()
        return dict(_walk(u, u.root, ""))


def _walk(u: Union, node: Node, prefix: str) -> Iterator[tuple[str, str]]:
    for name, entry in u.listing(node):
        path = prefix + name.decode()
        child = u.view_of(node, name)
        if entry.is_dir:
            yield path + "/", "dir"
            yield from _walk(u, child, path + "/")
        else:
            layer = u.layers[entry.layer]
            fd = layer.open(u.path_in(child, entry.layer), os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                yield path, f.read().decode()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    for u in s.unions:
        u.close()


def node(u: Union, parent: Node, name: str) -> Node:
    found = u.lookup(parent, name.encode())
    assert found is not None
    found[0].lookups += 1  # as the kernel holds it
    return found[0]


def errno_of(call: object, *args: object) -> int | None:
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno
    return None


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_unlink_of_a_lower_file_leaves_a_whiteout(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    c.unlink(u.root, b"f")
    assert u.lookup(u.root, b"f") is None
    assert is_whiteout(stack.upper / "f")
    assert errno_of(c.unlink, u.root, b"f") == errno.ENOENT  # nothing more to delete
    assert is_whiteout(stack.upper / "f")
    assert "f" not in stack.tree()


def test_a_new_file_over_a_whiteout_replaces_it(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    c.unlink(u.root, b"f")
    fd, _, _ = c.create(u.root, b"f", 0o644, os.O_WRONLY, ROOT)
    os.write(fd, b"new")
    os.close(fd)
    assert stat.S_ISREG(os.lstat(stack.upper / "f").st_mode)
    assert stack.tree()["f"] == "new"
    assert u.work is not None and u.work.clean() == 0  # nothing left in the work dir


def test_a_directory_over_a_whiteout_is_opaque(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    d = node(u, u.root, "d")
    c.unlink(d, b"a")
    c.unlink(node(u, d, "sub"), b"b")
    c.rmdir(d, b"sub")
    c.rmdir(u.root, b"d")
    c.mkdir(u.root, b"d", 0o755, ROOT)
    assert os.getxattr(stack.upper / "d", TRUSTED.opaque) == b"y"
    assert u.merged(node(u, u.root, "d")) == {}
    tree = stack.tree()
    assert tree["d/"] == "dir" and not [p for p in tree if p.startswith("d/") and p != "d/"]


def test_rmdir_rules(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    assert errno_of(c.rmdir, u.root, b"full") == errno.ENOTEMPTY
    assert errno_of(c.rmdir, u.root, b"f") == errno.ENOTDIR
    assert errno_of(c.unlink, u.root, b"e") == errno.EISDIR
    assert errno_of(c.rmdir, u.root, b"none") == errno.ENOENT
    c.mkdir(u.root, b"new", 0o755, ROOT)
    c.rmdir(u.root, b"new")  # only in the upper: gone, no whiteout
    assert not os.path.lexists(stack.upper / "new")
    c.rmdir(u.root, b"e")  # a lower directory: whited out
    assert is_whiteout(stack.upper / "e")
    assert "e/" not in stack.tree()


def test_rename_errnos(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    cases = {
        (b"f", b"none", RENAME_EXCHANGE): errno.ENOENT,
        (b"f", b"g", RENAME_NOREPLACE): errno.EEXIST,
        (b"f", b"h", RENAME_WHITEOUT): errno.EINVAL,
        (b"e", b"full", 0): errno.ENOTEMPTY,
        (b"e", b"f", 0): errno.ENOTDIR,
        (b"f", b"e", 0): errno.EISDIR,
        (b"none", b"h", 0): errno.ENOENT,
        (b"f", b".wh.h", 0): errno.EINVAL,
    }
    got = {case: errno_of(c.rename, u.root, case[0], u.root, case[1], case[2])
           for case in cases}
    assert got == cases
    assert os.listdir(stack.upper) == []  # a refused rename changes nothing


def test_renaming_a_lower_file_leaves_a_whiteout_behind(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    c.unlink(u.root, b"g")  # the target name is a whiteout now
    c.rename(u.root, b"f", u.root, b"g", 0)
    assert is_whiteout(stack.upper / "f")
    assert (stack.upper / "g").read_text() == "lower f"
    tree = stack.tree()
    assert "f" not in tree and tree["g"] == "lower f"


def test_renaming_a_lower_directory_sets_a_redirect(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    c.rename(u.root, b"d", u.root, b"moved", 0)
    assert os.getxattr(stack.upper / "moved", TRUSTED.redirect) == b"d"
    assert not (stack.upper / "moved" / "a").exists()  # O(1): the content stays below
    assert is_whiteout(stack.upper / "d")
    tree = stack.tree()
    assert tree["moved/a"] == "a" and tree["moved/sub/b"] == "b"
    assert not [p for p in tree if p.startswith("d/")]


def test_renaming_a_lower_directory_without_redirects_copies_the_tree(tmp_path: Path) -> None:
    stack = Stack(tmp_path, redirect_dir=False)
    try:
        u = stack.union()
        c = Changes(u)
        c.rename(u.root, b"d", u.root, b"moved", 0)
        assert (stack.upper / "moved" / "sub" / "b").read_text() == "b"
        assert os.getxattr(stack.upper / "moved", TRUSTED.opaque) == b"y"
        with pytest.raises(OSError):
            os.getxattr(stack.upper / "moved", TRUSTED.redirect)
        tree = stack.tree()
        assert tree["moved/a"] == "a" and tree["moved/sub/b"] == "b"
    finally:
        for un in stack.unions:
            un.close()


def test_exchange_swaps_a_lower_file_and_a_lower_directory(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    c.rename(u.root, b"f", u.root, b"d", RENAME_EXCHANGE)
    tree = stack.tree()
    assert tree["d"] == "lower f"
    assert tree["f/"] == "dir" and tree["f/a"] == "a"


def test_names_and_devices_the_upper_cannot_hold(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    assert errno_of(c.mknod, u.root, b"w", stat.S_IFCHR | 0o600, 0, ROOT) == errno.EPERM
    assert errno_of(c.mkdir, u.root, b".wh.x", 0o755, ROOT) == errno.EINVAL
    assert errno_of(c.mkdir, u.root, b"x" * 256, 0o755, ROOT) == errno.ENAMETOOLONG
    assert errno_of(c.mkdir, u.root, b"f", 0o755, ROOT) == errno.EEXIST
    assert errno_of(c.link, node(u, u.root, "d"), u.root, b"l") == errno.EPERM
    assert os.listdir(stack.upper) == []


def test_merged_directories_report_one_link(stack: Stack) -> None:
    u = stack.union()
    c = Changes(u)
    d = node(u, u.root, "d")
    st = u.stat(d)
    assert u.dir_nlink(d, st) == st.st_nlink  # one layer: its own count
    c.mkdir(d, b"new", 0o755, ROOT)  # copies d up: now merged from two layers
    assert u.dir_nlink(d, u.stat(d)) == 1
