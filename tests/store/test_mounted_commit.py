"""``unionfs commit /mnt NEW`` on a live mount while a process keeps writing to it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unionfs import api
from unionfs.store import Store

from .helpers import (
    assert_one_line_error,
    busybox_rootfs,
    describe,
    mount_image,
    ok,
    run_cli,
    unmount,
)

# Prints the number of each file once it and its log line are written: the test waits on
# those lines (never on a clock) before each commit. A full pipe holds it back meanwhile.
WRITER = r"""
import os, sys
root, stop = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(root, "w"), exist_ok=True)
log = open(os.path.join(root, "w", "log"), "a")
i = 0
while not os.path.exists(stop) or i < 50:
    with open(os.path.join(root, "w", f"f{i}"), "w") as f:
        f.write(str(i) * 100)
    log.write(f"{i}\n")
    log.flush()
    print(i, flush=True)
    i += 1
log.close()
print("total", i)
"""


def _tree_of(store: Store, ref: str) -> dict[str, bytes]:
    """File contents of image ``ref``'s merged view, read from a squash of it."""
    from unionfs.store.squash import merged_nodes

    out = {}
    for node in merged_nodes(store.image(ref).layer_dirs):
        if node.source is not None and node.type.value == "file":
            out[node.path.decode()] = Path(node.source.decode()).read_bytes()
    return out


@pytest.fixture
def mounted(tmp_path: Path):  # type: ignore[no-untyped-def]
    store_dir = tmp_path / "store"
    ok(store_dir, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount_image(store_dir, "base", mnt)
    try:
        yield store_dir, mnt
    finally:
        if api.is_mounted(mnt):
            unmount(mnt)


def _check_snapshot(files: dict[str, bytes], final_log: bytes) -> int:
    """A committed tree is a consistent prefix of the writer's work; returns its count."""
    log = files.get("w/log", b"")
    assert final_log.startswith(log)
    assert log == b"" or log.endswith(b"\n")
    done = [int(x) for x in log.split()]
    assert done == list(range(len(done)))
    for i in done:
        assert files[f"w/f{i}"] == str(i).encode() * 100
    for name, data in files.items():
        if name.startswith("w/f"):
            i = int(name[3:])
            assert (str(i).encode() * 100).startswith(data)
    return len(done)


def _wait_for_file(writer: subprocess.Popen[str], number: int) -> None:
    """Read the writer's progress until it has written file ``number``."""
    assert writer.stdout is not None
    while (line := writer.stdout.readline()).strip().isdigit():
        if int(line) >= number:
            return
    raise AssertionError(f"the writer ended before file {number}: {line!r}")


def _logged(mnt: Path) -> int:
    """How many files the writer has logged, read through the mount: after a commit has
    returned, every file from this number on was written after its snapshot."""
    return len((mnt / "w" / "log").read_bytes().split())


def test_commit_while_a_process_keeps_writing(tmp_path: Path, mounted) -> None:  # type: ignore[no-untyped-def]
    store_dir, mnt = mounted
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        _wait_for_file(writer, 20)
        ok(store_dir, "commit", str(mnt), "snap1", "-m", "first")
        _wait_for_file(writer, _logged(mnt) + 20)
        ok(store_dir, "commit", str(mnt), "snap2", "-m", "second")
        _wait_for_file(writer, _logged(mnt) + 20)
    finally:
        stop.write_text("")
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    total = int(out.split()[-1])
    final_log = (mnt / "w" / "log").read_bytes()
    assert [int(x) for x in final_log.split()] == list(range(total))
    for i in range(total):
        assert (mnt / "w" / f"f{i}").read_bytes() == str(i).encode() * 100
    store = Store.open(store_dir)
    n1 = _check_snapshot(_tree_of(store, "snap1"), final_log)
    n2 = _check_snapshot(_tree_of(store, "snap2"), final_log)
    assert 0 < n1 < n2 < total
    s1, s2 = store.image("snap1"), store.image("snap2")
    assert s2.layer_ids[: len(s1.layer_ids)] == s1.layer_ids
    assert len(s1.layer_ids) == 2 and len(s2.layer_ids) == 3
    history = [r["comment"] for r in json.loads(
        ok(store_dir, "history", "snap2", "--format", "json"))]
    assert history[:2] == ["second", "first"]
    assert_one_line_error(run_cli(store_dir, "rmi", "snap2"), "in use", str(mnt))
    before = describe(mnt, mtimes=False)
    unmount(mnt)
    ok(store_dir, "commit", "--upper", str(_upper_of(store_dir)), "--parent", "snap2", "last")
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    mount_image(store_dir, "last", mnt2)
    try:
        assert describe(mnt2, mtimes=False) == before
    finally:
        unmount(mnt2)


def _upper_of(store_dir: Path) -> Path:
    uppers = [p for p in (store_dir / "uppers" / "mount").glob("*/upper")]
    assert len(uppers) == 1
    return uppers[0]


def test_racing_commits_on_one_mount_are_serialized(mounted) -> None:  # type: ignore[no-untyped-def]
    store_dir, mnt = mounted
    (mnt / "a").write_text("a")

    def commit(name: str) -> str:
        return ok(store_dir, "commit", str(mnt), name).strip()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(commit, ["r1", "r2"]))
    assert ids[0] != ids[1]
    store = Store.open(store_dir)
    one, two = sorted((store.image("r1"), store.image("r2")), key=lambda i: len(i.layer_ids))
    assert len(one.layer_ids) == 2 and len(two.layer_ids) == 3
    assert two.layer_ids[:2] == one.layer_ids
    assert "a" in _tree_of(store, "r1") and "a" in _tree_of(store, "r2")


def test_diff_and_rmi_of_a_live_mount(mounted) -> None:  # type: ignore[no-untyped-def]
    store_dir, mnt = mounted
    (mnt / "etc" / "hostname").write_text("edited\n")
    (mnt / "etc" / "passwd").unlink()
    (mnt / "new").mkdir()
    (mnt / "new" / "f").write_text("f")
    assert ok(store_dir, "diff", str(mnt)).splitlines() == [
        "C /etc", "C /etc/hostname", "D /etc/passwd", "A /new", "A /new/f"]
    assert_one_line_error(run_cli(store_dir, "rmi", "base"), "in use by the mount", str(mnt))
    ok(store_dir, "commit", str(mnt), "after")
    assert ok(store_dir, "diff", str(mnt)) == ""
    layer = Store.open(store_dir).image("after").layer_dirs[0]
    for path in (layer / "etc" / "hostname", layer / "etc", layer / "new" / "f"):
        assert not [n for n in os.listxattr(path) if "unionfs" in n], path
    assert ok(store_dir, "diff", "after").splitlines()[-1] == "A /new/f"


def test_commit_of_a_raw_mount_imports_its_lowers(tmp_path: Path) -> None:
    """``unionfs mount low1:low2 upper /mnt`` then ``commit /mnt``: the lowers become layers
    of the new image (the upper's own layer on top), and the same tree remounts."""
    store_dir = tmp_path / "store"
    low1, low2, upper, mnt = (tmp_path / n for n in ("low1", "low2", "upper", "mnt"))
    busybox_rootfs(low2)
    (low1 / "etc").mkdir(parents=True)
    (low1 / "etc" / "hostname").write_text("from low1\n")
    upper.mkdir()
    mnt.mkdir()
    log = tmp_path / "mount.log"
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "unionfs", "mount", f"{low1}:{low2}", str(upper),
                        str(mnt)], stdout=out, stderr=out, check=True)
    try:
        (mnt / "added").write_text("added")
        (mnt / "bin" / "cat").unlink()
        ok(store_dir, "commit", str(mnt), "raw", "-m", "raw mount")
        before = describe(mnt, mtimes=False)
    finally:
        unmount(mnt)
    store = Store.open(store_dir)
    image = store.image("raw")
    assert len(image.layer_ids) == 3
    rows = json.loads(ok(store_dir, "history", "raw", "--format", "json"))
    assert rows[0]["comment"] == "raw mount" and "lower" in rows[1]["created_by"]
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    mount_image(store_dir, "raw", mnt2)
    try:
        assert describe(mnt2, mtimes=False) == before
    finally:
        unmount(mnt2)
