"""Untrusted inputs beyond single bad entries: symlink chains, bombs, deep paths, devices as
inputs, malformed JSON. Each is refused with one line and the store byte-for-byte as before."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from unionfs.store.fsutil import rmtree

from .helpers import (
    assert_one_line_error,
    busybox_rootfs,
    make_tar,
    ok,
    run_cli,
    store_state,
    tmp_is_empty,
)

SYM, LNK, DIR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    return store


def rejected(store: Path, *args: str, words: tuple[str, ...] = ()) -> None:
    before = store_state(store)
    assert_one_line_error(run_cli(store, *args), *words)
    assert store_state(store) == before
    assert tmp_is_empty(store)


def chain_members() -> list[dict[str, object]]:
    """``x -> .``, ``L1 -> x/..``, ... ``L11 -> L10/..``, ``shadow -> L11/etc/shadow``:
    each link alone stays inside; resolved together they reach the host's /etc/shadow."""
    members: list[dict[str, object]] = [{"name": "x", "type_": SYM, "linkname": "."},
                                        {"name": "L1", "type_": SYM, "linkname": "x/.."}]
    members += [{"name": f"L{i}", "type_": SYM, "linkname": f"L{i - 1}/.."}
                for i in range(2, 12)]
    members.append({"name": "shadow", "type_": SYM, "linkname": "L11/etc/shadow"})
    return members


def test_symlink_chain_is_refused(tmp_path: Path, populated: Path) -> None:
    bad = make_tar(tmp_path / "chain.tar", chain_members())
    rejected(populated, "import", str(bad), "--tag", "evil", words=("symlink chain",))


def test_hard_link_to_a_symlink_is_resolved_where_it_lands(tmp_path: Path,
                                                           populated: Path) -> None:
    """``a/b/l -> ../../etc`` is inside; the same link at the top (``h``) is not."""
    bad = make_tar(tmp_path / "hl.tar", [
        {"name": "a", "type_": DIR, "mode": 0o755}, {"name": "a/b", "type_": DIR, "mode": 0o755},
        {"name": "a/b/l", "type_": SYM, "linkname": "../../etc"},
        {"name": "h", "type_": LNK, "linkname": "a/b/l"}])
    rejected(populated, "import", str(bad), "--tag", "evil", words=("symlink chain",))


def test_safe_symlink_chains_are_kept(tmp_path: Path, populated: Path) -> None:
    good = make_tar(tmp_path / "ok.tar", [
        {"name": "usr", "type_": DIR, "mode": 0o755},
        {"name": "usr/lib", "type_": DIR, "mode": 0o755},
        {"name": "lib", "type_": SYM, "linkname": "usr/lib"},
        {"name": "usr/lib/up", "type_": SYM, "linkname": "../../lib/x"},
        {"name": "abs", "type_": SYM, "linkname": "/../../etc"},  # resolved in the image
        {"name": "loop1", "type_": SYM, "linkname": "loop2"}])
    ok(populated, "import", str(good), "--tag", "fine")


def gzip_of_zeros(path: Path, size: int) -> Path:
    """A .tar.gz holding one file of ``size`` zero bytes, made without writing them."""
    info = tarfile.TarInfo("zero")
    info.size = size
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    with open(path, "wb") as out:
        out.write(comp.compress(info.tobuf(tarfile.PAX_FORMAT)))
        for _ in range(size >> 20):
            out.write(comp.compress(chunk))
        out.write(comp.compress(bytes(2 * 10240)))
        out.write(comp.flush())
    return path


def test_decompression_bomb_stops_early(tmp_path: Path, populated: Path) -> None:
    bomb = gzip_of_zeros(tmp_path / "bomb.tar.gz", 256 << 20)
    assert bomb.stat().st_size < 2 << 20
    rejected(populated, "import", str(bomb), "--tag", "evil",
             words=("decompression bomb", "--max-ratio"))
    # raising the ratio lets it expand, up to the size limit
    rejected(populated, "import", str(bomb), "--tag", "evil", "--max-ratio", "10000",
             "--max-layer-size", "100M", words=("expands past 100 MiB",))


def test_size_and_entry_limits_and_their_flags(tmp_path: Path, populated: Path) -> None:
    big = make_tar(tmp_path / "big.tar", [{"name": "f", "data": os.urandom(2 << 20)}])
    rejected(populated, "import", str(big), "--tag", "x", "--max-layer-size", "1M",
             words=("expands past 1 MiB", "--max-layer-size"))
    ok(populated, "import", str(big), "--tag", "big")
    many = make_tar(tmp_path / "many.tar", [{"name": f"f{i}", "data": b"x"} for i in range(50)])
    rejected(populated, "import", str(many), "--tag", "x", "--max-entries", "10",
             words=("more than 10 entries",))
    ok(populated, "import", str(many), "--tag", "many", "--max-entries", "100")


def test_inputs_that_are_not_files_or_directories(tmp_path: Path, populated: Path) -> None:
    rejected(populated, "import", "/dev/zero", "--tag", "x", words=("not a regular file",))
    rejected(populated, "load", "-i", "/dev/zero", words=("not a regular file",))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rejected(populated, "import", str(fifo), "--tag", "x", words=("not a regular file",))


def test_deep_paths(tmp_path: Path, populated: Path) -> None:
    """10,000 levels: refused in one line (no RecursionError); 1,200 levels (2.4 KB) are
    a legal layer, stored, scanned and saved without recursion."""
    def nested(path: Path, depth: int) -> Path:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            name = "a"
            for _ in range(depth):
                info = tarfile.TarInfo(name)
                info.type, info.mode = DIR, 0o755
                tar.addfile(info)
                name += "/a"
        return path

    rejected(populated, "import", str(nested(tmp_path / "deep.tar", 10_000)), "--tag", "x",
             words=("path longer than",))
    other = tmp_path / "other"
    try:
        ok(populated, "import", str(nested(tmp_path / "ok.tar", 1_200)), "--tag", "deep")
        ok(populated, "save", "deep", "-o", str(tmp_path / "deep-saved.tar"))
        ok(other, "load", "-i", str(tmp_path / "deep-saved.tar"))
        assert json.loads(ok(other, "inspect", "deep"))[0]["Id"] == json.loads(
            ok(populated, "inspect", "deep"))[0]["Id"]
    finally:
        # pytest's own clean-up of old temporary directories recurses: remove the deep
        # trees here (iteratively), or a later pytest session would fail on them
        rmtree(populated)
        rmtree(other)


def test_zstd_rootfs_import(tmp_path: Path, populated: Path) -> None:
    plain = make_tar(tmp_path / "r.tar", [{"name": "hello", "data": b"zstd works\n"}])
    subprocess.run(["zstd", "-q", str(plain), "-o", str(tmp_path / "r.tar.zst")], check=True)
    ok(populated, "import", str(tmp_path / "r.tar.zst"), "--tag", "z")
    ok(populated, "import", str(plain), "--tag", "p")
    ids = [json.loads(ok(populated, "inspect", t))[0]["Layers"][0]["Id"] for t in ("z", "p")]
    assert ids[0] == ids[1]


# -- malformed JSON in a loaded layout -------------------------------------------------------


def _layout(tmp_path: Path, store: Path) -> Path:
    ok(store, "save", "base", "-o", str(tmp_path / "img.tar"))
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(tmp_path / "img.tar") as tar:
        tar.extractall(layout, filter="data")
    return layout


def _put(layout: Path, doc: object) -> dict[str, object]:
    data = json.dumps(doc).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _read(layout: Path, digest: str) -> dict[str, Any]:
    return json.loads((layout / "blobs" / "sha256" / digest[7:]).read_text())


def _relink(layout: Path, manifest: dict[str, object]) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(_put(layout, manifest))
    (layout / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("damage", ["manifests-not-objects", "layers-not-objects",
                                    "rootfs-string", "diff-ids-not-digests", "no-schema"])
def test_malformed_layout_json(tmp_path: Path, populated: Path, damage: str) -> None:
    layout = _layout(tmp_path, populated)
    index = json.loads((layout / "index.json").read_text())
    manifest = _read(layout, index["manifests"][0]["digest"])
    if damage == "manifests-not-objects":
        index["manifests"] = [1, "two"]
        (layout / "index.json").write_text(json.dumps(index))
    elif damage == "layers-not-objects":
        manifest["layers"] = ["sha256:" + "0" * 64]
        _relink(layout, manifest)
    elif damage == "no-schema":
        manifest.pop("schemaVersion")
        manifest["schemaVersion"] = 1
        _relink(layout, manifest)
    else:
        config = _read(layout, manifest["config"]["digest"])  # type: ignore[index]
        config["rootfs"] = "layers" if damage == "rootfs-string" else {
            "type": "layers", "diff_ids": [42]}
        manifest["config"].update(_put(layout, config))  # type: ignore[union-attr]
        _relink(layout, manifest)
    subprocess.run(["tar", "-C", layout, "-cf", tmp_path / "bad.tar", "."], check=True)
    other = tmp_path / "other"
    ok(other, "import", str(busybox_rootfs(tmp_path / "r2")), "--tag", "x")
    for source in (tmp_path / "bad.tar", layout):
        rejected(other, "load", "-i", str(source), words=("malformed",))


def test_untrusted_writer_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """Belt and braces below the entry checks: were a symlink ever to sit where the writer
    expects its own directory, openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) refuses it."""
    import errno
    import io

    from unionfs.store.materialize import LayerWriter
    from unionfs.store.tree import Node, NodeType

    outside = tmp_path / "outside"
    outside.mkdir()
    writer = LayerWriter(tmp_path / "fs", beneath=True)
    try:
        writer.add(Node(b"d", NodeType.DIR, 0o755, 0, 0, 0))
        (tmp_path / "fs" / "d").rmdir()
        (tmp_path / "fs" / "d").symlink_to(outside)  # what no archive entry can do
        node = Node(b"d/evil", NodeType.REG, 0o644, 0, 0, 0)
        node.size = 4
        with pytest.raises(OSError) as err:
            writer.add(node, io.BytesIO(b"evil"))
        assert err.value.errno == errno.ELOOP
    finally:
        writer.close()
    assert list(outside.iterdir()) == []
