"""The canonical layer tar: the OCI layer blob, and the thing a layer's digest is taken of.

Definition (so two stores agree on a digest): a POSIX pax tar, uncompressed, of the layer's
nodes in canonical order (:func:`unionfs.store.tree.sort_key`), without the root entry and
without ``./`` prefixes. Each entry keeps mode (07777), uid, gid and mtime (whole seconds);
user and group names are empty; atime and ctime are not recorded. Xattrs are pax
``SCHILY.xattr.<name>`` records (the union's private ``*.overlay.*`` xattrs never appear).
A whiteout is an empty regular file ``.wh.<name>`` (mode 0, owner 0, mtime 0); an opaque
directory is followed by an empty ``<dir>/.wh..wh..opq`` entry with the same normalized
metadata. The tar is ended by tarfile's standard end-of-archive blocks and record padding.

The layer id is ``sha256:`` + the hex sha256 of these bytes, which is also its OCI diff_id.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from typing import BinaryIO

from unionfs.layers import ondisk
from unionfs.layers.syscalls import page_aligned
from unionfs.store.tree import Node, NodeType

ENCODING = "utf-8"
ERRORS = "surrogateescape"
XATTR_PAX_PREFIX = "SCHILY.xattr."

_TAR_TYPES = {
    NodeType.DIR: tarfile.DIRTYPE,
    NodeType.REG: tarfile.REGTYPE,
    NodeType.SYMLINK: tarfile.SYMTYPE,
    NodeType.HARDLINK: tarfile.LNKTYPE,
    NodeType.CHR: tarfile.CHRTYPE,
    NodeType.BLK: tarfile.BLKTYPE,
    NodeType.FIFO: tarfile.FIFOTYPE,
}


def decode(raw: bytes) -> str:
    """A path or value as tarfile wants it (undecodable bytes kept as surrogates)."""
    return raw.decode(ENCODING, ERRORS)


def encode(text: str) -> bytes:
    """The inverse of :func:`decode`."""
    return text.encode(ENCODING, ERRORS)


def marker_info(path: bytes) -> tarfile.TarInfo:
    """An empty regular file with normalized metadata: a whiteout or the opaque marker."""
    info = tarfile.TarInfo(decode(path))
    info.mode, info.mtime, info.uid, info.gid = 0, 0, 0, 0
    info.uname = info.gname = ""
    return info


def tar_info(node: Node) -> tarfile.TarInfo:
    """The tar header of one (non-whiteout) node."""
    info = tarfile.TarInfo(decode(node.path))
    info.type = _TAR_TYPES[node.type]
    info.mode = node.mode & 0o7777
    info.uid, info.gid = node.uid, node.gid
    info.uname = info.gname = ""
    info.mtime = node.mtime_ns // 1_000_000_000
    if node.type is NodeType.REG:
        info.size = node.size
    if node.type in (NodeType.SYMLINK, NodeType.HARDLINK):
        info.linkname = decode(node.linkname)
    if node.type in (NodeType.CHR, NodeType.BLK):
        info.devmajor, info.devminor = node.devmajor, node.devminor
    if node.xattrs:
        info.pax_headers = {
            XATTR_PAX_PREFIX + decode(k): decode(v) for k, v in sorted(node.xattrs.items())
        }
    return info


Opener = Callable[[Node], BinaryIO]


def _open_source(node: Node) -> BinaryIO:
    assert node.source is not None
    return open(node.source, "rb")


def write_tar(nodes: Iterable[Node], out: BinaryIO, opener: Opener = _open_source,
              progress: Callable[[int], None] | None = None) -> None:
    """Write the canonical tar of ``nodes`` (already in canonical order) to ``out``.

    The bytes are exactly what ``tarfile`` writes in pax format (headers from
    :meth:`tarfile.TarInfo.tobuf`, data padded to 512 bytes, two zero blocks, the last
    record padded to 10240 bytes), produced here without keeping a member list, so memory
    stays flat however many entries a layer has.
    """
    written = 0
    for node in nodes:
        written += _write_node(out, node, opener)
        if progress:
            progress(node.size if node.type is NodeType.REG else 0)
    end = bytes(2 * tarfile.BLOCKSIZE)
    written += len(end)
    out.write(end + bytes(-written % tarfile.RECORDSIZE))


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, ENCODING, ERRORS)


def entry_header(node: Node) -> bytes:
    """The tar bytes of ``node`` that precede its data: its header (a whiteout's marker
    header), and for an opaque directory the opaque marker entry after it."""
    if node.type is NodeType.WHITEOUT:
        return _marker_header(ondisk.oci_whiteout_path(node.parent, node.name))
    buf = _node_header(node)
    if node.type is NodeType.DIR and node.opaque:
        buf += _marker_header(ondisk.oci_opaque_marker_path(node.path))
    return buf


def _node_header(node: Node) -> bytes:
    if not node.xattrs and _fast_headers():
        kind = node.type
        buf = _ustar(node.path, kind, node.mode & 0o7777, node.uid, node.gid,
                     node.size if kind is NodeType.REG else 0, node.mtime_ns // 1_000_000_000,
                     node.linkname if kind in _LINKS else b"", node.devmajor, node.devminor)
        if buf is not None:
            return buf
    return _header(tar_info(node))


def _marker_header(path: bytes) -> bytes:
    if _fast_headers():
        buf = _ustar(path, NodeType.REG, 0, 0, 0, 0, 0, b"", 0, 0)
        if buf is not None:
            return buf
    return _header(marker_info(path))


_LINKS = (NodeType.SYMLINK, NodeType.HARDLINK)
_USTAR_TAIL = tarfile.POSIX_MAGIC + bytes(64)  # magic, version, empty uname and gname
_NO_DEVICE = bytes(16)
_USTAR_PAD = bytes(155 + 12)  # empty prefix, then the block's unused end
_CHECKSUM_BASE = 8 * ord(" ") + sum(_USTAR_TAIL)
_OCT7 = 8 ** 7
_OCT11 = 8 ** 11


def _ustar(path: bytes, kind: NodeType, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes, major: int, minor: int) -> bytes | None:
    """The single ustar block ``tarfile`` writes in pax format for an entry that needs no
    pax record; None when it would need one (or would fail), so the caller asks tarfile."""
    name = path + b"/" if kind is NodeType.DIR else path
    if not (len(name) <= 100 and len(linkname) <= 100 and name.isascii() and linkname.isascii()
            and 0 <= uid < _OCT7 and 0 <= gid < _OCT7 and 0 <= size < _OCT11
            and 0 <= mtime < _OCT11):
        return None
    if kind in (NodeType.CHR, NodeType.BLK):
        if not (0 <= major < _OCT7 and 0 <= minor < _OCT7):
            return None
        device = b"%07o\0%07o\0" % (major, minor)
    else:
        device = _NO_DEVICE
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    flag = _TAR_TYPES[kind]
    # The checksum sums the block with its own field as 8 spaces; the rest of it is zeros.
    checksum = (sum(name) + sum(numbers) + _CHECKSUM_BASE + flag[0] + sum(linkname)
                + sum(device))
    return b"".join((name.ljust(100, b"\0"), numbers, b"%06o\0 " % checksum, flag,
                     linkname.ljust(100, b"\0"), _USTAR_TAIL, device, _USTAR_PAD))


def _probe_nodes() -> list[Node]:
    return [Node(b"d/f", NodeType.REG, 0o4755, 1, 2, 1_700_000_000_500_000_000, size=513),
            Node(b"d", NodeType.DIR, 0o2775, 3, 4, 5_000_000_000),
            Node(b"s", NodeType.SYMLINK, 0o777, linkname=b"../t"),
            Node(b"c", NodeType.CHR, 0o600, devmajor=1, devminor=3)]


_fast_ok: bool | None = None


def _fast_headers() -> bool:
    """Whether :func:`_ustar` agrees with this Python's tarfile (checked once on probes)."""
    global _fast_ok
    if _fast_ok is None:
        _fast_ok = True
        _fast_ok = all(_node_header(n) == _header(tar_info(n)) for n in _probe_nodes()) and (
            _marker_header(b"w/.wh.x") == _header(marker_info(b"w/.wh.x")))
    return _fast_ok


def _write_node(out: BinaryIO, node: Node, opener: Opener) -> int:
    """Write one node's entries; returns the byte count."""
    buf = entry_header(node)
    out.write(buf)
    n = len(buf)
    if node.type is NodeType.REG and node.size:
        with opener(node) as f:
            n += _copy_exact(f, out, node.size)
    return n


def _copy_exact(f: BinaryIO, out: BinaryIO, size: int) -> int:
    """Copy exactly ``size`` bytes and the padding to a block; a file that shrank is an
    error (a layer never changes, so this means someone wrote into it)."""
    left = size
    while left:
        data = f.read(min(left, 1 << 20))
        if not data:
            raise OSError(f"file changed size while archiving: {getattr(f, 'name', '?')}")
        out.write(data)
        left -= len(data)
    pad = -size % tarfile.BLOCKSIZE
    out.write(bytes(pad))
    return size + pad


class HashWriter(io.RawIOBase):
    """A write-only sink that hashes (sha256) and counts, optionally teeing to a file."""

    def __init__(self, tee: BinaryIO | None = None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self._tee = tee

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        if self._tee is not None:
            self._tee.write(b)
        return len(b)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of what was written."""
        return "sha256:" + self.sha.hexdigest()


class TarDigest:
    """The canonical tar of nodes given one at a time, hashed and counted, never stored.

    Call :meth:`entry` for each node in canonical order; for a REG node, follow it with its
    data (:meth:`data`) and :meth:`pad`. :meth:`finish` ends the archive.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def data(self, chunk: bytes | bytearray | memoryview) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)

    def entry(self, node: Node) -> None:
        self.data(entry_header(node))

    def pad(self, size: int) -> None:
        """Pad file data of ``size`` bytes to a whole block."""
        self.data(bytes(-size % tarfile.BLOCKSIZE))

    def finish(self) -> tuple[str, int]:
        """(digest, size) of the whole archive."""
        end = 2 * tarfile.BLOCKSIZE
        self.data(bytes(end + -(self.size + end) % tarfile.RECORDSIZE))
        return "sha256:" + self._sha.hexdigest(), self.size


def layer_digest(nodes: Iterable[Node], opener: Opener = _open_source,
                 progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(digest, size) of the canonical tar of ``nodes``, without storing the tar."""
    if opener is not _open_source:
        sink = HashWriter()
        write_tar(nodes, sink, opener, progress)  # type: ignore[arg-type]
        return sink.digest, sink.size
    tar = TarDigest()
    buf = page_aligned(1 << 20)  # one buffer for every file: no file objects, no allocations
    for node in nodes:
        tar.entry(node)
        if node.type is NodeType.REG and node.size:
            _hash_exact(tar, node, buf)
        if progress:
            progress(node.size if node.type is NodeType.REG else 0)
    return tar.finish()


def _hash_exact(tar: TarDigest, node: Node, buf: memoryview) -> None:
    """Hash exactly ``node.size`` bytes of its source and the padding, like
    :func:`_copy_exact`: a file that shrank is an error."""
    assert node.source is not None
    view = buf
    fd = os.open(node.source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        left = node.size
        while left:
            n = os.readv(fd, [view[: min(left, len(buf))]])
            if not n:
                raise OSError(f"file changed size while archiving: {node.source!r}")
            tar.data(view[:n])
            left -= n
    finally:
        os.close(fd)
    tar.pad(node.size)


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()
