"""What the store knows of registry blobs, in ``registry.json`` at the store's root.

- ``layers``: registry blob digest -> stored layer id (a pull skips blobs it already has);
- ``sources``: blob digest -> repositories (``host/path``) known to hold it (a push mounts
  the blob from one of them on the same registry instead of uploading it);
- ``compressed``: layer id -> {compression: [blob digest, size]} (a push asks whether the
  registry has the blob before compressing the layer again).

Only a cache: a wrong or missing entry costs a download or an upload, never correctness
(everything read from a registry is checked against its digest anyway).
"""

from __future__ import annotations

from typing import Any

from unionfs.store.fsutil import canonical_json, read_json, write_atomic
from unionfs.store.store import Store

FILE = "registry.json"


def _load(store: Store) -> dict[str, Any]:
    data = read_json(store.root / FILE, {}) or {}
    return data if isinstance(data, dict) else {}


def _update(store: Store, change: Any) -> None:
    with store.lock():
        data = _load(store)
        change(data)
        write_atomic(store.root / FILE, canonical_json(data))


def layers_of(store: Store) -> dict[str, str]:
    found = _load(store).get("layers") or {}
    return found if isinstance(found, dict) else {}


def record(store: Store, repository: str, layers: dict[str, str]) -> None:
    """Note that ``repository`` holds these blobs, which are these stored layers."""
    def change(data: dict[str, Any]) -> None:
        data.setdefault("layers", {}).update(layers)
        sources = data.setdefault("sources", {})
        for digest in layers:
            repos = sources.setdefault(digest, [])
            if repository not in repos:
                repos.append(repository)
                del repos[:-8]  # a few recent ones are enough to mount from

    _update(store, change)


def sources(store: Store, digest: str) -> list[str]:
    found = (_load(store).get("sources") or {}).get(digest) or []
    return [s for s in found if isinstance(s, str)]


def compressed(store: Store, layer_id: str, kind: str) -> tuple[str, int] | None:
    entry = ((_load(store).get("compressed") or {}).get(layer_id) or {}).get(kind)
    if isinstance(entry, list) and len(entry) == 2:
        return str(entry[0]), int(entry[1])
    return None


def record_compressed(store: Store, layer_id: str, kind: str, digest: str, size: int) -> None:
    def change(data: dict[str, Any]) -> None:
        data.setdefault("compressed", {}).setdefault(layer_id, {})[kind] = [digest, size]

    _update(store, change)
