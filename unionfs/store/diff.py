"""What an upper (or a layer) changes in the tree below it, as ``docker diff`` lines.

``A path`` added, ``C path`` changed (a copied-up or modified entry, or a directory whose
contents changed), ``D path`` deleted (a whiteout of something that exists below, or a name
hidden by an opaque directory). Paths are absolute, sorted canonically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from unionfs.core import whiteout as wh
from unionfs.core.merge import LayerListing, merge
from unionfs.core.whiteout import Kind
from unionfs.store.tree import (
    NodeType,
    dir_opacity,
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
        marker = os.path.join(root, parent, wh.OCI_WHITEOUT_PREFIX + name)
        return (Kind.WHITEOUT if os.path.lexists(marker) else None), False
    except NotADirectoryError:
        return None, False
    if wh.is_whiteout_stat(st.st_mode, st.st_rdev):
        return Kind.WHITEOUT, False
    if not os.path.isdir(full) or os.path.islink(full):
        return Kind.OTHER, False
    opaque = dir_opacity(read_xattrs(full))[0] or os.path.lexists(
        os.path.join(full, wh.OCI_OPAQUE_MARKER))
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
    """One component: the first layer decides; directories merge down to an opaque one."""
    found: Kind | None = None
    merged: list[int] = []
    for i in layers:
        kind, opaque = _kind_in_layer(roots[i], path)
        if kind is None:
            continue
        if kind is Kind.WHITEOUT or (found is not None and kind is not Kind.DIR):
            break
        found = found or kind
        if kind is not Kind.DIR:
            break
        merged.append(i)
        if opaque:
            break
    return found, merged


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

