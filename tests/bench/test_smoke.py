"""The benchmark suite itself, run on tiny data so it cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unionfs.benchmarks.system import mount_entries
from unionfs.benchmarks.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]
SMOKE_TARGETS = ["native", "overlayfs", "fuse-overlayfs", "unionfs"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts overlayfs and drops caches")


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "unionfs.benchmarks", "--tiny", "--out", str(tmp_path / "out"),
            "--workdir", str(tmp_path / "work"), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_nothing_left(tmp_path: Path) -> None:
    prefix = str(tmp_path) + os.sep
    assert not [p for p, _ in mount_entries() if p.startswith(prefix)]
    assert not list((tmp_path / "work").iterdir()), "scratch and data are removed at the end"


def test_tiny_run_produces_table_json_and_chart(tmp_path: Path) -> None:
    res = run_bench(tmp_path, "--targets", ",".join(SMOKE_TARGETS))
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out"
    doc = json.loads((out / "tiny.json").read_text())

    expected_rows = [(w.name, p) for w in WORKLOADS for p in w.phases()]
    assert [(r["workload"], r["phase"]) for r in doc["summary"]] == expected_rows
    assert len(doc["samples"]) == len(expected_rows) * len(SMOKE_TARGETS)
    for row in doc["summary"]:
        assert sorted(row["cells"]) == sorted(SMOKE_TARGETS)
        for target in SMOKE_TARGETS:
            cell = row["cells"][target]
            assert cell["median"] is not None, (row["workload"], target, cell["error"])
    assert doc["peak_rss_kib"]["fuse-overlayfs"] > 0
    assert doc["peak_rss_kib"]["native"] is None
    for key in ("kernel", "cpu", "python", "pyfuse3", "fuse-overlayfs", "unionfs-fuse"):
        assert doc["meta"][key]

    assert (out / "tiny.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "tiny.md").read_text()
    assert "| workload | " + " | ".join(SMOKE_TARGETS) + " |" in md
    assert md.count("\n| ") == len(expected_rows) + 2  # header, rows, RSS
    assert "server peak RSS" in res.stdout
    assert_nothing_left(tmp_path)


def test_user_template_target(tmp_path: Path) -> None:
    template = "mount -t overlay overlay -o lowerdir={lowers},upperdir={upper},workdir={work} {mnt}"
    res = run_bench(tmp_path, "--targets", "native", "--workloads", "find,seqwrite",
                    "--target", f"mine={template}")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert [t["name"] for t in doc["targets"]] == ["native", "mine"]
    for row in doc["summary"]:
        assert row["cells"]["mine"]["median"] is not None, row["cells"]["mine"]["error"]
    assert_nothing_left(tmp_path)


def test_registry_benchmark_runs_on_a_tiny_image(tmp_path: Path) -> None:
    """``python -m unionfs.benchmarks.registry`` end to end on a 2 MiB image (so it cannot rot)."""
    from unionfs.benchmarks import registry

    assert registry.main(["--size-mb", "2", "--rounds", "1", "--workdir", str(tmp_path),
                          "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "registry.json").read_text())
    assert len(result["seconds"]) == 7
    assert all(len(v) == 1 and v[0] > 0 for v in result["seconds"].values())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("unionfs-bench-registry")]


def test_registry_benchmark_takes_a_root_filesystem(tmp_path: Path) -> None:
    """``--rootfs DIR``: the image is that tree (a Debian base, for the real rows)."""
    from unionfs.benchmarks import registry

    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "os-release").write_text("ID=test\n" * 1000)
    assert registry.main(["--rootfs", str(rootfs), "--rounds", "1", "--workdir",
                          str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "registry.json").read_text())
    assert result["rootfs"] == str(rootfs)
    assert all(len(v) == 1 and v[0] > 0 for v in result["seconds"].values())
