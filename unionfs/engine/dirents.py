"""Names-only listings: what a plain READDIR answers, without an lstat per entry.

The kernel asks for a listing without attributes (READDIR, not READDIRPLUS) when its
readdirplus heuristic says the caller does not stat the entries (``ls -U``, ``find``
without ``-type``, shell globs). Such an answer needs each name's inode number and file type
only, and both are in the layer directories themselves: the pass that read a directory's
merged view kept them in its entries (no system call at all for a listing). A name that
the union changed since (made, renamed, copied up) gets an ``lstat``; where there are many,
the layer directory is read again (:meth:`Layer.dirents`: one ``getdents`` pass).

The inode number of an entry is the one a lookup of it would give (the node's, when the
kernel holds one; otherwise derived from the layer file as :mod:`unionfs.engine.nodes`
says, a copy-up keeping its origin's: read from its xattr only in an upper directory marked
impure).
"""

from __future__ import annotations

import functools
import stat

from unionfs.core.merge import Entry, unpack_dirent
from unionfs.core.paths import join
from unionfs.engine.nodes import Node
from unionfs.engine.union import NewEntry, Union
from unionfs.layers import ondisk

Scan = dict[bytes, tuple[int, int]]
"""One layer directory's dirents: name -> (inode number in that layer, DT_* type)."""

DT_DIR = stat.S_IFDIR >> 12
RESCAN_AFTER = 8  # names of one layer not known from the view: lstat each, then read it all


class NameLister:
    """Inode numbers and types of the entries of one directory, for one listing."""

    def __init__(self, union: Union, parent: Node) -> None:
        self.union = union
        self.parent = parent
        self.devs = [layer.dev for layer in union.layers]
        union.merged(parent)  # built already when a listing starts: it knows the marker
        # Upper files not made by this mount may be copy-ups, numbered by their origin,
        # unless the directory is known to hold none (not marked impure).
        self.origins = union.ns if union.writable and union.may_hold_origins(parent) else None
        self.misses: dict[int, int] = {}  # per layer: names the view's dirents did not know
        self.scans: dict[int, Scan] = {}

    def dirent(self, name: bytes, entry: Entry) -> tuple[int, int] | None:
        """(inode number, DT_* type) of ``name`` in the directory; None once it is gone."""
        parent = self.parent
        index = entry.layer
        found = unpack_dirent(entry.dirent, index)
        if found is None:
            found = self._rescanned(index, name)
            if found is None:
                return self._from_lstat(name, entry)
        ino, kind = found
        node = parent.children.get(name)
        if node is not None and self.union.table.nodes.get(node.id) is node:
            return node.id, kind
        if index == 0 and self.origins is not None and type(entry) is not NewEntry:
            origin = self._origin(name)
            if origin is not None:
                return origin, kind
        return self.union.numbers.of_ino(self.devs[index], ino), kind

    def _rescanned(self, index: int, name: bytes) -> tuple[int, int] | None:
        """``name``'s dirent from layer ``index`` read now, once enough of its names were
        not known from the view (made, renamed or copied up since): None until then."""
        scan = self.scans.get(index)
        if scan is None:
            misses = self.misses[index] = self.misses.get(index, 0) + 1
            if misses < RESCAN_AFTER:
                return None
            union = self.union
            scan = self.scans[index] = union.layers[index].dirents(
                union.dir_path(self.parent, index))
        return scan.get(name)

    def _origin(self, name: bytes) -> int | None:
        assert self.origins is not None
        path = join(self.parent.path(), name)
        try:
            return ondisk.origin(functools.partial(self.union.layers[0].getxattr, path),
                                 self.origins)
        except ValueError:
            return None  # the lookup logs it

    def _from_lstat(self, name: bytes, entry: Entry) -> tuple[int, int] | None:
        """A name the scan does not show as it is now: ask the layer, as a lookup would."""
        union = self.union
        parent = self.parent
        layer = union.layers[entry.layer]
        try:
            st = layer.lstat(union.dir_path(parent, entry.layer), name)
        except FileNotFoundError:
            return None
        node = parent.children.get(name)
        if node is not None and union.table.nodes.get(node.id) is node:
            number = node.id
        elif type(entry) is NewEntry:
            number = union.numbers.of(st)
        else:
            number = union._number(layer, parent, name, st)
        return number, stat.S_IFMT(st.st_mode) >> 12


def dot_number(node: Node, name: bytes) -> int:
    """The inode number of ``.`` or ``..`` in directory ``node``."""
    if name == b"..":
        return (node.parent or node).id
    return node.id
