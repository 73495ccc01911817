"""Cgroups: the v2 backend on a fake cgroupfs tree, the v1 backend on this machine's."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from unionfs.runtime import cgroups
from unionfs.runtime.spec import Limits

V2_FILES = {
    "cgroup.procs": "", "memory.max": "max", "memory.swap.max": "max", "cpu.weight": "100",
    "cpu.max": "max 100000", "pids.max": "max", "memory.events": "low 0\nhigh 0\nmax 0\n"
    "oom 0\noom_kill 0\n", "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "memory.current": "0", "pids.current": "0",
}


@pytest.mark.parametrize(("shares", "weight"), [
    (0, 0), (1, 1), (2, 1), (256, 35), (512, 59), (1024, 100), (2048, 174), (262144, 10000),
    (300000, 10000),
])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    """runc >= 1.3.2 / crun >= 1.23: 1024 (the v1 default) is 100 (the v2 default)."""
    assert cgroups.cpu_shares_to_weight(shares) == weight


def test_weight_is_monotonic_and_in_range() -> None:
    weights = [cgroups.cpu_shares_to_weight(s) for s in range(2, 262145, 97)]
    assert weights == sorted(weights)
    assert all(1 <= w <= 10000 for w in weights)


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup2 root with the interface files the backend uses."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    monkeypatch.delenv(cgroups.PARENT_ENV, raising=False)
    return tmp_path


def _populate(path: Path) -> None:
    """What the kernel does on mkdir: the interface files appear."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in V2_FILES.items():
        (path / name).write_text(text)
    for d in (path, *path.parents):
        if (d / "cgroup.controllers").exists():
            break
        if not (d / "cgroup.subtree_control").exists():
            (d / "cgroup.subtree_control").write_text("")


def test_v2_create_apply_stats_oom_remove(fake_v2: Path) -> None:
    assert cgroups.detect(fake_v2) == 2
    _populate(fake_v2 / "unionfs" / "c1")
    cg = cgroups.create("c1", fake_v2)
    assert isinstance(cg, cgroups.CgroupV2) and cg.path == fake_v2 / "unionfs" / "c1"
    # Controllers are enabled from the top down to the parent of the container's cgroup.
    assert (fake_v2 / "cgroup.subtree_control").read_text().split() == ["+cpu", "+memory",
                                                                          "+pids"]
    assert (fake_v2 / "unionfs" / "cgroup.subtree_control").read_text().split() == [
        "+cpu", "+memory", "+pids"]
    cg.apply(Limits(memory=64 << 20, cpu_shares=256, cpus=1.5, pids=20))
    read = lambda name: (cg.path / name).read_text().strip()  # noqa: E731
    assert read("memory.max") == str(64 << 20)
    assert read("memory.swap.max") == "0"
    assert read("cpu.weight") == "35"
    assert read("cpu.max") == "150000 100000"
    assert read("pids.max") == "20"
    cg.add(1234)
    assert read("cgroup.procs") == "1234"
    (cg.path / "memory.current").write_text("1048576\n")
    (cg.path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    (cg.path / "pids.current").write_text("3\n")
    assert cg.stats() == cgroups.Stats(1 << 20, 64 << 20, 2_500_000, 3, 20)
    assert not cg.oom_killed()
    (cg.path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert cg.oom_killed()
    again = cgroups.load(cg.to_dict())
    assert isinstance(again, cgroups.CgroupV2) and again.path == cg.path
    for f in cg.path.iterdir():  # the kernel removes the files with the directory
        f.unlink()
    cg.remove()
    assert not cg.path.exists()


def test_v2_unset_limits_are_not_written(fake_v2: Path) -> None:
    _populate(fake_v2 / "unionfs" / "c2")
    cg = cgroups.create("c2", fake_v2)
    assert isinstance(cg, cgroups.CgroupV2)
    cg.apply(Limits())
    assert (cg.path / "memory.max").read_text() == "max"
    assert cg.stats().memory_limit is None and cg.stats().pids_limit is None


def test_v2_missing_controller(fake_v2: Path) -> None:
    (fake_v2 / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(cgroups.CgroupUnavailable, match="memory pids"):
        cgroups.create("c3", fake_v2)


def test_v2_parent_override(fake_v2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cgroups.PARENT_ENV, "/user.slice/deleg")
    _populate(fake_v2 / "user.slice" / "deleg" / "c4")
    cg = cgroups.create("c4", fake_v2)
    assert cg.dirs() == [fake_v2 / "user.slice" / "deleg" / "c4"]


def test_v2_not_delegated(fake_v2: Path) -> None:
    (fake_v2 / "cgroup.subtree_control").chmod(0o444)
    if os.geteuid() == 0:  # root ignores the mode; make the write fail like a kernel would
        (fake_v2 / "cgroup.subtree_control").unlink()
        (fake_v2 / "cgroup.subtree_control").mkdir()
    with pytest.raises((cgroups.CgroupUnavailable, IsADirectoryError)):
        cgroups.create("c5", fake_v2)


def test_detect_unknown(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupUnavailable):
        cgroups.detect(tmp_path)


@pytest.mark.skipif(cgroups.detect() != 1, reason="this machine runs cgroup v2")
def test_v1_real_limits_stats_and_removal() -> None:
    cg = cgroups.create(f"test-{os.getpid()}")
    assert isinstance(cg, cgroups.CgroupV1)
    try:
        cg.apply(Limits(memory=64 << 20, cpu_shares=256, cpus=0.5, pids=20))
        mem = cg.paths["memory"]
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert (cg.paths["cpu"] / "cpu.shares").read_text().strip() == "256"
        assert (cg.paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cg.paths["pids"] / "pids.max").read_text().strip() == "20"
        proc = subprocess.Popen(["sleep", "30"])
        cg.add(proc.pid)
        assert cg.procs() == [proc.pid]
        time.sleep(0.1)
        stats = cg.stats()
        assert stats.pids == 1 and stats.memory_limit == 64 << 20 and stats.pids_limit == 20
        assert not cg.oom_killed()
        again = cgroups.load(cg.to_dict())
        assert again.procs() == [proc.pid]
    finally:
        cg.remove()  # kills what is left
    assert proc.wait(5) == -9
    assert not any(d.exists() for d in cg.dirs())


def test_v2_freeze_and_thaw_on_a_fake_tree(fake_v2: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    _populate(fake_v2 / "unionfs" / "fz")
    cg = cgroups.create("fz", fake_v2)
    assert not cg.has_freezer()  # no cgroup.freeze: no freezer (an old kernel)
    (cg.dirs()[0] / "cgroup.freeze").write_text("0\n")
    events = cg.dirs()[0] / "cgroup.events"
    events.write_text("populated 1\nfrozen 1\n")  # what the kernel reports once frozen
    assert cg.has_freezer() and not cg.frozen()
    cg.freeze()
    assert (cg.dirs()[0] / "cgroup.freeze").read_text() == "1\n" and cg.frozen()
    cg.thaw()
    assert (cg.dirs()[0] / "cgroup.freeze").read_text() == "0\n" and not cg.frozen()
    events.write_text("populated 1\nfrozen 0\n")  # the kernel never gets there
    monkeypatch.setattr(cgroups, "FREEZE_TIMEOUT", 0.1)
    with pytest.raises(OSError, match="did not freeze"):
        cg.freeze()


@pytest.mark.skipif(cgroups.detect() != 1, reason="this machine runs cgroup v2")
def test_v1_freezer_stops_and_resumes_a_process() -> None:
    cg = cgroups.create(f"test-fz-{os.getpid()}")
    assert cg.has_freezer()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        cg.add(proc.pid)
        cg.freeze()
        assert cg.frozen()
        assert (cg.dirs()[-1] / "freezer.state").read_text().strip() == "FROZEN"
        cg.thaw()
        assert not cg.frozen()
        cg.freeze()
    finally:
        cg.remove()  # kills and thaws what is left
    assert proc.wait(5) == -9
    assert not any(d.exists() for d in cg.dirs())
