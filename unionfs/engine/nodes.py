"""Union inodes: numbers, lookup counts and the parent/name they were last seen under.

An inode lives until the kernel forgets it, not until it is unlinked: an unlinked file that is
still open keeps its node (with ``parent = None``) and is reached through its open fds.

Inode numbers are derived from the underlying file, so they are stable for the life of the
mount and across remounts of the same stack: ``(tag of st_dev + 1) << 48 | st_ino``, where a
copied-up file keeps the number of its origin (recorded in an ``overlay.unionfs.origin`` xattr).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from unionfs.core.merge import Entry

ROOT_ID = 1
_INO_BITS = 48
_FALLBACK_BASE = 0xFFFF << _INO_BITS


class Node:
    """One inode of the union."""

    __slots__ = ("absent_xattrs", "children", "covered", "generation", "handles", "id",
                 "impure", "is_dir", "last_stat", "layers", "lookups", "lower_paths", "merged",
                 "name", "no_xattrs", "orphan_fd", "parent", "sgid_gid", "whiteouts")

    def __init__(self, node_id: int, parent: Node | None, name: bytes, is_dir: bool) -> None:
        self.id = node_id
        self.parent = parent
        self.name = name
        self.is_dir = is_dir
        self.lookups = 0
        self.generation = 0
        self.handles: list[int] = []
        self.last_stat: os.stat_result | None = None  # what an unlinked node last was
        # An O_PATH fd kept of a removed upper directory or special file the kernel still
        # holds (an open dir, a FIFO): fstat, fchmod and fchown of it reach it through this.
        self.orphan_fd: int | None = None
        # xattr names the file was found not to have (the kernel asks for security.capability
        # at every write); only a setxattr through the union can add one.
        self.absent_xattrs: set[bytes] | None = None
        # listxattr found none: every getxattr is ENODATA until a setxattr through the union
        # (ls asks for two of every file it lists long).
        self.no_xattrs = False
        # Directories only, filled when the merged view is first needed:
        self.layers: tuple[int, ...] | None = None  # contributing layers, top down
        self.merged: dict[bytes, Entry] | None = None  # name -> Entry
        self.covered: set[bytes] = set()  # names a lower layer has: removing them needs a whiteout
        self.whiteouts: set[bytes] = set()  # names whited out in the upper
        self.children: dict[bytes, Node] = {}  # child nodes the kernel knows
        # Where a redirected directory's content is in lower layers (layer -> path), for
        # the layers an ``overlay.redirect`` sends elsewhere; None: nowhere redirected.
        self.lower_paths: dict[int, bytes] | None = None
        # The gid new entries inherit from this directory in the upper (-1: it is not
        # set-gid), None until needed; reset whenever its owner or mode may change.
        self.sgid_gid: int | None = None
        # Whether the upper directory is marked impure (entries with an origin may be in
        # it); None until its view is read (unknown: treated as impure).
        self.impure: bool | None = None

    def path(self) -> bytes:
        """The layer-relative path this node was last seen under (b"" for the root)."""
        parent = self.parent
        if parent is None:
            return b""
        if parent.parent is None:  # a child of the root: no list to build
            return self.name
        parts = [self.name]
        while parent.parent is not None:
            parts.append(parent.name)
            parent = parent.parent
        parts.reverse()
        return b"/".join(parts)

    def entry(self) -> Entry | None:
        """This node's entry in its parent's merged view (None for the root or an orphan)."""
        parent = self.parent
        if parent is None or parent.merged is None:
            return None
        return parent.merged.get(self.name)

    def detach(self, last_stat: os.stat_result | None = None) -> None:
        """Unlinked: no longer reachable by name, alive while the kernel or a handle holds it."""
        if last_stat is not None:
            self.last_stat = last_stat
        parent = self.parent
        if parent is not None and parent.children.get(self.name) is self:
            del parent.children[self.name]
        self.parent = None

    def release_orphan(self) -> None:
        """Close the fd kept of this node's removed file, if any."""
        if self.orphan_fd is not None:
            os.close(self.orphan_fd)
            self.orphan_fd = None

    def __repr__(self) -> str:
        return f"Node({self.id:#x}, {self.path()!r})"


@dataclass
class InodeNumbers:
    """Maps (st_dev, st_ino) of underlying files to union inode numbers."""

    tags: dict[int, int] = field(default_factory=dict)
    fallback: dict[tuple[int, int], int] = field(default_factory=dict)

    def of(self, st: os.stat_result) -> int:
        return self.of_ino(st.st_dev, st.st_ino)

    def of_ino(self, dev: int, ino: int) -> int:
        """The number of the file ``ino`` of device ``dev`` (what :meth:`of` gives its stat)."""
        tag = self.tags.get(dev)
        if tag is None:
            tag = self.tags[dev] = len(self.tags)
        if ino < 1 << _INO_BITS and tag < 0xFFFE:
            return ((tag + 1) << _INO_BITS) | ino
        key = (dev, ino)
        number = self.fallback.get(key)
        if number is None:
            number = self.fallback[key] = _FALLBACK_BASE | len(self.fallback)
        return number


class NodeTable:
    """The nodes the kernel holds, by inode number."""

    def __init__(self, root: Node) -> None:
        self.nodes: dict[int, Node] = {ROOT_ID: root}
        self.root = root

    def get(self, node_id: int) -> Node | None:
        return self.nodes.get(node_id)

    def adopt(self, node: Node, parent: Node, name: bytes) -> Node:
        """Register ``node`` as known to the kernel under ``parent/name``."""
        node.parent = parent
        node.name = name
        parent.children[name] = node
        self.nodes[node.id] = node
        return node

    def forget(self, node_id: int, count: int) -> None:
        node = self.nodes.get(node_id)
        if node is None or node is self.root:
            return
        node.lookups -= count
        if node.lookups <= 0 and not node.handles:
            self.drop(node)

    def drop(self, node: Node) -> None:
        del self.nodes[node.id]
        node.release_orphan()
        parent = node.parent
        if parent is not None and parent.children.get(node.name) is node:
            del parent.children[node.name]
