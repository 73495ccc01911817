"""The build cache: the image config a step produced, by a key of what determines it.

A key is the sha256 of the parent's config digest, the instruction text, the build args in
scope and (COPY/ADD) the digest of the files copied. An entry is the full config after the
step, stored in ``<store>/build-cache/<hex>.json``; it is valid while its layers exist (an
``rmi`` may collect them). A cache hit therefore gives the very same config, so a fully cached
build gives the same image id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from unionfs.store import Store
from unionfs.store.fsutil import canonical_json, read_json, write_atomic
from unionfs.store.store import Layer


def config_digest(config: dict[str, Any]) -> str:
    """The id an image with this config has (sha256 of its canonical JSON)."""
    return "sha256:" + hashlib.sha256(canonical_json(config)).hexdigest()


def step_key(parent: dict[str, Any] | str, *parts: str) -> str:
    """The cache key of a step on ``parent`` (a config, or a base image id)."""
    base = parent if isinstance(parent, str) else config_digest(parent)
    h = hashlib.sha256(base.encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()


class BuildCache:
    """Step results kept in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir: Path = store.root / "build-cache"

    def get(self, key: str) -> dict[str, Any] | None:
        """The config a step with ``key`` made, if it and all its layers are still there."""
        config = read_json(self.dir / f"{key}.json")
        if not isinstance(config, dict):
            return None
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if not all(Layer(self.store, d).dir.is_dir() for d in diff_ids):
            return None
        return config

    def put(self, key: str, config: dict[str, Any]) -> None:
        self.dir.mkdir(exist_ok=True)
        write_atomic(self.dir / f"{key}.json", canonical_json(config))
