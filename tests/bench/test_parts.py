"""The benchmark's pure parts: ordering, summaries, argument parsing, tree merging."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from unionfs.benchmarks import report
from unionfs.benchmarks.cli import parse_templates
from unionfs.benchmarks.concurrent import PROBE_EVERY_LS, cold_probes
from unionfs.benchmarks.data import _make_src, tree_files
from unionfs.benchmarks.profiles import FULL, TINY
from unionfs.benchmarks.runner import Sample, rotated
from unionfs.benchmarks.system import BIG_FILE, BenchError, merge_trees, retire_tree
from unionfs.benchmarks.targets import BUILTIN
from unionfs.benchmarks.workloads import BY_NAME


def test_rounds_rotate_the_target_order() -> None:
    targets = [BUILTIN[n]() for n in ("native", "overlayfs", "unionfs")]
    orders = [[t.name for t in rotated(targets, r)] for r in range(3)]
    assert orders[1] == ["overlayfs", "unionfs", "native"]
    assert [o[0] for o in orders] == ["native", "overlayfs", "unionfs"]


def test_summary_takes_medians_and_ratios_and_keeps_failures() -> None:
    samples = [Sample("native", "find", "cold", r, seconds=s) for r, s in enumerate((1, 3, 2))]
    samples += [Sample("fuse-overlayfs", "find", "cold", r, seconds=4.0) for r in range(3)]
    samples += [Sample("unionfs", "find", "cold", r, error="failed: no mount") for r in range(3)]
    rows = report.summarize(samples, [BY_NAME["find"]], ["native", "fuse-overlayfs", "unionfs"],
                            TINY)
    cold = rows[0]
    assert cold.phase == "cold"
    assert cold.cells["native"].median == 2
    assert cold.cells["fuse-overlayfs"].vs_native == 2
    assert cold.cells["native"].vs_fuse_overlayfs == 0.5
    assert cold.cells["unionfs"].median is None
    assert cold.cells["unionfs"].error == "failed: no mount"
    assert rows[1].phase == "warm" and rows[1].cells["native"].error == "not run"


def test_standing_is_the_geometric_mean_against_fuse_overlayfs() -> None:
    samples = [Sample("fuse-overlayfs", w, "cold", 0, seconds=1.0) for w in ("find", "untar")]
    samples += [Sample("unionfs", "find", "cold", 0, seconds=4.0),
                Sample("unionfs", "untar", "cold", 0, seconds=0.25)]
    rows = report.summarize(samples, [BY_NAME["find"], BY_NAME["untar"]],
                            ["fuse-overlayfs", "unionfs"], TINY)
    line = report.standing(rows)
    assert line is not None
    assert "over 2 rows: geometric mean x1.00, worst x4.00 (find over" in line
    assert report.standing(rows, "nobody") is None


def test_templates_need_a_name_and_a_mountpoint() -> None:
    assert parse_templates(["x=mount {lowers} {mnt}"]) == {"x": "mount {lowers} {mnt}"}
    with pytest.raises(BenchError):
        parse_templates(["no-equals-sign"])
    with pytest.raises(BenchError):
        parse_templates(["x=mount {lowers}"])


def test_merge_trees_upper_names_win(tmp_path: Path) -> None:
    lower, upper, out = tmp_path / "l", tmp_path / "u", tmp_path / "o"
    (lower / "d").mkdir(parents=True)
    (upper / "d").mkdir(parents=True)
    (lower / "d" / "a").write_text("lower")
    (lower / "d" / "b").write_text("lower")
    (upper / "d" / "a").write_text("upper")
    merge_trees([lower, upper], out, link=True)
    assert (out / "d" / "a").read_text() == "upper"
    assert (out / "d" / "b").read_text() == "lower"
    assert (out / "d" / "b").stat().st_ino == (lower / "d" / "b").stat().st_ino


def test_retired_cells_keep_small_files_until_the_end(tmp_path: Path) -> None:
    trash = tmp_path / "trash"
    for _ in range(2):
        cell = tmp_path / "cell"
        (cell / "d").mkdir(parents=True)
        (cell / "d" / "small").write_text("x")
        with (cell / "big").open("wb") as big:
            big.truncate(BIG_FILE)
        retire_tree(cell, trash)
        assert not cell.exists()
    kept = sorted(trash.iterdir())
    assert [p.name for p in kept] == ["cell-0", "cell-1"]
    for old in kept:
        assert (old / "d" / "small").read_text() == "x"
        assert not (old / "big").exists()


def test_verification_catches_skipped_work(tmp_path: Path) -> None:
    from unionfs.benchmarks.workloads import Context

    ctx = Context(sizes=TINY, data=tmp_path, path=tmp_path, upper=tmp_path, scratch=tmp_path,
                  target="x")
    (tmp_path / "unpacked").mkdir()
    (tmp_path / "unpacked" / "one").write_text("1")
    untar = BY_NAME["untar"].verify
    assert untar is not None
    assert untar(ctx) == f"1 files unpacked, expected {TINY.untar_files}"
    (tmp_path / "tree").mkdir()
    rm_rf = BY_NAME["rm-rf"].verify
    assert rm_rf is not None and rm_rf(ctx) == "the tree is still there"


def test_latency_probes_are_all_cold() -> None:
    """No file is statted once a listing of its directory looked it up, every tenth probe
    lists a directory not listed before, and the probes end when no cold file is left."""
    files = tree_files(FULL, "a")
    probes = list(cold_probes(files))
    listed: set[str] = set()
    statted: set[str] = set()
    for index, (kind, path) in enumerate(probes):
        assert (kind == "ls") == (index % PROBE_EVERY_LS == 0 and len(listed) < FULL.tree_dirs)
        if kind == "ls":
            assert path not in listed
            listed.add(path)
        else:
            assert path.rsplit("/", 1)[0] not in listed and path not in statted
            statted.add(path)
    assert len(listed) == FULL.tree_dirs
    assert 900 < len(probes) < 1100  # each lists or stats something not seen before


def test_git_index_of_src_is_not_racy(tmp_path: Path) -> None:
    """No module of the src repository shares its second with the index (git would read
    those files again in every `git status`: "racily clean"), the tree is clean, and git
    ignores ctimes there (the native target's hard links change them)."""
    _make_src(tmp_path, TINY)
    repo = tmp_path / "src"
    index = int((repo / ".git" / "index").stat().st_mtime)
    modules = list((repo / "pkg").iterdir())
    assert len(modules) == TINY.src_modules + 1
    assert all(int(p.stat().st_mtime) < index for p in modules)
    env = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True,
                              text=True, check=True).stdout

    assert git("status", "--porcelain") == ""
    assert git("config", "core.trustctime").strip() == "false"


def test_hops_measures_every_hand_off_and_the_lane_returns_errors() -> None:
    """The hop benchmark gives a positive figure per hand-off, and its Lane (a hand-off
    without trio's thread cache) returns the worker's exception to the awaiting task."""
    import trio

    from unionfs.benchmarks import hops

    result = hops.measure(batches=1, trips=20)
    assert set(result) == {"queue", "socket", "to_thread", "to_thread_300us", "lane",
                           "lane_300us"}
    assert all(value > 0 for name, value in result.items() if not name.endswith("300us"))

    def fails() -> None:
        raise ValueError("from the worker")

    async def hop() -> None:
        lane = hops.Lane(threads=1)
        try:
            with pytest.raises(ValueError, match="from the worker"):
                await lane.run(fails)
        finally:
            lane.close()

    trio.run(hop)
