"""A layer's digest taken while it is written equals the digest of scanning the result, and
the writer falls back to that scan whenever it cannot vouch for what it hashed."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings

import unionfs.store.store as store_mod
from unionfs.store import Store
from unionfs.store.layertar import TarDigest, layer_digest
from unionfs.store.materialize import LayerWriter
from unionfs.store.squash import merged_nodes
from unionfs.store.tree import Node, readahead, scan

from .test_properties import LAYERS, build_layer


def varied_upper(root: Path) -> Path:
    """An upper with every kind of entry the one-pass writer handles."""
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"data")
    (root / "d" / "empty").write_bytes(b"")
    (root / "big").write_bytes(os.urandom((1 << 20) + 777))  # more than one read chunk
    (root / ("n" * 120)).write_bytes(b"long name")
    (root / "caf\u00e9").write_bytes(b"not ascii")
    os.link(root / "d" / "f", root / "d" / "g")
    (root / "sym").symlink_to("d/f")
    os.mknod(root / "gone", 0o020000, os.makedev(0, 0))
    (root / "d" / ".wh.old").write_bytes(b"")
    (root / "o").mkdir()
    os.setxattr(root / "o", "trusted.overlay.opaque", b"y")
    (root / "o" / "x").write_bytes(b"x")
    os.setxattr(root / "d" / "f", "user.note", b"\x00\xffv")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", b"private")
    os.mkfifo(root / "fifo")
    os.chmod(root / "d", 0o2750)
    os.chown(root / "d" / "empty", 1234, 5678)
    os.utime(root / "d", ns=(0, 1_600_000_000_123_456_789))
    return root


def _no_rescan(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the staged layer was scanned again")

    monkeypatch.setattr(store_mod, "layer_digest", fail)


def test_one_pass_digest_is_the_digest_of_the_layer(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = varied_upper(tmp_path / "up")
    expected = layer_digest(scan(src))
    _no_rescan(monkeypatch)
    layer = Store.open(tmp_path / "store").add_layer_dir(src)
    assert (layer.id, layer.size) == expected
    assert layer_digest(scan(layer.dir)) == expected


def test_an_owner_not_kept_falls_back_to_a_scan(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = varied_upper(tmp_path / "up")

    def refuse(*_a: Any, **_k: Any) -> None:
        raise PermissionError(errno.EPERM, "not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    monkeypatch.setattr(os, "lchown", refuse)
    layer = Store.open(tmp_path / "store").add_layer_dir(src)
    assert (layer.id, layer.size) == layer_digest(scan(layer.dir))
    assert layer.id != layer_digest(scan(src))[0]


def test_a_file_that_grew_falls_back_to_a_scan(tmp_path: Path) -> None:
    src = varied_upper(tmp_path / "up")
    nodes = list(scan(src))
    (src / "d" / "f").write_bytes(b"data, and more written meanwhile")
    writer = LayerWriter(tmp_path / "out", digest=TarDigest())
    for node in nodes:
        writer.add(node)
    writer.finish()
    assert not writer.exact


def test_nodes_out_of_order_are_not_trusted(tmp_path: Path) -> None:
    src = varied_upper(tmp_path / "up")
    nodes = sorted(scan(src), key=lambda n: n.path.count(b"/"))  # parents first, not canonical
    writer = LayerWriter(tmp_path / "out", digest=TarDigest())
    for node in nodes:
        writer.add(node)
    writer.finish()
    assert not writer.exact
    digest = TarDigest()
    writer = LayerWriter(tmp_path / "again", digest=digest)
    for node in scan(src):
        writer.add(node)
    writer.finish()
    assert writer.exact and digest.finish() == layer_digest(scan(src))


def test_readahead_passes_nodes_through_and_stops_its_helper(tmp_path: Path) -> None:
    import threading

    src = varied_upper(tmp_path / "up")
    nodes = list(scan(src))
    assert [n.path for n in readahead(iter(nodes), files=2, max_bytes=10)] == [
        n.path for n in nodes]
    ahead = readahead(iter(nodes), files=3)
    next(ahead)
    ahead.close()  # a consumer that gives up early
    assert not [t for t in threading.enumerate() if t.name == "readahead"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LAYERS)
def test_staged_layer_ids_are_digests_of_their_content(
        layers: list[list[tuple[str, str, bytes]]]) -> None:
    """For random uppers and their squash, the id is the digest of the stored directory."""
    work = Path(tempfile.mkdtemp(prefix="unionfs-onepass-"))
    try:
        dirs = [build_layer(work / f"l{i}", ops) for i, ops in enumerate(layers)][::-1]
        store = Store.open(work / "store")
        for layer in [store.add_layer_dir(dirs[0]),
                      store.add_layer_nodes(merged_nodes(dirs), "squash")]:
            assert (layer.id, layer.size) == layer_digest(scan(layer.dir))
        assert store.add_layer_dir(dirs[0]).id == layer_digest(scan(dirs[0]))[0]
    finally:
        shutil.rmtree(work)


def test_layer_digest_reads_exactly_the_scanned_size(tmp_path: Path) -> None:
    src = varied_upper(tmp_path / "up")
    nodes = list(scan(src))
    def opener(node: Node) -> BinaryIO:
        assert node.source is not None
        return open(node.source, "rb")  # layer_digest closes it

    via_files = layer_digest(iter(nodes), opener=opener)
    assert layer_digest(iter(nodes)) == via_files
    (src / "big").write_bytes(b"shrunk")
    with pytest.raises(OSError, match="changed size"):
        layer_digest(iter(nodes))
