"""A layer's changeset as data: one :class:`Node` per path, read from a directory.

A layer directory may use any whiteout/opaque encoding people have on disk (kernel overlayfs
char 0/0 and ``overlay.opaque`` xattrs, OCI ``.wh.`` files, overlayfs xattr whiteouts);
:func:`scan` reads them all into the same normalized nodes, in canonical order (a directory
before its children, siblings by byte order). The union's private xattrs are dropped; only
opacity survives, as :attr:`Node.opaque`.

Paths are relative ``bytes`` without a leading ``./``; the layer root itself is not a node.
"""

from __future__ import annotations

import collections
import enum
import os
import stat
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from unionfs.core import whiteout as wh
from unionfs.core.paths import join
from unionfs.errors import UserError
from unionfs.layers import ondisk


class NodeType(enum.Enum):
    """What a changeset entry is."""

    DIR = "dir"
    REG = "file"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHR = "chr"
    BLK = "blk"
    FIFO = "fifo"
    WHITEOUT = "whiteout"


@dataclass(slots=True)
class Node:
    """One path of a changeset, with the metadata a layer keeps."""

    path: bytes
    type: NodeType
    mode: int = 0o644  # permission bits only (07777)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    linkname: bytes = b""  # symlink target, or the layer path a hard link points to
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    opaque: bool = False
    source: bytes | None = None  # absolute path of the content, for REG nodes read from disk
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) of a file with other hard links
    xattr_whiteouts: bool = False  # a DIR whose children may be overlayfs xattr whiteouts
    private: tuple[bytes, ...] = ()  # the union's bookkeeping xattrs found on disk (origin...)

    @property
    def name(self) -> bytes:
        """The last component of the path."""
        return self.path.rpartition(b"/")[2]

    @property
    def parent(self) -> bytes:
        """The path of the containing directory (``b""`` for the layer root)."""
        return self.path.rpartition(b"/")[0]


def sort_key(path: bytes) -> tuple[bytes, ...]:
    """Canonical order: by components, so a directory comes right before its contents."""
    return tuple(path.split(b"/"))


def read_xattrs(path: bytes | int) -> dict[bytes, bytes]:
    """All xattrs of ``path`` (not following symlinks) or of an open file descriptor, names
    and values as bytes."""
    follow = isinstance(path, int)  # a descriptor has no link to follow (nor may it say so)
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError:
        return {}
    out: dict[bytes, bytes] = {}
    for name in names:
        try:
            out[name.encode()] = os.getxattr(path, name, follow_symlinks=follow)
        except OSError:
            continue
    return out


_MARKS = frozenset(ondisk.OPAQUE_NAMES + ondisk.WHITEOUT_NAMES)


def public_xattrs(xattrs: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The xattrs that are layer content (the union's own are dropped), sorted by name."""
    if not xattrs:  # the usual case, once per scanned entry
        return {}
    return {k: xattrs[k] for k in sorted(xattrs) if not wh.is_private_xattr(k)}


def bookkeeping_xattrs(xattrs: dict[bytes, bytes]) -> tuple[bytes, ...]:
    """Private xattrs that are neither opacity nor whiteout marks (e.g. the copy-up origin)."""
    if not xattrs:
        return ()
    return tuple(k for k in xattrs if wh.is_private_xattr(k) and k not in _MARKS)


def node_from_stat(path: bytes, st: os.stat_result, full: bytes, xattrs: dict[bytes, bytes]
                   ) -> Node | None:
    """The node for one on-disk entry, or None for what a layer cannot hold (sockets)."""
    mode = st.st_mode
    node = Node(path, NodeType.REG, stat.S_IMODE(mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                xattrs=public_xattrs(xattrs), private=bookkeeping_xattrs(xattrs))
    if stat.S_ISDIR(mode):
        if ondisk.redirect(xattrs.get) is not None:
            # A layer archive cannot say "my content is elsewhere": refuse, never lose it.
            raise UserError(f"{os.fsdecode(path)} is a renamed directory whose content stays "
                            "in a lower layer (overlay.redirect); mount with "
                            "-o redirect_dir=off to make uppers that can be committed")
        node.type, node.source = NodeType.DIR, full
        marks = ondisk.dir_marks(xattrs.get)
        node.opaque, node.xattr_whiteouts = marks.opaque, marks.xattr_whiteouts
    elif stat.S_ISREG(mode):
        node.size, node.source = st.st_size, full
        if st.st_nlink > 1:
            node.inode = (st.st_dev, st.st_ino)
    elif stat.S_ISLNK(mode):
        node.type, node.linkname = NodeType.SYMLINK, os.readlink(full)
    elif ondisk.is_device_whiteout(st):
        node.type, node.xattrs = NodeType.WHITEOUT, {}
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        node.type = NodeType.CHR if stat.S_ISCHR(mode) else NodeType.BLK
        node.devmajor, node.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        node.type = NodeType.FIFO
    else:
        return None
    return node


def whiteout_node(path: bytes) -> Node:
    """A whiteout for ``path`` (metadata is not part of a whiteout's meaning: all zero)."""
    return Node(path, NodeType.WHITEOUT, 0, 0, 0, 0)


def list_dir(root: bytes, rel: bytes, xattr_whiteouts: bool) -> list[Node]:
    """Read one directory of a layer, every form of whiteout understood, sorted by name."""
    full_dir = os.path.join(root, rel) if rel else root
    with os.scandir(full_dir) as it:
        raw = list(it)
    names = {e.name for e in raw}
    nodes: list[Node] = []
    for entry in raw:
        name, full = entry.name, entry.path
        st = entry.stat(follow_symlinks=False)
        if name == wh.OCI_OPAQUE_MARKER:
            continue
        target = wh.oci_whiteout_target(name)
        if target is not None:
            if target not in names:
                nodes.append(whiteout_node(join(rel, target)))
            continue
        xattrs = read_xattrs(full)
        if xattr_whiteouts and ondisk.is_xattr_whiteout(st, xattrs.__contains__):
            nodes.append(whiteout_node(join(rel, name)))
            continue
        node = node_from_stat(join(rel, name), st, full, xattrs)
        if node is not None:
            if node.type is NodeType.DIR:
                node.opaque = node.opaque or ondisk.has_oci_opaque_marker(full)
            nodes.append(node)
    nodes.sort(key=lambda n: n.path)
    return nodes


def listing(root: bytes, rel: bytes) -> dict[bytes, Node]:
    """One layer's nodes of directory ``rel`` (which must be a directory there), by name."""
    full = os.path.join(root, rel) if rel else root
    marks = ondisk.dir_marks(read_xattrs(full).get)
    return {n.name: n for n in list_dir(root, rel, marks.xattr_whiteouts)}


def union_kind(node: Node) -> wh.Kind:
    """A node in the union's terms: DIR, WHITEOUT or OTHER."""
    if node.type is NodeType.WHITEOUT:
        return wh.Kind.WHITEOUT
    return wh.Kind.DIR if node.type is NodeType.DIR else wh.Kind.OTHER


def scan(root: str | os.PathLike[str] | bytes) -> Iterator[Node]:
    """Every node of the layer at ``root``, in canonical order, hard links detected.

    Hard links within the layer: the first path (in canonical order) of an inode is a REG
    node, later ones are HARDLINK nodes whose ``linkname`` is that first path. DIR nodes
    carry their absolute path in ``source`` too.
    """
    base = os.fsencode(root)
    inodes: dict[tuple[int, int], bytes] = {}
    # depth first with an explicit stack of listings (no recursion: any depth is fine)
    marks = ondisk.dir_marks(read_xattrs(base).get)
    stack = [iter(list_dir(base, b"", marks.xattr_whiteouts))]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        detect_hardlink(node, inodes)
        yield node
        if node.type is NodeType.DIR:
            stack.append(iter(list_dir(base, node.path, node.xattr_whiteouts)))


def detect_hardlink(node: Node, inodes: dict[tuple[int, int], bytes]) -> None:
    """Turn a later path of a multiply linked file into a HARDLINK node to the first path."""
    if node.type is not NodeType.REG or node.inode is None:
        return
    first = inodes.setdefault(node.inode, node.path)
    if first != node.path:
        node.type, node.linkname, node.size, node.source = NodeType.HARDLINK, first, 0, None


READAHEAD_FILES = 1024  # how far ahead of the reader :func:`readahead` hints, in files
READAHEAD_BYTES = 64 << 20  # ... and in bytes


def readahead(nodes: Iterable[Node], files: int = READAHEAD_FILES,
              max_bytes: int = READAHEAD_BYTES) -> Generator[Node, None, None]:
    """Pass ``nodes`` through while a helper thread asks the kernel to start reading the
    content of the next regular files (``POSIX_FADV_WILLNEED``) before the caller reads them.

    Reading many small files one by one from a cold cache waits on the disk for each; with
    the reads queued ahead the device serves them together. Only a hint: nothing changes
    if it fails.
    """
    import queue
    import threading

    hints: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    stop = threading.Event()
    helper = threading.Thread(target=_hint_loop, args=(hints, stop), name="readahead",
                              daemon=True)
    helper.start()
    try:
        yield from _ahead(nodes, hints.put, files, max_bytes)
    finally:
        stop.set()  # hints still queued are of no use any more
        hints.put(None)
        helper.join()


def _ahead(nodes: Iterable[Node], hint: Callable[[bytes], None], files: int, max_bytes: int
           ) -> Iterator[Node]:
    """Yield ``nodes`` once up to ``files`` nodes (``max_bytes`` of content) follow them,
    calling ``hint`` on each regular file's source as it enters that window."""
    window: collections.deque[Node] = collections.deque()
    ahead = 0
    for node in nodes:
        if node.type is NodeType.REG and node.source is not None and node.size:
            hint(node.source)
        window.append(node)
        ahead += node.size
        while len(window) > files or (ahead > max_bytes and len(window) > 1):
            out = window.popleft()
            ahead -= out.size
            yield out
    yield from window


def _hint_loop(hints: Any, stop: Any) -> None:
    while (path := hints.get()) is not None and not stop.is_set():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

