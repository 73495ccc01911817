"""What an upper (or a layer) changes in the tree below it, as ``docker diff`` lines.

``A path`` added, ``C path`` changed (a copied-up or modified entry, or a directory whose
contents changed), ``D path`` deleted (a whiteout of something that exists below, or a name
hidden by an opaque directory). Paths are absolute, sorted canonically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from unionfs.core.merge import LayerListing, merge, resolve_name
from unionfs.core.whiteout import Kind
from unionfs.layers import ondisk
from unionfs.store.tree import (
    NodeType,
    listing,
    read_xattrs,
    scan,
    sort_key,
    union_kind,
)


def _kind_in_layer(root: bytes, path: bytes) -> tuple[Kind | None, bool]:
    """What ``path`` is in one layer (ignoring its parents), and whether it is opaque."""
    full = os.path.join(root, path)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        parent, _, name = path.rpartition(b"/")
        oci = ondisk.has_oci_whiteout(os.path.join(root, parent), name)
        return (Kind.WHITEOUT if oci else None), False
    except NotADirectoryError:
        return None, False
    if ondisk.is_device_whiteout(st):
        return Kind.WHITEOUT, False
    if not os.path.isdir(full) or os.path.islink(full):
        return Kind.OTHER, False
    opaque = ondisk.dir_marks(read_xattrs(full).get).opaque or ondisk.has_oci_opaque_marker(
        full)
    return Kind.DIR, opaque


def resolve(roots: Sequence[bytes], path: bytes) -> tuple[Kind | None, list[int]]:
    """What ``path`` is in the merged view of ``roots`` (top first): DIR, OTHER or None, and
    for a directory the layers that contribute to its listing."""
    layers = list(range(len(roots)))
    found: Kind | None = None
    parts = path.split(b"/")
    for depth in range(len(parts)):
        prefix = b"/".join(parts[: depth + 1])
        found, layers = _resolve_step(roots, prefix, layers)
        if found is None or (depth < len(parts) - 1 and found is not Kind.DIR):
            return None, []
    return found, layers


def _resolve_step(roots: Sequence[bytes], path: bytes, layers: list[int]
                  ) -> tuple[Kind | None, list[int]]:
    """One component, by the core's precedence (read lazily: only the layers it needs)."""

    def kinds() -> Iterator[tuple[int, Kind]]:
        for i in layers:
            kind, opaque = _kind_in_layer(roots[i], path)
            if kind is not None:
                yield i, kind
                if opaque:  # an opaque directory ends the merge below it
                    return

    entry = resolve_name(kinds())
    if entry is None:
        return None, []
    return entry.kind, list(entry.dir_layers)


def lookup(roots: Sequence[bytes], path: bytes) -> Kind | None:
    """What ``path`` is in the merged view of ``roots`` (top first): DIR, OTHER or None."""
    return resolve(roots, path)[0]


def changes(upper: str | os.PathLike[str], lowers: Sequence[str | os.PathLike[str]]
            ) -> Iterator[tuple[str, bytes]]:
    """(letter, absolute path) for each change ``upper`` makes over ``lowers`` (top first)."""
    roots = [os.fsencode(p) for p in lowers]
    out: list[tuple[str, bytes]] = []
    for node in scan(upper):
        below = lookup(roots, node.path) if roots else None
        if node.type is NodeType.WHITEOUT:
            if below is not None:
                out.append(("D", node.path))
            continue
        out.append(("C" if below is not None else "A", node.path))
        if node.type is NodeType.DIR and node.opaque and below is Kind.DIR:
            out += [("D", p) for p in _hidden_children(roots, node.path, upper)]
    out.sort(key=lambda c: sort_key(c[1]))
    for letter, path in out:
        yield letter, b"/" + path


def _hidden_children(roots: Sequence[bytes], path: bytes,
                     upper: str | os.PathLike[str]) -> list[bytes]:
    """Names of the merged lower directory ``path`` that an opaque upper dir hides."""
    present = set(os.listdir(os.path.join(os.fsencode(upper), path)))
    _kind, layers = resolve(roots, path)
    listings = [(i, LayerListing({name: union_kind(node) for name, node in
                                  listing(roots[i], path).items()})) for i in layers]
    return [path + b"/" + name for name in sorted(merge(listings)) if name not in present]

