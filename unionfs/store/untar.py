"""Read a layer or root filesystem tar safely into a layer directory.

Every member is checked before anything is written for it; the first bad one aborts with a
one-line :class:`UserError` (the caller removes its staging directory, so the store never sees
a partial layer). Rejected: absolute names, ``..`` components, entries below a non-directory
(a symlink used as a path), relative symlinks that climb above the layer root, hard links to
anything that is not an earlier non-directory entry of the same archive, entry types a layer
cannot hold, and (when unprivileged) device nodes.

Absolute symlink targets are kept: inside an image they name a path of the image itself
(``/bin/sh -> /bin/busybox``), and nothing here ever follows a symlink.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from unionfs.core import whiteout as wh
from unionfs.core.paths import join
from unionfs.errors import UserError
from unionfs.layers import ondisk
from unionfs.store.layertar import ENCODING, ERRORS, XATTR_PAX_PREFIX, encode
from unionfs.store.limits import CountReader, Limits, check_entries
from unionfs.store.materialize import LayerWriter
from unionfs.store.tree import Node, NodeType, public_xattrs

MAX_PATH = 3072  # bytes of a layer path: with the store's own prefix it stays below PATH_MAX
_TYPES = {
    tarfile.REGTYPE: NodeType.REG,
    tarfile.AREGTYPE: NodeType.REG,
    tarfile.CONTTYPE: NodeType.REG,
    tarfile.GNUTYPE_SPARSE: NodeType.REG,
    tarfile.DIRTYPE: NodeType.DIR,
    tarfile.SYMTYPE: NodeType.SYMLINK,
    tarfile.LNKTYPE: NodeType.HARDLINK,
    tarfile.CHRTYPE: NodeType.CHR,
    tarfile.BLKTYPE: NodeType.BLK,
    tarfile.FIFOTYPE: NodeType.FIFO,
}


def normalize_name(name: str) -> bytes:
    """A member name as a relative layer path (``b""`` for the root); rejects unsafe names."""
    raw = encode(name)
    if raw.strip(b"/") in (b"", b"."):
        return b""  # the root itself ("/" is how some tools, umoci, name it)
    if raw.startswith(b"/"):
        raise UserError(f"unsafe archive entry {name!r}: absolute path")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UserError(f"unsafe archive entry {name[:80]!r}: '..' in path")
    path = b"/".join(parts)
    if len(path) > MAX_PATH:
        raise UserError(f"unsafe archive entry {name[:60]!r}...: path longer than "
                        f"{MAX_PATH} bytes")
    return path


def symlink_escapes(path: bytes, target: bytes) -> bool:
    """True when a relative symlink at ``path`` resolves (lexically) above the layer root."""
    if target.startswith(b"/"):
        return False
    depth = path.count(b"/")  # components of the parent directory
    for part in target.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (b"", b"."):
            depth += 1
    return False


def member_xattrs(info: tarfile.TarInfo) -> dict[bytes, bytes]:
    """Xattrs recorded in a member's pax headers (``SCHILY.xattr.*``)."""
    return {
        encode(k[len(XATTR_PAX_PREFIX):]): encode(v)
        for k, v in info.pax_headers.items()
        if k.startswith(XATTR_PAX_PREFIX)
    }


class TarChecker:
    """Validates members in archive order and turns them into nodes."""

    def __init__(self) -> None:
        self.types: dict[bytes, NodeType] = {b"": NodeType.DIR}

    def check_parents(self, path: bytes, name: str) -> None:
        """Every proper prefix of ``path`` must be a directory (or not yet seen).

        Walks up from the parent and stops at the first known directory: a directory stays
        one (:meth:`_check_replace`), and its own prefixes were checked when it was seen.
        """
        unseen = []
        prefix = path.rpartition(b"/")[0]
        while prefix:
            kind = self.types.get(prefix)
            if kind is NodeType.DIR:
                break
            if kind is not None:
                raise UserError(
                    f"unsafe archive entry {name!r}: goes through {kind.value} "
                    f"{prefix.decode(errors='replace')!r}"
                )
            unseen.append(prefix)
            prefix = prefix.rpartition(b"/")[0]
        for p in unseen:
            self.types[p] = NodeType.DIR

    def node(self, info: tarfile.TarInfo) -> Node | None:
        """The node for ``info``, or None for the root directory entry."""
        path = normalize_name(info.name)
        kind = _TYPES.get(info.type)
        if kind is None:
            raise UserError(f"unsupported archive entry {info.name!r} (type {info.type!r})")
        if not path:
            if kind is not NodeType.DIR:
                raise UserError(f"unsafe archive entry {info.name!r}: the root is not a dir")
            return None
        self.check_parents(path, info.name)
        node = _to_node(path, kind, info)
        self._check_links(node, info.name)
        if node.type is NodeType.WHITEOUT or (node.type is NodeType.REG and wh.is_oci_marker(
                node.name)):
            self.types.setdefault(path, NodeType.WHITEOUT)
        else:
            self._check_replace(path, node.type, info.name)
            self.types[path] = node.type
        return node

    def _check_replace(self, path: bytes, kind: NodeType, name: str) -> None:
        old = self.types.get(path)
        if old is NodeType.DIR and kind is not NodeType.DIR:
            raise UserError(f"malformed archive: {name!r} replaces a directory")

    def _check_links(self, node: Node, name: str) -> None:
        if node.type is NodeType.SYMLINK and symlink_escapes(node.path, node.linkname):
            raise UserError(f"unsafe archive entry {name!r}: symlink points outside the layer")
        if node.type is NodeType.HARDLINK:
            try:
                target = normalize_name(node.linkname.decode(ENCODING, ERRORS))
            except UserError:
                target = b""
            kind = self.types.get(target) if target else None
            if kind is None or kind in (NodeType.DIR, NodeType.WHITEOUT) or target == node.path:
                raise UserError(
                    f"unsafe archive entry {name!r}: hard link points outside the archive"
                )
            node.linkname = target


def _to_node(path: bytes, kind: NodeType, info: tarfile.TarInfo) -> Node:
    raw_x = member_xattrs(info)
    node = Node(path, kind, info.mode & 0o7777, info.uid, info.gid,
                int(info.mtime) * 1_000_000_000, xattrs=public_xattrs(raw_x))
    if kind is NodeType.REG:
        node.size = info.size
    elif kind in (NodeType.SYMLINK, NodeType.HARDLINK):
        node.linkname = encode(info.linkname)
    elif kind in (NodeType.CHR, NodeType.BLK):
        node.devmajor, node.devminor = info.devmajor, info.devminor
        if kind is NodeType.CHR and info.devmajor == 0 and info.devminor == 0:
            node.type, node.xattrs = NodeType.WHITEOUT, {}
    elif kind is NodeType.DIR:
        node.opaque = ondisk.dir_marks(raw_x.get).opaque
    return node


def extract(tar: tarfile.TarFile, writer: LayerWriter,
            progress: Callable[[int], None] | None = None, *,
            limits: Limits | None = None) -> int:
    """Check and write every member of ``tar`` (read sequentially) into ``writer``.

    Returns the offset where the last member's data ends, so the caller can tell an archive
    cut short inside a member from one that only lacks its end-of-archive blocks. Before it
    returns, every symlink of the layer is resolved through the others (:func:`link_escape`):
    a chain that leaves the layer is refused, though each of its links looks harmless alone.
    """
    checker = TarChecker()
    whiteouts: list[bytes] = []
    links: dict[bytes, bytes] = {}
    data_end = 0
    entries = 0
    for info in tar:
        entries += 1
        if limits is not None:
            check_entries(entries, limits)
        data_end = max(data_end, info.offset_data + (info.size if info.isfile() else 0))
        node = checker.node(info)
        if node is None:
            continue
        _note_link(node, links)
        name = node.name
        if node.type is NodeType.REG and name == wh.OCI_OPAQUE_MARKER:
            writer.set_opaque(node.parent)
        elif node.type is NodeType.REG and (target := wh.oci_whiteout_target(name)):
            whiteouts.append(join(node.parent, target))
        elif node.type is NodeType.REG:
            f = tar.extractfile(info)
            assert f is not None
            with f:
                writer.add(node, f)
        else:
            writer.add(node)
        if progress:
            progress(info.size if info.isfile() else 0)
    for path in whiteouts:
        if path not in writer.types:
            writer.add(Node(path, NodeType.WHITEOUT, 0))
    for path in links:
        if link_escape(path, links):
            raise UserError(f"unsafe archive entry {os.fsdecode(path)!r}: symlink chain "
                            "resolves outside the layer")
    writer.finish()
    return data_end


def _note_link(node: Node, links: dict[bytes, bytes]) -> None:
    """Keep ``links`` (path -> relative target) current: symlinks, hard links to them."""
    links.pop(node.path, None)
    if node.type is NodeType.SYMLINK:
        links[node.path] = node.linkname
    elif node.type is NodeType.HARDLINK and node.linkname in links:
        links[node.path] = links[node.linkname]  # same target, read from another place


MAX_HOPS = 40  # the kernel's limit on symlinks followed in one lookup


def link_escape(path: bytes, links: dict[bytes, bytes]) -> bool:
    """True when the symlink at ``path``, resolved through the layer's other symlinks,
    climbs above the layer root (or loops). Absolute targets are resolved inside the image
    (``..`` stops at its root), as a container sees them."""
    stack = path.split(b"/")[:-1]
    pending = links[path].split(b"/")
    rooted = links[path].startswith(b"/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not stack and not rooted:
                return True
            if stack:
                stack.pop()
            continue
        stack.append(part)
        target = links.get(b"/".join(stack))
        if target is None:
            continue
        hops += 1
        if hops > MAX_HOPS:
            return True
        stack.pop()
        if target.startswith(b"/"):
            stack, rooted = [], True
        pending = target.split(b"/") + pending
    return False


class HashReader(CountReader):
    """Reads through to ``f`` and hashes (sha256) what was read (``count`` bytes)."""

    def __init__(self, f: BinaryIO | io.BufferedIOBase) -> None:
        super().__init__(f)
        self.sha = hashlib.sha256()

    def seen(self, data: bytes) -> None:
        self.sha.update(data)

    def drain(self) -> str:
        """Read to the end; returns ``sha256:<hex>`` of everything."""
        while self.read(1 << 20):
            pass
        return "sha256:" + self.sha.hexdigest()


class ZeroTail(io.RawIOBase):
    """Reads ``f``, then zeros: a tar whose writer left out the end-of-archive blocks (umoci
    does) still ends cleanly. Whether real data was cut short is checked separately."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        if not data:
            b[: len(b)] = bytes(len(b))
            return len(b)
        b[: len(data)] = data
        return len(data)


def open_stream(f: BinaryIO) -> tarfile.TarFile:
    """A sequential reader of an uncompressed tar stream, with our name encoding."""
    try:
        return tarfile.open(fileobj=ZeroTail(f), mode="r|", encoding=ENCODING, errors=ERRORS)
    except tarfile.TarError as exc:
        raise UserError(f"not a tar archive: {exc}") from None
