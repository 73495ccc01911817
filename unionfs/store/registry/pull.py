"""``pull``: an image from a registry into the store, every byte checked before it is kept.

The manifest (or index, whose entry for the platform is chosen) and the config are validated
against the image spec; layers are fetched in parallel, each streamed through its digest
check, decompressed (gzip, zstd or none), checked entry by entry and extracted into staging.
A layer is published only after its compressed digest and size match the manifest and its
uncompressed digest matches the config's diff_id; an image only after all its layers.
Blobs the store already holds (by registry digest or by diff_id) are not fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.store import schema
from unionfs.store.limits import Limits
from unionfs.store.registry import blobmap, conf
from unionfs.store.registry.auth import lookup
from unionfs.store.registry.client import Registry, RegistryError
from unionfs.store.registry.reference import Reference, parse
from unionfs.store.store import Image, Layer, StagedLayer, Store

JOBS = 4  # layers fetched at once (docker's default is 3, containerd's 3-5)
LAYER_RETRIES = 2  # a layer whose stream broke past its resumes is fetched again
RESUMES = 3  # a broken layer stream is resumed (HTTP Range) this many times
CHUNK = 1 << 20

# (label, total bytes) -> advance(nbytes); a no-op factory when no progress is shown
TaskFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_label: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass(frozen=True)
class PullOptions:
    platform: str | None = None  # "os/arch[/variant]"; default: this machine's
    tls_verify: bool | None = None
    authfile: str | None = None
    limits: Limits | None = None
    jobs: int = JOBS


@dataclass(frozen=True)
class Pulled:
    reference: Reference
    image: Image
    manifest_digest: str
    fetched: int  # layers downloaded (the rest were present)


def pull(store: Store, text: str, opts: PullOptions | None = None, *,
         all_tags: bool = False, tasks: TaskFactory = _no_progress,
         on_found: Callable[[Reference], None] | None = None) -> list[Pulled]:
    """Pull ``text`` (``pull --all-tags``: every tag of its repository), from its mirrors
    and then its location as registries.conf routes it (each tried until one serves it).
    ``on_found`` is called once a manifest was found, before its layers are fetched."""
    opts = opts or PullOptions()
    ref = parse(text)
    if all_tags and (ref.tag or ref.digest):
        raise UserError("--all-tags takes a repository name without a tag or digest")
    failures: list[str] = []
    places = conf.endpoints(ref, tls_verify=opts.tls_verify)
    for place in places:
        try:
            return _pull_from(store, ref, place, opts, all_tags, tasks, on_found)
        except RegistryError as exc:
            failures.append(f"{'mirror ' if place.mirror else ''}{place.ref.domain}: {exc}")
            if len(places) == 1:
                raise
    raise RegistryError(f"pull {ref}: " + "; ".join(failures))


def _pull_from(store: Store, ref: Reference, place: conf.Endpoint, opts: PullOptions,
               all_tags: bool, tasks: TaskFactory,
               on_found: Callable[[Reference], None] | None) -> list[Pulled]:
    """Pull from one endpoint; the images are named after ``ref`` (what was asked for)."""
    src = place.ref
    with Registry(src.api_host, tls_verify=place.tls_verify,
                  credentials=lookup(src.domain, opts.authfile)) as reg:
        tags = sorted(reg.tags(src.path)) if all_tags else []
        pairs = [(ref.with_tag(t), src.with_tag(t)) for t in tags] if all_tags else [
            (ref, src)]
        if not pairs:
            raise RegistryError(f"{src.repository} has no tags")
        return [_pull_one(store, reg, name, at_src, opts, tasks, on_found)
                for name, at_src in pairs]


def _pull_one(store: Store, reg: Registry, name: Reference, ref: Reference,
              opts: PullOptions, tasks: TaskFactory,
              on_found: Callable[[Reference], None] | None) -> Pulled:
    """Pull ``ref`` (as this registry names it) and tag it ``name``'s store tag."""
    manifest, digest = resolve_manifest(reg, ref, opts.platform)
    if on_found is not None:
        on_found(name)
    raw_config = reg.get_blob(ref.path, manifest.config.digest, manifest.config.size,
                              schema.MAX_DOCUMENT)
    config = schema.check_config(schema.loads(raw_config, "image config"))
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise UserError("image config rootfs.diff_ids does not match the manifest's layers")
    known = blobmap.layers_of(store)
    with store.staging("pull") as tmp:
        jobs = [(i, d, diff_ids[i]) for i, d in enumerate(manifest.layers)
                if _present(store, known, d, diff_ids[i]) is None]
        staged = _fetch_all(store, reg, ref, jobs, tmp, opts, tasks)
        ids = [_present(store, known, d, diff_ids[i]) or staged[i].digest
               for i, d in enumerate(manifest.layers)]
        config = dict(config)
        config["rootfs"] = {"type": "layers", "diff_ids": ids}
        tag = name.store_tag if not name.digest else None
        image = store.publish(list(staged.values()), [(config, tag)])[0]
    blobmap.record(store, ref.repository,
                   {d.digest: lid for d, lid in zip(manifest.layers, ids, strict=True)})
    return Pulled(name, image, digest, len(jobs))


def resolve_manifest(reg: Registry, ref: Reference, platform: str | None
                     ) -> tuple[schema.Manifest, str]:
    """The image manifest for ``ref`` (through an index, by platform) and its digest."""
    raw, _media, digest = reg.get_manifest(ref.path, ref.ref)
    doc = schema.loads(raw, "manifest")
    if schema.kind_of(doc) == "index":
        index = schema.parse_index(doc, "image index")
        entry = choose_platform(index, platform)
        raw, _media, digest = reg.get_manifest(ref.path, entry.digest)
        if len(raw) != entry.size:
            raise RegistryError(f"manifest {entry.digest} has the wrong size")
        doc = schema.loads(raw, "manifest")
    return schema.parse_manifest(doc), digest


def choose_platform(index: schema.Index, wanted: str | None) -> schema.Descriptor:
    """The index entry for ``wanted`` (``os/arch[/variant]``, default this machine's)."""
    from unionfs.store.refs import oci_arch

    os_, _, rest = (wanted or f"linux/{oci_arch()}").partition("/")
    arch, _, variant = rest.partition("/")
    if not arch:
        raise UserError(f"invalid platform {wanted!r} (expected OS/ARCH[/VARIANT])")
    found = [d for d in index.manifests if d.media_type in schema.MANIFEST_TYPES | {""}
             and d.platform is not None and d.platform.os == os_
             and d.platform.architecture == arch
             and (not variant or d.platform.variant == variant)]
    if not found:
        have = sorted({f"{d.platform.os}/{d.platform.architecture}" for d in index.manifests
                       if d.platform})
        raise UserError(f"no image for platform {os_}/{arch}{'/' + variant if variant else ''}"
                        f" (the index has: {', '.join(have) or 'none'})")
    return found[0]


def _present(store: Store, known: dict[str, str], desc: schema.Descriptor, diff_id: str
             ) -> str | None:
    """The id of a stored layer that is this blob, or None."""
    for layer_id in (known.get(desc.digest), diff_id):
        if layer_id and Layer(store, layer_id).dir.is_dir():
            return layer_id
    return None


def _fetch_all(store: Store, reg: Registry, ref: Reference,
               jobs: list[tuple[int, schema.Descriptor, str]], tmp: Path, opts: PullOptions,
               tasks: TaskFactory) -> dict[int, StagedLayer]:
    def one(job: tuple[int, schema.Descriptor, str]) -> tuple[int, StagedLayer]:
        i, desc, diff_id = job
        advance = tasks(desc.hex[:12], desc.size)
        return i, fetch_layer(store, reg, ref, desc, diff_id, tmp / f"layer{i}", opts,
                              advance)

    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        return dict(pool.map(one, jobs))


def fetch_layer(store: Store, reg: Registry, ref: Reference, desc: schema.Descriptor,
                diff_id: str, where: Path, opts: PullOptions,
                advance: Callable[[int], None]) -> StagedLayer:
    """Stream one layer blob into staging at ``where``; retried when the stream breaks."""
    from unionfs.store.fsutil import rmtree

    for attempt in range(LAYER_RETRIES + 1):
        where.mkdir()
        try:
            return _stream_layer(store, reg, ref, desc, diff_id, where, opts, advance)
        except _BrokenStream as exc:
            rmtree(where)
            if attempt == LAYER_RETRIES:
                raise RegistryError(f"layer {desc.hex[:12]}: {exc}") from None
    raise AssertionError("unreachable")


class _BrokenStream(Exception):
    pass


def _stream_layer(store: Store, reg: Registry, ref: Reference, desc: schema.Descriptor,
                  diff_id: str, where: Path, opts: PullOptions,
                  advance: Callable[[int], None]) -> StagedLayer:
    body = VerifiedBody(blob_chunks(reg, ref.path, desc), desc, advance)
    staged = store.stage_tar(where, body, f"pull {ref}",  # type: ignore[arg-type]
                             expect_digest=diff_id, limits=opts.limits)
    body.finish()
    return staged


def blob_chunks(reg: Registry, repo: str, desc: schema.Descriptor) -> Iterator[bytes]:
    """The bytes of a blob, in pieces. A stream that breaks is resumed where it broke
    (``Range: bytes=N-``; a registry that ignores the range answers 200 and its first N
    bytes are dropped), up to :data:`RESUMES` times; then :class:`_BrokenStream`."""
    import httpx

    offset, breaks = 0, 0
    path = f"/v2/{repo}/blobs/{desc.digest}"
    while True:
        headers = {"Accept-Encoding": "identity"}  # the blob's own bytes, as its digest
        if offset:
            headers["Range"] = f"bytes={offset}-"
        pending = bytearray()  # pieces as received, handed on in CHUNK-sized runs
        broken: Exception | None = None
        try:
            with reg.stream(path, scope=f"repository:{repo}:pull", headers=headers) as resp:
                skip = _bytes_to_skip(resp, offset, desc)
                for piece in resp.iter_raw():  # no chunk size: httpx would buffer (and
                    if skip:                   # lose on a break) what it had received
                        dropped = min(skip, len(piece))
                        piece, skip = piece[dropped:], skip - dropped
                    pending += piece
                    if len(pending) >= CHUNK:
                        offset += len(pending)
                        yield bytes(pending)
                        pending.clear()
        except httpx.TransportError as exc:
            broken = exc
        if pending:  # what arrived before the break is good: its digest is checked anyway
            offset += len(pending)
            yield bytes(pending)
        if broken is None:
            return
        breaks += 1
        if breaks > RESUMES or offset >= desc.size:
            raise _BrokenStream(str(broken) or type(broken).__name__) from None


def _bytes_to_skip(resp: Any, offset: int, desc: schema.Descriptor) -> int:
    """How many leading bytes of this answer were already read (0 for a 206 at offset)."""
    if resp.status_code == 200:
        return offset
    if resp.status_code == 206 and offset:
        got = resp.headers.get("content-range", "")
        if got.startswith(f"bytes {offset}-"):
            return 0
        raise RegistryError(f"layer {desc.hex[:12]}: the registry resumed at the wrong "
                            f"offset ({got or 'no Content-Range'})")
    raise RegistryError(f"layer {desc.digest}: HTTP {resp.status_code}")


class VerifiedBody:
    """A file-like view of a blob's chunks that checks its size as it reads and its digest
    at the end: the read that would return end-of-file raises instead when they differ."""

    def __init__(self, chunks: Any, desc: schema.Descriptor,
                 advance: Callable[[int], None]) -> None:
        self._chunks = iter(chunks)
        self._desc = desc
        self._advance = advance
        self._sha = hashlib.sha256()
        self._buf = b""
        self._pos = 0
        self.size = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (short reads are normal; ``b""`` only at the verified end)."""
        if n < 0:
            parts = []
            while part := self.read(1 << 20):
                parts.append(part)
            return b"".join(parts)
        while self._pos >= len(self._buf) and not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._verify()
                self._done = True
            else:
                self._take(chunk)
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _take(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._desc.size:
            raise UserError(f"layer {self._desc.hex[:12]} is larger than its manifest says")
        self._sha.update(chunk)
        self._advance(len(chunk))
        self._buf, self._pos = chunk, 0

    def _verify(self) -> None:
        if self.size != self._desc.size:
            raise UserError(f"layer {self._desc.hex[:12]} is shorter than its manifest says")
        if "sha256:" + self._sha.hexdigest() != self._desc.digest:
            raise UserError(f"layer {self._desc.hex[:12]} does not match its digest")

    def finish(self) -> None:
        """Read what the layer reader left (padding) so the digest is checked."""
        while self.read(1 << 20):
            pass

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def flush(self) -> None:
        return None

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("not a file")
