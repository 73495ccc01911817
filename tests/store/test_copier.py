"""Files copied by worker threads come back in order: the one-pass digest stays exact over
more files than the queue holds, around large files and hard links; a failed copy fails the
layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import unionfs.store.copier as copier
from unionfs.store import Store
from unionfs.store.layertar import TarDigest, layer_digest
from unionfs.store.materialize import LayerWriter
from unionfs.store.tree import scan


def many_files(root: Path, count: int) -> Path:
    for i in range(count):
        d = root / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(b"x" * (i % 1500))
        if i % 250 == 0:
            os.link(d / f"f{i:05d}", d / f"h{i:05d}")
            (d / f"s{i:05d}").symlink_to(f"f{i:05d}")
    (root / "d3" / "large").write_bytes(os.urandom(copier.SMALL_FILE + 3))
    return root


def test_in_order_over_more_files_than_the_queue_holds(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copier, "MAX_FILES", 64)  # the bounds are met many times over
    src = many_files(tmp_path / "up", 1200)
    expected = layer_digest(scan(src))
    digest = TarDigest()
    writer = LayerWriter(tmp_path / "out", digest=digest)
    writer.add_all(scan(src))
    writer.finish()
    assert writer.exact
    assert digest.finish() == expected == layer_digest(scan(tmp_path / "out"))


def test_a_failed_copy_fails_the_layer_and_leaves_no_thread(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import threading

    src = many_files(tmp_path / "up", 100)
    real_open = os.open

    def failing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsdecode(path).endswith("f00042") and not flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing)
    store = Store.open(tmp_path / "store")
    with pytest.raises(PermissionError):
        store.add_layer_dir(src)
    assert not [t for t in threading.enumerate() if t.name.startswith("layer-copy")]
    assert store.layer_ids() == []
