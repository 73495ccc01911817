"""Rootless cgroup v2: the subtree systemd delegates to the user, on a fake cgroupfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from unionfs.runtime import cgroups
from unionfs.runtime.spec import Limits

from .test_cgroups import _populate, fake_v2

UID = 1000
SESSION = f"user.slice/user-{UID}.slice/user@{UID}.service/app.slice/term.scope"
_ = fake_v2  # the fixture, used by name


@pytest.fixture
def user_tree(fake_v2: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A login session's cgroup of UID, with memory and pids (not cpu) delegated."""
    delegated = fake_v2 / f"user.slice/user-{UID}.slice/user@{UID}.service"
    _populate(fake_v2 / SESSION)
    (delegated / "cgroup.controllers").write_text("memory pids\n")
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: UID)
    monkeypatch.setattr(cgroups, "own_cgroups", lambda pid="self": {"": "/" + SESSION})
    return delegated


def test_rootless_v2_uses_the_delegated_subtree(fake_v2: Path, user_tree: Path) -> None:
    _populate(user_tree / "unionfs" / "c1")
    cg = cgroups.create("c1", fake_v2)
    assert isinstance(cg, cgroups.CgroupV2) and cg.path == user_tree / "unionfs" / "c1"
    # Only what is delegated, and only from the delegated cgroup down; the root is not ours.
    assert (user_tree / "cgroup.subtree_control").read_text().split() == ["+memory", "+pids"]
    assert (user_tree / "unionfs/cgroup.subtree_control").read_text().split() == [
        "+memory", "+pids"]
    assert (fake_v2 / "cgroup.subtree_control").read_text() == ""
    cg.apply(Limits(memory=64 << 20, pids=10))
    assert (cg.path / "memory.max").read_text().strip() == str(64 << 20)
    assert (cg.path / "pids.max").read_text().strip() == "10"


def test_rootless_v2_limit_of_an_undelegated_controller_names_it(
        fake_v2: Path, user_tree: Path) -> None:
    _populate(user_tree / "unionfs" / "c2")
    for name in ("cpu.max", "cpu.weight", "cpu.stat"):  # cpu is not enabled there
        (user_tree / "unionfs" / "c2" / name).unlink()
    cg = cgroups.create("c2", fake_v2)
    with pytest.raises(OSError, match="cpu controller is not enabled"):
        cg.apply(Limits(cpus=1.0))


def test_rootless_v2_outside_a_delegated_subtree_says_what_to_do(
        fake_v2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: UID)
    monkeypatch.setattr(cgroups, "own_cgroups", lambda pid="self": {"": "/system.slice/x"})
    with pytest.raises(cgroups.CgroupUnavailable, match=r"user@1000\.service.*systemd-run"):
        cgroups.create("c3", fake_v2)
