"""Layer compression: recognise gzip, zstd, bzip2 and xz streams; write gzip and zstd.

Reading is by magic bytes, so a media type that lies about its compression still reads
right (its digest is checked over the bytes as they came). Writing is deterministic (gzip
without a name or time, zstd at a fixed level), so the same layer compressed twice is the
same blob, and a push of an unchanged image finds its blobs already there.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from unionfs.errors import UserError

COMPRESSIONS = ("gzip", "zstd", "none")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


def sniff(f: BinaryIO) -> tuple[str, Any]:
    """(compression name, a peekable reader at the same position) of a stream."""
    buffered: Any = f if hasattr(f, "peek") else io.BufferedReader(f)  # type: ignore[type-var]
    head = buffered.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        return "gzip", buffered
    if head.startswith(b"BZh"):
        return "bzip2", buffered
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz", buffered
    if head.startswith(ZSTD_MAGIC):
        return "zstd", buffered
    return "none", buffered


def decompressed(f: BinaryIO) -> io.BufferedIOBase:
    """``f`` uncompressed, whichever of the known compressions it uses."""
    kind, buffered = sniff(f)
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(buffered)
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(buffered)
    if kind == "zstd":
        import zstandard

        # read_across_frames: a layer may be several concatenated frames (pigz-like writers)
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return io.BufferedReader(reader)  # type: ignore[arg-type]
    return buffered


def compressor(kind: str, out: BinaryIO) -> Any:
    """A writable stream that compresses into ``out`` (close it to finish; ``out`` stays
    open)."""
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                             compresslevel=GZIP_LEVEL)
    if kind == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False)
        return cctx.stream_writer(out, closefd=False)
    if kind == "none":
        return _Uncloseable(out)
    raise UserError(f"unknown compression {kind!r} (expected one of {', '.join(COMPRESSIONS)})")


def errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged compressed stream raises."""
    import gzip
    import lzma
    import zlib

    import zstandard

    return (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, zstandard.ZstdError)


class _Uncloseable(io.RawIOBase):
    """Writes through to ``out``; closing it leaves ``out`` open."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self._out.write(b)
