"""``save --format docker-archive``: the tar ``docker save`` writes, which ``docker load`` reads.

``manifest.json`` (``[{"Config", "RepoTags", "Layers"}]``), the config as ``<hex>.json``,
each layer's canonical tar as ``<diff_id hex>/layer.tar`` and the legacy ``repositories``
file; normalized metadata and sorted entries, so the same image saved twice is the same bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

from unionfs.store import refs
from unionfs.store.fsutil import canonical_json
from unionfs.store.oci import Progress, _tar_entry, _write_layer_blobs
from unionfs.store.store import Store


def save(store: Store, ref: str, out: Path, progress: Progress | None = None
         ) -> list[dict[str, Any]]:
    """Write image ``ref`` as a docker-archive at ``out`` (atomically); returns manifest.json."""
    image = store.image(ref)
    tags = _repo_tags(ref, image.tags)
    with store.staging("save") as tmp:
        blobs = _write_layer_blobs(image, tmp, progress)
        config = canonical_json(image.config)
        config_name = image.id.removeprefix("sha256:") + ".json"
        layer_names = [b["digest"][7:] + "/layer.tar" for b in blobs]
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
        files: dict[str, bytes | Path] = {"manifest.json": canonical_json(manifest),
                                          config_name: config}
        if tags and blobs:
            repos: dict[str, dict[str, str]] = {}
            for tag in tags:
                name, t = refs.split_ref(tag)
                repos.setdefault(name, {})[t] = blobs[-1]["digest"][7:]
            files["repositories"] = canonical_json(repos)
        for blob, name in zip(blobs, layer_names, strict=True):
            files[name] = tmp / blob["digest"][7:]
        part = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            _write(part, files)
            os.rename(part, out)
        finally:
            if part.exists():
                part.unlink()
    return manifest


def _repo_tags(ref: str, tags: list[str]) -> list[str]:
    """The tag asked for first when it is one of the image's, then the others."""
    try:
        asked = refs.normalize_tag(ref)
    except Exception:
        asked = ""
    return sorted(tags, key=lambda t: (t != asked, t))


def _write(part: Path, files: dict[str, bytes | Path]) -> None:
    dirs = sorted({name.rpartition("/")[0] for name in files if "/" in name})
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tar_entry(d, 0, is_dir=True))
        for name in sorted(files):
            content = files[name]
            if isinstance(content, bytes):
                tar.addfile(_tar_entry(name, len(content)), io.BytesIO(content))
            else:
                with open(content, "rb") as f:
                    tar.addfile(_tar_entry(name, content.stat().st_size), f)
