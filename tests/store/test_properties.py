"""Property tests on random layer stacks: squash equals the kernel's overlayfs view, and a
layer survives tar → extract → tar unchanged (same digest, same tree)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unionfs.store import Store
from unionfs.store.layertar import layer_digest, write_tar
from unionfs.store.materialize import LayerWriter
from unionfs.store.squash import merged_nodes
from unionfs.store.tree import scan
from unionfs.store.untar import extract, open_stream

from .helpers import describe
from .test_squash import kernel_overlay

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
OPS = st.tuples(st.sampled_from(["file", "dir", "opaque", "whiteout", "symlink"]), PATHS,
                st.binary(max_size=20))
LAYERS = st.lists(st.lists(OPS, max_size=8), min_size=1, max_size=3)


def build_layer(root: Path, ops: list[tuple[str, str, bytes]]) -> Path:
    """A layer directory in overlayfs form from random operations (impossible ones skipped)."""
    root.mkdir(parents=True)
    for kind, rel, data in ops:
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue
        if os.path.lexists(path):
            continue
        if kind == "file":
            path.write_bytes(data)
            os.chmod(path, 0o600 + len(data) % 2 * 0o44)
        elif kind in ("dir", "opaque"):
            path.mkdir()
            if kind == "opaque":
                os.setxattr(path, "trusted.overlay.opaque", b"y")
        elif kind == "whiteout":
            os.mknod(path, 0o020000, os.makedev(0, 0))
        else:
            path.symlink_to(data.hex() or "t")
    return root


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(LAYERS)
def test_squash_matches_kernel_overlayfs(layers: list[list[tuple[str, str, bytes]]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="unionfs-prop-"))
    try:
        dirs = [build_layer(work / f"l{i}", ops) for i, ops in enumerate(layers)][::-1]
        store = Store.open(work / "store")
        squashed = store.add_layer_nodes(merged_nodes(dirs), "test")
        with kernel_overlay(dirs, work / "mnt") as mnt:
            expected = describe(mnt)
        assert describe(squashed.dir) == expected
    finally:
        shutil.rmtree(work)


@SETTINGS
@given(st.lists(OPS, max_size=12))
def test_layer_tar_round_trip(ops: list[tuple[str, str, bytes]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="unionfs-prop-"))
    try:
        layer = build_layer(work / "layer", ops)
        buf = io.BytesIO()
        write_tar(scan(layer), buf)
        buf.seek(0)
        with open_stream(buf) as tar:
            extract(tar, LayerWriter(work / "copy"))
        assert describe(work / "copy") == describe(layer)
        assert layer_digest(scan(work / "copy")) == layer_digest(scan(layer))
        assert layer_digest(scan(layer))[1] == len(buf.getvalue())
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
            names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/")) or _markers_only(names)
    finally:
        shutil.rmtree(work)


def _markers_only(names: list[str]) -> bool:
    """Canonical order, where a whiteout ``.wh.x`` sorts by the name it hides."""
    def key(n: str) -> list[str]:
        parts = n.split("/")
        if parts[-1].startswith(".wh.") and parts[-1] != ".wh..wh..opq":
            parts[-1] = parts[-1][4:]
        return parts
    return names == sorted(names, key=key)


@SETTINGS
@given(LAYERS, st.lists(OPS, max_size=8))
def test_diff_agrees_with_the_merged_views(layers: list[list[tuple[str, str, bytes]]],
                                           upper_ops: list[tuple[str, str, bytes]]) -> None:
    """A/C/D lines against the trees with and without the upper (squash is the oracle)."""
    from unionfs.store.diff import changes

    work = Path(tempfile.mkdtemp(prefix="unionfs-prop-"))
    try:
        lowers = [build_layer(work / f"l{i}", ops) for i, ops in enumerate(layers)][::-1]
        upper = build_layer(work / "upper", upper_ops)
        before = {n.path for n in merged_nodes(lowers)}
        after = {n.path for n in merged_nodes([upper, *lowers])}
        lines = [(k, p[1:]) for k, p in changes(upper, lowers)]
        for kind, path in lines:
            assert (path in before, path in after) == {
                "A": (False, True), "C": (True, True), "D": (True, False)}[kind], (kind, path)
        # What disappeared is listed as D, or lies below something listed (a directory
        # deleted, or replaced by a file: C, as docker diff shows it).
        listed = {p for k, p in lines if k in "CD"}
        for path in before - after:
            parts = path.split(b"/")
            assert any(b"/".join(parts[:i]) in listed for i in range(1, len(parts) + 1))
        assert after - before <= {p for k, p in lines if k == "A"}
    finally:
        shutil.rmtree(work)
