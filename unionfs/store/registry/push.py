"""``push``: a stored image to a registry, as an OCI manifest with compressed layers.

Each layer is sent as its canonical tar (whose sha256 is the layer id and the config's
diff_id), compressed with gzip, zstd or not at all; compression is deterministic, so a blob
pushed before is recognised by a HEAD request and not sent again. A blob the store knows to be
in another repository of the same registry is mounted from there (one request, no upload).
Layers are compressed and uploaded in parallel; the manifest is put last, once every blob is
in place.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from unionfs.errors import UserError
from unionfs.store import refs, schema
from unionfs.store.compression import compressor
from unionfs.store.fsutil import canonical_json
from unionfs.store.layertar import HashWriter, write_tar
from unionfs.store.registry import blobmap, conf
from unionfs.store.registry.auth import lookup
from unionfs.store.registry.client import Registry
from unionfs.store.registry.reference import Reference, parse
from unionfs.store.store import Layer, Store
from unionfs.store.tree import scan

JOBS = 3
CHUNK_SIZE = 32 << 20  # a broken upload resumes from the last chunk the registry holds
MEDIA = {"gzip": schema.MT_LAYER + "+gzip", "zstd": schema.MT_LAYER + "+zstd",
         "none": schema.MT_LAYER}

TaskFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_label: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass(frozen=True)
class PushOptions:
    compression: str = "gzip"
    tls_verify: bool | None = None
    authfile: str | None = None
    jobs: int = JOBS
    chunk_size: int = CHUNK_SIZE  # larger blobs go in PATCHes of this size; 0: one PUT


@dataclass(frozen=True)
class Pushed:
    reference: Reference
    manifest_digest: str
    uploaded: int  # layer blobs sent (the rest were there or mounted)
    mounted: int


def push(store: Store, image_ref: str, dest: str | None = None,
         opts: PushOptions | None = None, tasks: TaskFactory = _no_progress) -> Pushed:
    """Push image ``image_ref`` to ``dest`` (default: the image's own name)."""
    opts = opts or PushOptions()
    if opts.compression not in MEDIA:
        raise UserError(f"unknown compression {opts.compression!r} (gzip, zstd or none)")
    target = parse(dest or image_ref)
    if target.digest:
        raise UserError("push needs a tag, not a digest")
    image = store.image(image_ref)
    place = conf.endpoints(target, push=True, tls_verify=opts.tls_verify)[0]
    target = place.ref  # where registries.conf sends it (the same unless rewritten)
    with Registry(target.api_host, tls_verify=place.tls_verify,
                  credentials=lookup(target.domain, opts.authfile)) as reg:
        layers = [Layer(store, d) for d in image.layer_ids]
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            results = list(pool.map(
                lambda layer: _push_layer(store, reg, target, layer, opts, tasks), layers))
        config = canonical_json(image.config)
        config_desc = schema.Descriptor(schema.MT_CONFIG, _sha(config), len(config))
        if not reg.has_blob(target.path, config_desc.digest):
            reg.upload_blob(target.path, config_desc.digest, config, len(config))
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": schema.MT_MANIFEST,
            "config": config_desc.as_json(),
            "layers": [d.as_json() for d, _how in results]})
        digest = reg.put_manifest(target.path, target.tag or "latest", manifest,
                                  schema.MT_MANIFEST)
    blobmap.record(store, target.repository,
                   {d.digest: layer.id for (d, _h), layer in zip(results, layers, strict=True)})
    return Pushed(target, digest, sum(h == "uploaded" for _d, h in results),
                  sum(h == "mounted" for _d, h in results))


def _push_layer(store: Store, reg: Registry, target: Reference, layer: Layer,
                opts: PushOptions, tasks: TaskFactory) -> tuple[schema.Descriptor, str]:
    """Make sure the registry has ``layer``'s blob; (descriptor, how) with how one of
    ``present``, ``mounted``, ``uploaded``."""
    media = MEDIA[opts.compression]
    known = blobmap.compressed(store, layer.id, opts.compression)
    if known is not None:
        desc = schema.Descriptor(media, known[0], known[1])
        how = _reuse(store, reg, target, desc.digest)
        if how:
            return desc, how
    advance = tasks(refs.short(layer.id), layer.size)
    with store.staging("push") as tmp:
        path = tmp / "blob"
        digest, size = _compress_layer(layer, opts.compression, path, advance)
        blobmap.record_compressed(store, layer.id, opts.compression, digest, size)
        desc = schema.Descriptor(media, digest, size)
        how = _reuse(store, reg, target, digest)
        if how:
            return desc, how
        with open(path, "rb") as f:
            reg.upload_blob(target.path, digest, f, size, opts.chunk_size)
    return desc, "uploaded"


def _reuse(store: Store, reg: Registry, target: Reference, digest: str) -> str:
    """``present`` or ``mounted`` when the registry has (or can mount) the blob, else ``""``."""
    if reg.has_blob(target.path, digest):
        return "present"
    for source in blobmap.sources(store, digest):
        domain, _, path = source.partition("/")
        if domain == target.domain and path != target.path and reg.mount_blob(
                target.path, digest, path):
            return "mounted"
    return ""


def _compress_layer(layer: Layer, kind: str, path: object,
                    advance: Callable[[int], None]) -> tuple[str, int]:
    """Write the layer's canonical tar, compressed, to ``path``; checks the layer id."""
    with open(path, "wb") as out:  # type: ignore[call-overload]
        packed = HashWriter(tee=out)
        stream = compressor(kind, packed)  # type: ignore[arg-type]
        plain = HashWriter(tee=stream)  # type: ignore[arg-type]
        write_tar(scan(layer.dir), plain, progress=advance)  # type: ignore[arg-type]
        stream.close()
    if plain.digest != layer.id:
        raise UserError(f"layer {refs.short(layer.id)} is corrupt: content does not match "
                        "its digest")
    return packed.digest, packed.size


def _sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
