"""OCI image layout archives: ``save`` writes one, ``load`` reads ours and other tools'.

Save writes a tar holding ``oci-layout``, ``index.json`` and ``blobs/sha256/*`` (config,
manifest, one uncompressed canonical layer tar per layer), every entry with normalized
metadata (owner 0, mtime 0, mode 0644/0755) in sorted order, so the same image saved twice
is the same bytes. The manifest is named in ``index.json`` by the
``org.opencontainers.image.ref.name`` annotation (the tag) and ``io.containerd.image.name``
(the full ``name:tag``).

Load checks every blob against its descriptor (digest and size), every layer against the
config's ``rootfs.diff_ids``, and every layer entry (see :mod:`unionfs.store.untar`) before
anything is published; layers are stored in canonical form, so their ids may differ from the
archive's diff_ids, and the stored config records our ids.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.store import refs, schema
from unionfs.store.fsutil import canonical_json
from unionfs.store.layertar import HashWriter, file_digest, write_tar
from unionfs.store.limits import Limits
from unionfs.store.store import Image, StagedLayer, Store
from unionfs.store.tree import scan
from unionfs.store.untar import normalize_name

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_TYPES = set(schema.LAYER_TYPES)  # plain, gzip and zstd (OCI and docker names)
MANIFEST_TYPES = {MT_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}
INDEX_TYPES = {MT_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

Progress = Callable[[int], None]


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """An OCI descriptor of in-memory bytes."""
    import hashlib

    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


# -- save ------------------------------------------------------------------------------------


def _tar_entry(name: str, size: int, *, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    return info


def save(store: Store, ref: str, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Write image ``ref`` as an OCI image layout tar at ``out`` (atomically)."""
    image = store.image(ref)
    with store.staging("save") as tmp:
        blobs = _write_layer_blobs(image, tmp, progress)
        config = canonical_json(image.config)
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": descriptor(MT_CONFIG, config), "layers": blobs,
        })
        index = canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX,
                                "manifests": [_index_entry(manifest, ref, image)]})
        part = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            _write_archive(part, tmp, {"config": config, "manifest": manifest}, index, blobs)
            os.rename(part, out)
        finally:
            if part.exists():
                part.unlink()
    return json.loads(manifest)


def _index_entry(manifest: bytes, ref: str, image: Image) -> dict[str, Any]:
    """The index descriptor of the manifest, named after the tag used (or the first tag)."""
    entry = descriptor(MT_MANIFEST, manifest)
    tags = image.tags
    try:
        asked = refs.normalize_tag(ref)
    except UserError:
        asked = ""
    name = asked if asked in tags else (tags[0] if tags else None)
    if name:
        entry["annotations"] = {REF_NAME: refs.split_ref(name)[1], CONTAINERD_NAME: name}
    return entry


def _write_layer_blobs(image: Image, tmp: Path, progress: Progress | None
                       ) -> list[dict[str, Any]]:
    """Each layer's canonical tar into ``tmp``; checks it still matches its id."""
    out = []
    for layer in reversed(image.layers):  # bottom first, as manifests list them
        path = tmp / layer.hex
        with open(path, "wb") as f:
            sink = HashWriter(tee=f)  # type: ignore[arg-type]
            write_tar(scan(layer.dir), sink, progress=progress)  # type: ignore[arg-type]
        if sink.digest != layer.id:
            raise UserError(f"layer {refs.short(layer.id)} is corrupt: content does not "
                            f"match its digest")
        out.append({"mediaType": MT_LAYER, "digest": layer.id, "size": sink.size})
    return out


def _write_archive(part: Path, tmp: Path, docs: dict[str, bytes], index: bytes,
                   blobs: list[dict[str, Any]]) -> None:
    import io

    files: dict[str, tuple[bytes | None, Path | None, int]] = {
        "oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', None, 30),
        "index.json": (index, None, len(index)),
    }
    for data in docs.values():
        files["blobs/sha256/" + descriptor("", data)["digest"][7:]] = (data, None, len(data))
    for blob in blobs:
        hexd = blob["digest"][7:]
        files["blobs/sha256/" + hexd] = (None, tmp / hexd, blob["size"])
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_entry(d, 0, is_dir=True))
        for name in sorted(files):
            content, path, size = files[name]
            info = _tar_entry(name, size)
            if content is not None:
                tar.addfile(info, io.BytesIO(content))
            else:
                assert path is not None
                with open(path, "rb") as f:
                    tar.addfile(info, f)


# -- load ------------------------------------------------------------------------------------


@dataclass
class Layout:
    """An unpacked OCI image layout directory whose blobs can be checked and read."""

    root: Path

    def blob(self, desc: dict[str, Any]) -> Path:
        """The path of a descriptor's blob, after checking its size and digest."""
        digest = str(desc.get("digest", ""))
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or refs.hex_of(hexd) is None or len(hexd) != 64:
            raise UserError(f"unsupported or malformed digest: {digest!r}")
        path = self.root / "blobs" / "sha256" / hexd
        if not path.is_file() or path.is_symlink():
            raise UserError(f"missing blob {digest}")
        if "size" in desc and path.stat().st_size != desc["size"]:
            raise UserError(f"blob {refs.short(digest)} has the wrong size")
        if file_digest(path) != digest:
            raise UserError(f"blob {refs.short(digest)} does not match its digest")
        return path

    def json(self, desc: dict[str, Any]) -> dict[str, Any]:
        try:
            data = json.loads(self.blob(desc).read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"blob {refs.short(desc['digest'])} is not valid JSON") from None
        if not isinstance(data, dict):
            raise UserError(f"blob {refs.short(desc['digest'])} is not a JSON object")
        return data

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            raise UserError("not an OCI image layout: no index.json") from None
        except ValueError:
            raise UserError("index.json is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
            raise UserError("index.json has no manifests")
        schema.parse_index({"schemaVersion": 2, **data}, "index.json")
        return data

    def manifests(self) -> list[tuple[dict[str, Any], str | None]]:
        """(manifest, name) for each image, nested indexes followed one level."""
        out = []
        for desc in self.index()["manifests"]:
            name = _name_of(desc)
            if desc.get("mediaType") in INDEX_TYPES:
                doc = self.json(desc)
                schema.parse_index(doc, f"index {refs.short(desc['digest'])}")
                nested = doc["manifests"]
                out += [(self.json(d), name) for d in nested if _is_ours(d)]
            elif desc.get("mediaType", MT_MANIFEST) in MANIFEST_TYPES:
                out.append((self.json(desc), name))
        if not out:
            raise UserError("the archive holds no image manifest")
        return out


def _stat_mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


def _is_ours(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform") or {}
    return desc.get("mediaType") in MANIFEST_TYPES and plat.get("architecture") in (
        None, refs.oci_arch())


def _name_of(desc: dict[str, Any]) -> str | None:
    ann = desc.get("annotations") or {}
    name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)
    return str(name) if name else None


def unpack_archive(archive: Path, dest: Path) -> None:
    """Extract an image archive's files and directories, by checked names.

    Links (``docker save`` archives link repeated ``layer.tar`` files) become hard links to
    the regular file they name, which must be a member of the same archive; anything else
    (devices, links leaving the archive) is refused.
    """
    links: list[tuple[Path, Path, str]] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                _unpack_member(tar, info, dest, links)
    except (tarfile.TarError, EOFError) as exc:
        raise UserError(f"malformed archive {archive}: {exc}") from None
    except FileNotFoundError:
        raise UserError(f"no such file: {archive}") from None
    for path, target, name in links:
        if target.is_symlink() or not target.is_file():
            raise UserError(f"unsafe entry in image archive: {name!r} links outside it")
        os.link(target, path)


def _unpack_member(tar: tarfile.TarFile, info: tarfile.TarInfo, dest: Path,
                   links: list[tuple[Path, Path, str]]) -> None:
    name = normalize_name(info.name)
    if not name:
        return
    path = dest / os.fsdecode(name)
    _check_inside(dest, path)
    if info.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if info.issym() or info.islnk():
        rel = info.linkname if info.islnk() else os.path.join(
            os.path.dirname(os.fsdecode(name)), info.linkname)
        if info.linkname.startswith("/"):
            raise UserError(f"unsafe entry in image archive: {info.name!r} links outside it")
        target = dest / os.fsdecode(normalize_name(os.path.normpath(rel)))
        links.append((path, target, info.name))
        return
    if not info.isfile():
        raise UserError(f"unexpected entry in image archive: {info.name!r}")
    src = tar.extractfile(info)
    assert src is not None
    with src, open(path, "wb") as f:
        while chunk := src.read(1 << 20):
            f.write(chunk)


def _check_inside(root: Path, target: Path) -> None:
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
        raise UserError(f"unsafe entry in image archive: {target}")


@dataclass
class Loaded:
    """What ``load`` did: the images, and the tags it moved (tag -> id it pointed at)."""

    images: list[Image]
    replaced: dict[str, str]


def load(store: Store, source: Path, tag: str | None = None,
         progress: Progress | None = None, limits: Limits | None = None) -> list[Image]:
    """Load every image of an OCI layout (tar or directory) into the store."""
    return load_report(store, source, tag, progress, limits).images


def load_report(store: Store, source: Path, tag: str | None = None,
                progress: Progress | None = None, limits: Limits | None = None) -> Loaded:
    """Load every image of an OCI layout (tar or directory) into the store.

    A ``docker save`` archive without an OCI index (only ``manifest.json``) is read too.
    Everything is checked and staged first; the store changes only at the end, at once.
    Names: ``io.containerd.image.name``, else ``ref.name`` (a bare ``t`` is read as podman
    reads it, a repository: ``t:latest``); an image with no usable name is loaded by id.
    Two different images under one name are refused.
    """
    if tag:
        tag = refs.normalize_tag(tag)
    with store.staging("load") as tmp:
        if source.is_dir():
            root = source
        elif stat.S_ISREG(_stat_mode(source)):
            unpack_archive(source, tmp / "layout")
            root = tmp / "layout"
        elif source.exists():
            raise UserError(f"not a regular file or directory: {source}")
        else:
            raise UserError(f"no such file: {source}")
        found = _images_in(root)
        if tag and len(found) > 1:
            raise UserError("--tag needs an archive with exactly one image")
        _check_unique_names(found)
        staged: list[StagedLayer] = []
        images: list[tuple[dict[str, Any], str | None]] = []
        for config, blobs, name in found:
            config, layers = _stage_layers(store, config, blobs, tmp, progress, limits)
            staged += layers
            images.append((config, tag or _tag_for(name)))
        before = store.tags()
        published = store.publish(staged, images)
    replaced = {t: before[t] for (_c, t), im in zip(images, published, strict=True)
                if t and before.get(t) not in (None, im.id)}
    return Loaded(published, replaced)


def _check_unique_names(found: list[Found]) -> None:
    """Refuse an archive that gives one name to two different images."""
    seen: dict[str, str] = {}
    for config, _blobs, name in found:
        tag = _tag_for(name)
        if tag is None:
            continue
        key = canonical_json(config).decode()
        if seen.setdefault(tag, key) != key:
            raise UserError(f"the archive names two different images {tag}")


Found = tuple[dict[str, Any], list[Path], str | None]


def _images_in(root: Path) -> list[Found]:
    """(config, checked layer blobs, name) of each image in an unpacked archive."""
    if not (root / "index.json").exists() and (root / "manifest.json").exists():
        return _docker_images(root)
    layout = Layout(root)
    return [(*_oci_image(layout, manifest), name) for manifest, name in layout.manifests()]


def _oci_image(layout: Layout, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    """The config and layer blobs of one OCI manifest, digests checked."""
    schema.parse_manifest({"schemaVersion": 2, **manifest})
    config = schema.check_config(layout.json(manifest["config"]))
    return config, [layout.blob(d) for d in manifest["layers"]]


def _docker_images(root: Path) -> list[Found]:
    """Images of a ``docker save`` archive: ``manifest.json`` names config and layer files."""
    try:
        entries = json.loads((root / "manifest.json").read_bytes())
    except ValueError:
        raise UserError("manifest.json is not valid JSON") from None
    if not isinstance(entries, list) or not entries:
        raise UserError("manifest.json lists no images")
    out: list[Found] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
            raise UserError("malformed manifest.json")
        config_path = _member(root, entry.get("Config"))
        stem = config_path.name.removesuffix(".json").removeprefix("sha256:")
        if refs.hex_of(stem) and len(stem) == 64 and file_digest(config_path)[7:] != stem:
            raise UserError(f"config {refs.short(stem)} does not match its digest")
        try:
            config = json.loads(config_path.read_bytes())
        except ValueError:
            raise UserError("image config is not valid JSON") from None
        tags = entry.get("RepoTags") or [None]
        out.append((config, [_member(root, p) for p in entry["Layers"]], tags[0]))
    return out


def _member(root: Path, name: object) -> Path:
    """A regular file named (relatively) inside an unpacked archive."""
    if not isinstance(name, str):
        raise UserError("malformed manifest.json")
    path = root / os.fsdecode(normalize_name(name))
    _check_inside(root, path)
    if path.is_symlink() or not path.is_file():
        raise UserError(f"missing file in archive: {name}")
    return path


def _tag_for(name: str | None) -> str | None:
    """Our tag for an archive's image name (None when it has no usable one)."""
    if not name:
        return None
    try:
        return refs.normalize_tag(refs.short_name(name))
    except UserError:
        return None


def _stage_layers(store: Store, config: dict[str, Any], blobs: list[Path], tmp: Path,
                  progress: Progress | None, limits: Limits | None = None
                  ) -> tuple[dict[str, Any], list[StagedLayer]]:
    """Check and stage one image's layers; returns the config rewritten to our layer ids."""
    schema.check_config(config)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(blobs):
        raise UserError("config rootfs.diff_ids does not match the manifest's layers")
    staged = []
    for blob, diff_id in zip(blobs, diff_ids, strict=True):
        where = tmp / f"layer{len(list(tmp.glob('layer*')))}"
        where.mkdir()
        with open(blob, "rb") as f:
            staged.append(store.stage_tar(where, f, f"load {diff_id}",
                                          expect_digest=str(diff_id), progress=progress,
                                          limits=limits))
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": [s.digest for s in staged]}
    return config, staged
