"""What the query commands show, as plain data (the CLI only prints it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from unionfs.store.refs import layer_history, short
from unionfs.store.store import Image, Layer, Store


def history_rows(image: Image) -> list[dict[str, Any]]:
    """One row per history record, top first: layer, created, size, comment, created_by.

    Records of config-only steps (``empty_layer``, e.g. a build's CMD) have no layer and
    size 0, as ``docker history`` shows them.
    """
    rows = []
    records = layer_history(image.config)
    for layer_id, rec in zip(image.layer_ids, records, strict=True):
        rec = rec or {}
        for empty in _empty_before(image.config, rec):
            rows.append(_history_row("", 0, empty))
        rows.append(_history_row(layer_id, Layer(image.store, layer_id).size, rec))
    for empty in _empty_before(image.config, None):
        rows.append(_history_row("", 0, empty))
    return rows[::-1]


def _history_row(layer_id: str, size: int, rec: dict[str, Any]) -> dict[str, Any]:
    return {"layer": layer_id, "created": rec.get("created", ""), "size": size,
            "comment": rec.get("comment", ""), "created_by": rec.get("created_by", ""),
            "author": rec.get("author", "")}


def _empty_before(config: dict[str, Any], record: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    """The empty-layer records just before ``record`` (None: those after the last layer)."""
    history = [h for h in config.get("history", []) if isinstance(h, dict)]
    end = next((i for i, h in enumerate(history) if h is record), len(history))
    start = end
    while start > 0 and history[start - 1].get("empty_layer"):
        start -= 1
    return history[start:end]


def inspect_image(image: Image) -> dict[str, Any]:
    """An image as docker's ``image inspect`` shows it (``Config.Cmd``, ``Config.Env``...,
    ``RootFS.Layers``), plus our layers (top first) with their directories."""
    config = image.config.get("config") or {}
    return {
        "Id": image.id,
        "RepoTags": image.tags,
        "Created": image.config.get("created", ""),
        "Author": image.config.get("author", ""),
        "Architecture": image.config.get("architecture", ""),
        "Os": image.config.get("os", ""),
        "Size": image.size,
        "Config": config,
        "RootFS": {"Type": "layers", "Layers": image.layer_ids},
        "History": image.config.get("history", []),
        "Layers": [{"Id": layer.id, "Size": layer.size, "Dir": str(layer.dir)}
                   for layer in image.layers],
    }


def inspect_layer(layer: Layer) -> dict[str, Any]:
    """A layer as JSON data, with the images that use it."""
    users = [im.name if im.tags else im.id for im in layer.store.images()
             if layer.id in im.layer_ids]
    return {"Id": layer.id, "Dir": str(layer.dir), "UsedBy": users, **{
        k.capitalize(): v for k, v in layer.meta.items() if k != "id"}}


def image_tree(images: Sequence[Image]) -> Iterator[str]:
    """Lines of a tree of layers: each image is shown where its layer chain ends.

    Images built on another image appear under it, so shared layers show once.
    """
    store: Store | None = images[0].store if images else None
    if store is None:
        return
    ends: dict[tuple[str, ...], list[Image]] = {}
    for im in images:
        ends.setdefault(tuple(im.layer_ids), []).append(im)
    chains = sorted(ends)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for chain in chains:
        parent = max((c for c in chains if len(c) < len(chain) and chain[: len(c)] == c),
                     key=len, default=())
        children.setdefault(parent, []).append(chain)
    yield from _tree_lines(children, ends, (), "")


def _tree_lines(children: dict[tuple[str, ...], list[tuple[str, ...]]],
                ends: dict[tuple[str, ...], list[Image]], node: tuple[str, ...],
                indent: str) -> Iterator[str]:
    kids = children.get(node, [])
    for i, chain in enumerate(kids):
        last = i == len(kids) - 1
        new_layers = chain[len(node):]
        names = ", ".join(im.name if im.tags else short(im.id) for im in ends[chain])
        layers = " ".join(short(d) for d in new_layers)
        yield f"{indent}{'└── ' if last else '├── '}{names}  [+{len(new_layers)}: {layers}]"
        yield from _tree_lines(children, ends, chain, indent + ("    " if last else "│   "))
