"""The hand-built tar headers of the canonical layer tar are byte for byte tarfile's."""

from __future__ import annotations

import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from unionfs.store import layertar
from unionfs.store.tree import Node, NodeType

NAME_BYTES = st.sampled_from([b"a", b"b", b"/", b".", b"\xc3\xa9", b"\xff", b"x" * 40])
NAMES = st.lists(NAME_BYTES, min_size=1, max_size=6).map(lambda p: b"".join(p).strip(b"/")
                                                          or b"n")
EDGE_INTS = st.sampled_from([0, 1, 8**7 - 1, 8**7, 8**11 - 1, 8**11, -1])
MTIMES = st.sampled_from([0, -1, 1_700_000_000_999_999_999, (8**11 - 1) * 10**9, 8**11 * 10**9])


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from([t for t in NodeType if t is not NodeType.WHITEOUT]))
    node = Node(draw(NAMES), kind, draw(st.integers(0, 0o7777)), draw(EDGE_INTS),
                draw(EDGE_INTS), draw(MTIMES), size=draw(EDGE_INTS),
                linkname=draw(st.sampled_from([b"", b"t", b"l" * 100, b"l" * 101, b"\xff"])),
                devmajor=draw(st.sampled_from([0, 7, 8**7 - 1])), devminor=draw(EDGE_INTS))
    if draw(st.booleans()) and draw(st.booleans()):
        node.xattrs = {b"user.k": draw(st.binary(max_size=4))}
    node.opaque = kind is NodeType.DIR and draw(st.booleans())
    return node


def _with_tarfile(node: Node) -> bytes:
    buf = layertar.tar_info(node).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if node.type is NodeType.DIR and node.opaque:
        marker = layertar.marker_info(node.path + b"/.wh..wh..opq")
        buf += marker.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return buf


@settings(max_examples=3000, deadline=None)
@given(nodes())
def test_entry_header_is_what_tarfile_writes(node: Node) -> None:
    try:
        expected = _with_tarfile(node)
    except ValueError:  # tarfile cannot write it either (device number overflow, ...)
        return
    assert layertar.entry_header(node) == expected


def test_whiteout_header_is_the_marker_file() -> None:
    node = Node(b"d/gone", NodeType.WHITEOUT, 0o644, 5, 5, 10**18)
    expected = layertar.marker_info(b"d/.wh.gone").tobuf(tarfile.PAX_FORMAT, "utf-8",
                                                         "surrogateescape")
    assert layertar.entry_header(node) == expected


def test_fast_headers_are_in_use() -> None:
    assert layertar._fast_headers()
