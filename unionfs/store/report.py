"""What the query commands show, as plain data (the CLI only prints it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from unionfs.store.refs import layer_history, short
from unionfs.store.store import Image, Layer, Store


def history_rows(image: Image) -> list[dict[str, Any]]:
    """One row per layer, top first: layer, created, size, comment, created_by."""
    rows = []
    records = layer_history(image.config)
    for layer_id, rec in zip(image.layer_ids, records, strict=True):
        rec = rec or {}
        rows.append({
            "layer": layer_id,
            "created": rec.get("created", ""),
            "size": Layer(image.store, layer_id).size,
            "comment": rec.get("comment", ""),
            "created_by": rec.get("created_by", ""),
            "author": rec.get("author", ""),
        })
    return rows[::-1]


def inspect_image(image: Image) -> dict[str, Any]:
    """An image as JSON data: id, tags, config, layers (top first) with their directories."""
    return {
        "Id": image.id,
        "RepoTags": image.tags,
        "Created": image.config.get("created", ""),
        "Author": image.config.get("author", ""),
        "Size": image.size,
        "Layers": [{"Id": layer.id, "Size": layer.size, "Dir": str(layer.dir)}
                   for layer in image.layers],
        "Config": image.config,
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
