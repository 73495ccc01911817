"""Typed models of the OCI image spec's JSON: descriptors, manifests, indexes, configs.

Everything that arrives from outside (a loaded layout, a pulled manifest) goes through
:func:`parse_index`, :func:`parse_manifest` and :func:`check_config` before anything of it is
used or stored; a document that does not follow the spec (and docker's schema 2, which has
the same shape) is one :class:`UserError` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from unionfs.errors import UserError

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = frozenset({MT_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MT_INDEX, DOCKER_LIST})
# layer media type -> compression
LAYER_TYPES = {
    MT_LAYER: "none", MT_LAYER + "+gzip": "gzip", MT_LAYER + "+zstd": "zstd",
    DOCKER_LAYER: "none", DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
MAX_DOCUMENT = 4 << 20  # a manifest, index or config larger than this is refused

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Platform:
    architecture: str
    os: str
    variant: str = ""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: list[Descriptor]


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"malformed {where}: not a JSON object")
    return value


def _str(data: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise UserError(f"malformed {where}: {key!r} must be a string")
    return value


def check_digest(value: object, where: str) -> str:
    """A ``sha256:<64 hex>`` digest (the only algorithm accepted), else UserError."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise UserError(f"malformed {where}: unsupported or malformed digest {value!r}")
    return value


def parse_descriptor(value: object, where: str) -> Descriptor:
    data = _obj(value, where)
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UserError(f"malformed {where}: 'size' must be a non-negative integer")
    platform = None
    if data.get("platform") is not None:
        plat = _obj(data["platform"], f"{where} platform")
        platform = Platform(_str(plat, "architecture", where), _str(plat, "os", where),
                            _str(plat, "variant", where, required=False))
    annotations = data.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise UserError(f"malformed {where}: 'annotations' must map strings to strings")
    return Descriptor(_str(data, "mediaType", where, required=False),
                      check_digest(data.get("digest"), where), size, platform,
                      dict(annotations))


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise UserError(f"malformed {where}: {key!r} must be a list")
    return value


def _schema_version(data: dict[str, Any], where: str) -> None:
    if data.get("schemaVersion") != 2:
        raise UserError(f"malformed {where}: schemaVersion must be 2 "
                        "(docker schema 1 manifests are not supported)")


def parse_index(value: object, where: str = "index") -> Index:
    """An image index / manifest list (``index.json`` of a layout has the same shape)."""
    data = _obj(value, where)
    _schema_version(data, where)
    entries = [parse_descriptor(d, f"{where} entry {i}")
               for i, d in enumerate(_list(data, "manifests", where))]
    return Index(_str(data, "mediaType", where, required=False) or MT_INDEX, entries)


def parse_manifest(value: object, where: str = "manifest") -> Manifest:
    """An OCI or docker schema-2 image manifest; every layer's media type must be known."""
    data = _obj(value, where)
    _schema_version(data, where)
    config = parse_descriptor(data.get("config"), f"{where} config")
    layers = [parse_descriptor(d, f"{where} layer {i}")
              for i, d in enumerate(_list(data, "layers", where))]
    for layer in layers:
        kind = layer.media_type or MT_LAYER
        if kind not in LAYER_TYPES:
            raise UserError(f"unsupported layer media type: {kind}")
    return Manifest(_str(data, "mediaType", where, required=False) or MT_MANIFEST, config,
                    layers)


def check_config(value: object, where: str = "image config") -> dict[str, Any]:
    """An image config: ``rootfs`` of type ``layers`` with digest ``diff_ids``, and the
    optional parts (``config``, ``history``) of the right JSON types."""
    data = _obj(value, where)
    rootfs = _obj(data.get("rootfs"), f"{where} rootfs")
    if rootfs.get("type") != "layers":
        raise UserError(f"malformed {where}: rootfs.type must be 'layers'")
    for diff_id in _list(rootfs, "diff_ids", f"{where} rootfs"):
        check_digest(diff_id, f"{where} rootfs.diff_ids")
    for key in ("architecture", "os", "created", "author"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"malformed {where}: {key!r} must be a string")
    if data.get("config") is not None:
        _obj(data["config"], f"{where} config")
    history = data.get("history")
    if history is not None:
        for i, entry in enumerate(_list(data, "history", where)):
            _obj(entry, f"{where} history {i}")
    return data


def loads(raw: bytes, where: str) -> object:
    """JSON from untrusted bytes (size-capped, UTF-8), else UserError."""
    if len(raw) > MAX_DOCUMENT:
        raise UserError(f"{where} is larger than {MAX_DOCUMENT >> 20} MiB")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UserError(f"{where} is not valid JSON") from None


def kind_of(value: object) -> str:
    """``index`` or ``manifest`` for a fetched document (by mediaType, else by shape)."""
    data = _obj(value, "manifest")
    media = data.get("mediaType")
    if media in INDEX_TYPES or (media is None and "manifests" in data):
        return "index"
    return "manifest"
