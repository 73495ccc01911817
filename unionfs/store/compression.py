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
        return ParallelGzip(out)
    if kind == "zstd":
        import zstandard

        # threads=-1: one compression thread per core (the output is the same either way)
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False,
                                        threads=-1)
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


class ParallelGzip(io.RawIOBase):
    """A gzip writer that deflates 1 MiB blocks on all cores, as pigz does.

    Each block is raw-deflated on its own and ended with a sync flush (a byte-aligned,
    non-final block), so the blocks concatenate into one deflate stream, closed by an empty
    final block: one ordinary gzip member (no name, mtime 0) that any reader accepts. zlib
    releases the GIL while it deflates, so the blocks really run in parallel; the output
    depends only on the input, the block size and the level, never on timing.
    """

    BLOCK = 1 << 20

    def __init__(self, out: BinaryIO, level: int = GZIP_LEVEL) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        self._out, self._level = out, level
        self._pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
        self._pending: list[Any] = []
        self._buf = bytearray()
        self._crc = 0
        self._size = 0
        self._finished = False
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # no name, mtime 0, OS unknown

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        import zlib

        data = memoryview(b).cast("B")
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= self.BLOCK:
            self._submit(bytes(self._buf[: self.BLOCK]))
            del self._buf[: self.BLOCK]
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(_deflate_block, block, self._level))
        while len(self._pending) > 2 * (self._pool._max_workers):
            self._out.write(self._pending.pop(0).result())

    def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self._buf:
                self._submit(bytes(self._buf))
            for fut in self._pending:
                self._out.write(fut.result())
            self._out.write(b"\x03\x00")  # an empty final block
            self._out.write(self._crc.to_bytes(4, "little"))
            self._out.write((self._size & 0xFFFFFFFF).to_bytes(4, "little"))
        finally:
            self._pool.shutdown()
            super().close()


def _deflate_block(block: bytes, level: int) -> bytes:
    import zlib

    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(block) + comp.flush(zlib.Z_SYNC_FLUSH)
