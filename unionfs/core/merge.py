"""Precedence and merged listings: which layer answers for each name of a directory.

Layers are numbered by position in the stack, 0 = top (the upper when there is one). A
directory's *contributing layers* are the layers, top down, in which it exists as a directory,
cut after the first layer where it is opaque. The rules, applied top down over those layers:

* the first layer that has a name decides it;
* a whiteout ends the search: the name does not exist;
* a non-directory ends the search: it hides everything below;
* a directory merges with the directories of the same name below it, until a whiteout, a
  non-directory, or (decided when the child itself is entered) an opaque layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from unionfs.core.whiteout import Kind


@dataclass(slots=True)
class LayerListing:
    """One layer's view of one directory, markers already translated."""

    entries: dict[bytes, Kind]
    opaque: bool = False
    redirect: bytes | None = None  # overlay.redirect of the directory itself (trusted mode)
    impure: bool = False  # the upper directory is marked as holding entries with an origin
    # name -> its readdir(3) entry, packed (:func:`pack_dirent`), read in the same pass
    dirents: dict[bytes, int] | None = None


@dataclass(slots=True)
class Entry:
    """A name in a merged directory: where it lives and which layers it merges."""

    layer: int
    kind: Kind
    dir_layers: tuple[int, ...] = ()
    # Its readdir(3) entry (inode number and type) as the view read it, with the layer it
    # was read in (:func:`pack_dirent`; 0: not known). True while ``layer`` is still that
    # layer: every change through the union that gives a name another file (create,
    # rename, link) makes a new entry, and a copy-up changes ``layer``.
    dirent: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


_LAYER_BITS = 12


def pack_dirent(layer: int, ino: int, dtype: int) -> int:
    """The inode number and ``DT_*`` type of a name in layer ``layer`` as one int (one slot
    per entry in a view); 0 (not known) for a layer beyond the 4095th."""
    if layer >> _LAYER_BITS:
        return 0
    return (ino << _LAYER_BITS | layer) << 4 | dtype


def unpack_dirent(packed: int, layer: int) -> tuple[int, int] | None:
    """(inode number, ``DT_*`` type) of :func:`pack_dirent`, if it was read in ``layer``."""
    if not packed or (packed >> 4) & ((1 << _LAYER_BITS) - 1) != layer:
        return None
    return packed >> (4 + _LAYER_BITS), packed & 0xF


def merge(listings: Iterable[tuple[int, LayerListing]]) -> dict[bytes, Entry]:
    """The merged directory from its contributing layers' listings, given top down.

    Names keep the order in which they are first met (top layer first), so a listing is
    stable for as long as the directory does not change.
    """
    merged: dict[bytes, Entry] = {}
    closed: set[bytes] = set()
    for layer, listing in listings:
        dirents = listing.dirents or {}
        for name, kind in listing.entries.items():
            if name in closed:
                continue
            entry = merged.get(name)
            if entry is None:
                if kind is Kind.DIR:
                    merged[name] = Entry(layer, kind, (layer,), dirents.get(name, 0))
                    continue
                closed.add(name)
                if kind is Kind.OTHER:
                    merged[name] = Entry(layer, kind, (), dirents.get(name, 0))
            elif kind is Kind.DIR:
                entry.dir_layers += (layer,)
            else:
                closed.add(name)
    return merged


def resolve_name(found: Iterable[tuple[int, Kind]]) -> Entry | None:
    """One name by the rules above, from its kinds in the layers that have it, top down
    (the same answer :func:`merge` gives for it); reads ``found`` only as far as it must."""
    entry: Entry | None = None
    for layer, kind in found:
        if entry is None:
            if kind is Kind.WHITEOUT:
                return None
            if kind is Kind.OTHER:
                return Entry(layer, kind)
            entry = Entry(layer, kind, (layer,))
        elif kind is Kind.DIR:
            entry.dir_layers += (layer,)
        else:
            return entry
    return entry


def contributing_layers(
    dir_layers: Sequence[int], is_opaque: Callable[[int], bool]
) -> tuple[int, ...]:
    """Cut a directory's layers after the first one in which it is opaque."""
    for i, layer in enumerate(dir_layers):
        if is_opaque(layer):
            return tuple(dir_layers[: i + 1])
    return tuple(dir_layers)



def covered_and_whiteouts(
    listings: Iterable[tuple[int, LayerListing]],
) -> tuple[set[bytes], set[bytes]]:
    """Of a directory's contributing layers' listings (top down): the names some lower layer
    shows (``covered``: deleting one needs a whiteout, see :mod:`unionfs.core.delete`), and
    the upper's (layer 0's) whiteouts."""
    covered: set[bytes] = set()
    seen: set[bytes] = set()
    whiteouts: set[bytes] = set()
    for index, listing in listings:
        if index == 0:
            whiteouts = {n for n, k in listing.entries.items() if k is Kind.WHITEOUT}
            continue
        for name, kind in listing.entries.items():
            if name not in seen:
                seen.add(name)
                if kind is not Kind.WHITEOUT:
                    covered.add(name)
    return covered, whiteouts
