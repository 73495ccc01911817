"""The merged view of a stack of layers, as changeset nodes: what a squash stores.

Walks the layers top down with the union's own precedence rules (:mod:`unionfs.core.merge`):
whiteouts remove names, an opaque directory ends its merge, a non-directory hides everything
below it. The result has no whiteouts and no opaque directories: it is a complete tree.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from unionfs.core.merge import LayerListing, contributing_layers, merge
from unionfs.errors import UserError
from unionfs.store import refs
from unionfs.store.fsutil import now_iso
from unionfs.store.store import Image, Progress, Store
from unionfs.store.tree import Node, detect_hardlink, listing, union_kind


def _opaque_in(per_layer: dict[int, dict[bytes, Node]], name: bytes) -> Callable[[int], bool]:
    """Whether directory ``name`` is opaque in a given layer."""
    return lambda i: per_layer[i][name].opaque


def merged_nodes(layer_dirs: Sequence[str | bytes | os.PathLike[str]]) -> Iterator[Node]:
    """Every node of the merged view of ``layer_dirs`` (top first), in canonical order."""
    roots = [os.fsencode(p) for p in layer_dirs]
    yield from _merge_dir(roots, b"", tuple(range(len(roots))), {})


def _merge_dir(roots: list[bytes], rel: bytes, layers: tuple[int, ...],
               inodes: dict[tuple[int, int], bytes]) -> Iterator[Node]:
    per_layer = {i: listing(roots[i], rel) for i in layers}
    merged = merge(
        (i, LayerListing({n: union_kind(node) for n, node in per_layer[i].items()}))
        for i in layers
    )
    for name in sorted(merged):
        entry = merged[name]
        node = replace(per_layer[entry.layer][name], xattrs=dict(
            per_layer[entry.layer][name].xattrs))
        if entry.is_dir:
            node.opaque = False
            yield node
            below = contributing_layers(entry.dir_layers, _opaque_in(per_layer, name))
            yield from _merge_dir(roots, node.path, below, inodes)
            continue
        detect_hardlink(node, inodes)
        yield node


def squash_image(store: Store, ref: str, into: str | None = None, message: str = "",
                 progress: Progress | None = None,
                 in_use: Callable[[Image], str | None] | None = None) -> Image:
    """A one-layer image with the merged content of ``ref``; tagged ``into`` or ``ref``'s tag.

    Without ``into`` the squashed image takes over the tag, and the old image is removed if
    nothing else uses it.
    """
    image = store.image(ref)
    tag = refs.normalize_tag(into) if into else _own_tag(image, ref)
    layer = store.add_layer_nodes(merged_nodes(image.layer_dirs), f"squash of {image.id}",
                                  link=True, progress=progress)
    base = {k: v for k, v in image.config.items() if k not in ("rootfs", "history")}
    base["rootfs"], base["history"] = {"type": "layers", "diff_ids": []}, []
    history = refs.history_entry(now_iso(), f"unionfs squash {ref}", message or
                                 f"squashed {len(image.layer_ids)} layers")
    new = store.publish_image(refs.new_config(base, layer.id, history), tag)
    if not into and new.id != image.id and not image.tags and not store.children(image):
        with contextlib.suppress(UserError):
            from unionfs.store.mounts import mount_user

            store.remove(image.id, in_use=in_use or (lambda im: mount_user(store, im)))
    return new


def _own_tag(image: Image, ref: str) -> str:
    try:
        asked = refs.normalize_tag(ref)
    except UserError:
        asked = ""
    if asked in image.tags:
        return asked
    if image.tags:
        return image.tags[0]
    raise UserError(f"image {ref} has no name: give --into NEW")
