"""The pure precedence rules: merged listings, whiteouts, opaque dirs (no mount)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unionfs.core.merge import Entry, LayerListing, contributing_layers, merge, resolve_name
from unionfs.core.whiteout import Kind, oci_whiteout_target, translate_entries

D, F, W = Kind.DIR, Kind.OTHER, Kind.WHITEOUT


def stack(*layers: dict[bytes, Kind]) -> list[tuple[int, LayerListing]]:
    return [(i, LayerListing(entries)) for i, entries in enumerate(layers)]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # the topmost layer that has a name wins
        (({b"a": F}, {b"a": F}), {b"a": Entry(0, F)}),
        (({}, {b"a": F}), {b"a": Entry(1, F)}),
        # a whiteout ends the search
        (({b"a": W}, {b"a": F}), {}),
        (({b"a": W}, {b"a": D}), {}),
        # a non-directory hides everything below, directory or not
        (({b"a": F}, {b"a": D}), {b"a": Entry(0, F)}),
        # a directory does not merge with a file below it
        (({b"a": D}, {b"a": F}, {b"a": D}), {b"a": Entry(0, D, (0,))}),
        # directories merge down to a whiteout
        (({b"a": D}, {b"a": D}, {b"a": W}, {b"a": D}), {b"a": Entry(0, D, (0, 1))}),
        (({b"a": D}, {}, {b"a": D}), {b"a": Entry(0, D, (0, 2))}),
        # a whiteout below a file changes nothing
        (({b"a": F}, {b"a": W}), {b"a": Entry(0, F)}),
    ],
)
def test_precedence(layers: tuple[dict[bytes, Kind], ...], expected: dict[bytes, Entry]) -> None:
    assert merge(stack(*layers)) == expected


def test_listing_order_is_stable_top_layer_first() -> None:
    merged = merge(stack({b"z": F, b"b": F}, {b"a": F, b"z": F}))
    assert list(merged) == [b"z", b"b", b"a"]


def test_opaque_cuts_contributing_layers() -> None:
    opaque = {1}
    assert contributing_layers((0, 1, 2), lambda i: i in opaque) == (0, 1)
    assert contributing_layers((0, 2), lambda i: i in opaque) == (0, 2)
    assert contributing_layers((1, 2), lambda i: i in opaque) == (1,)


def test_oci_markers_become_whiteouts_and_opacity() -> None:
    entries, opaque = translate_entries({b".wh.a": F, b".wh..wh..opq": F, b"b": F})
    assert entries == {b"a": W, b"b": F}
    assert opaque
    assert oci_whiteout_target(b".wh.") is None
    assert oci_whiteout_target(b".wh..wh..opq") is None
    assert oci_whiteout_target(b".wh.x.y") == b"x.y"


def test_oci_whiteout_of_a_name_the_layer_also_has_is_ignored() -> None:
    entries, opaque = translate_entries({b".wh.a": F, b"a": F})
    assert entries == {b"a": F}
    assert not opaque


names = st.sampled_from([b"a", b"b", b"c", b"d"])
layer = st.dictionaries(names, st.sampled_from([D, F, W]), max_size=4)


def resolve_one(layers: list[dict[bytes, Kind]], name: bytes) -> Entry | None:
    """Reference: walk down the layers for one name, as a lookup does."""
    found: Entry | None = None
    for i, entries in enumerate(layers):
        kind = entries.get(name)
        if kind is None:
            continue
        if found is None:
            if kind is W:
                return None
            found = Entry(i, kind, (i,) if kind is D else ())
            if kind is F:
                return found
        elif kind is D:
            found.dir_layers += (i,)
        else:
            return found
    return found


@given(st.lists(layer, min_size=1, max_size=5))
def test_merged_listing_equals_the_names_that_resolve(layers: list[dict[bytes, Kind]]) -> None:
    merged = merge(stack(*layers))
    for name in (b"a", b"b", b"c", b"d"):
        assert merged.get(name) == resolve_one(layers, name)


@given(st.lists(layer, min_size=1, max_size=5))
def test_a_name_whited_out_on_top_never_resolves(layers: list[dict[bytes, Kind]]) -> None:
    merged = merge(stack(*layers))
    for name, kind in layers[0].items():
        if kind is W:
            assert name not in merged


@given(st.lists(layer, min_size=1, max_size=5))
def test_resolving_one_name_agrees_with_the_merge(layers: list[dict[bytes, Kind]]) -> None:
    merged = merge(stack(*layers))
    for name in (b"a", b"b", b"c", b"d"):
        found = [(i, entries[name]) for i, entries in enumerate(layers) if name in entries]
        assert resolve_name(iter(found)) == merged.get(name)
