"""Squash equals the merged view: checked against the kernel's own overlayfs of the layers,
and commit + remount (with unionfs itself) shows the same tree."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs.store import Store

from .helpers import busybox_rootfs, describe, mount_image, ok, run_cli, unmount


@contextlib.contextmanager
def kernel_overlay(lowers: list[Path], mnt: Path) -> Iterator[Path]:
    """A read-only kernel overlayfs of ``lowers`` (top first) at ``mnt``."""
    mnt.mkdir(parents=True, exist_ok=True)
    empty = mnt.parent / (mnt.name + "-empty")
    empty.mkdir(exist_ok=True)
    spec = ":".join(str(p) for p in [*lowers, empty])
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={spec}",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def second_layer(up: Path) -> Path:
    (up / "etc").mkdir(parents=True)
    os.mknod(up / "etc" / "hostname", 0o020000, os.makedev(0, 0))  # delete
    (up / "etc" / "passwd").write_text("changed\n")  # breaks the hard link of passwd.link
    (up / "usr").mkdir()
    os.setxattr(up / "usr", "trusted.overlay.opaque", b"y")  # hides usr/share/doc
    (up / "usr" / "bin").mkdir()
    (up / "usr" / "bin" / "tool").write_text("tool")
    (up / "bin").mkdir()
    (up / "bin" / "ls").write_text("not a symlink anymore")
    (up / "data").mkdir()
    (up / "data" / "a").write_text("a")
    os.link(up / "data" / "a", up / "data" / "a-link")
    return up


def third_layer(up: Path) -> Path:
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "hostname").write_text("back again\n")  # re-created after a whiteout
    (up / "data").write_text("a file where a dir was")  # dir replaced by a file
    (up / "tmp").mkdir(mode=0o755)  # dir metadata changed (was 1777)
    os.chmod(up / "tmp", 0o700)
    (up / "bin").mkdir()
    (up / ".wh.cat").write_bytes(b"")  # an OCI whiteout at the wrong level: hides /cat only
    (up / "bin" / ".wh.echo").write_bytes(b"")  # OCI form of a whiteout in a layer dir
    return up


@pytest.fixture
def three_layers(tmp_path: Path) -> tuple[Path, Store]:
    store_dir = tmp_path / "store"
    ok(store_dir, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    ok(store_dir, "commit", "--upper", str(second_layer(tmp_path / "u2")), "--parent", "base",
       "two")
    ok(store_dir, "commit", "--upper", str(third_layer(tmp_path / "u3")), "--parent", "two",
       "three")
    return store_dir, Store.open(store_dir)


def test_squash_equals_the_kernel_merged_view(tmp_path: Path,
                                              three_layers: tuple[Path, Store]) -> None:
    store_dir, store = three_layers
    image = store.image("three")
    ok(store_dir, "squash", "three", "--into", "flat")
    flat = store.image("flat")
    assert len(flat.layer_ids) == 1 and len(image.layer_ids) == 3
    with kernel_overlay(image.layer_dirs, tmp_path / "mnt") as mnt:
        merged = describe(mnt)
    squashed = describe(flat.layer_dirs[0])
    assert squashed == merged
    assert "usr/share/doc" not in squashed and "etc/hostname" in squashed
    assert "bin/echo" not in squashed and "data" in squashed
    assert not any(Path(flat.layer_dirs[0], p).is_char_device() for p in squashed)
    history = json.loads(ok(store_dir, "history", "flat", "--format", "json"))
    assert len(history) == 1 and "squash" in history[0]["created_by"]


def test_squash_keeps_hard_links_that_survive(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    root = busybox_rootfs(tmp_path / "rootfs")
    ok(store_dir, "import", str(root), "--tag", "base")
    ok(store_dir, "squash", "base", "--into", "flat")
    layer = Store.open(store_dir).image("flat").layer_dirs[0]
    assert os.lstat(layer / "etc" / "passwd").st_ino == os.lstat(
        layer / "etc" / "passwd.link").st_ino
    assert describe(layer) == describe(root)


def test_squash_in_place_replaces_the_tag(three_layers: tuple[Path, Store]) -> None:
    store_dir, store = three_layers
    old = store.image("three").id
    new = ok(store_dir, "squash", "three").strip()
    assert new != old and store.image("three").id == new
    assert old not in [im.id for im in store.images()]
    assert len(store.image("two").layer_ids) == 2


def test_commit_then_remount_shows_the_same_tree(tmp_path: Path) -> None:
    """Write through a real unionfs mount of an image, commit its upper, mount the new image:
    same tree (checked against the kernel's overlayfs of the same layers too)."""
    store_dir = tmp_path / "store"
    ok(store_dir, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount_image(store_dir, "base", mnt)
    try:
        (mnt / "etc" / "hostname").write_text("edited\n")
        (mnt / "etc" / "passwd").unlink()
        (mnt / "newdir" / "sub").mkdir(parents=True)
        (mnt / "newdir" / "sub" / "f").write_text("f")
        os.rename(mnt / "usr" / "share" / "doc", mnt / "doc-moved")
        os.symlink("../etc/hostname", mnt / "newdir" / "link")
        os.chmod(mnt / "tmp", 0o755)
        before = describe(mnt, mtimes=False)
    finally:
        unmount(mnt)
    uppers = list((store_dir / "uppers" / "mount").glob("*/upper"))
    assert len(uppers) == 1
    ok(store_dir, "commit", "--upper", str(uppers[0]), "--parent", "base", "edited")
    store = Store.open(store_dir)
    with kernel_overlay(store.image("edited").layer_dirs, tmp_path / "kmnt") as kmnt:
        assert describe(kmnt, mtimes=False) == before
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    mount_image(store_dir, "edited", mnt2)
    try:
        assert describe(mnt2, mtimes=False) == before
    finally:
        unmount(mnt2)
    assert run_cli(store_dir, "rmi", "edited").returncode == 0
