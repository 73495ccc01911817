"""Supervisor decisions that need no container: limits without a usable cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

from unionfs.errors import UserError
from unionfs.runtime import cgroups, supervisor
from unionfs.runtime.spec import Limits, Spec
from unionfs.runtime.state import Container


def _unavailable(name: str, root: Path = cgroups.CGROUP_ROOT) -> cgroups.Cgroup:
    raise cgroups.CgroupUnavailable("no permission to create a cgroup (/sys/fs/cgroup/x)")


def test_without_a_cgroup_limits_fail_and_plain_runs_go_on(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cgroups, "create", _unavailable)
    container = Container(tmp_path, {"id": "c", "name": "c"})
    assert supervisor.make_cgroup(container, Spec("img")) is None
    with pytest.raises(UserError, match="cannot apply resource limits: no permission"):
        supervisor.make_cgroup(container, Spec("img", limits=Limits(memory=64 << 20)))


def test_etc_files(tmp_path: Path) -> None:
    container = Container(tmp_path, {"id": "c", "name": "c"})
    supervisor.write_etc_files(container, Spec("img", hostname="web", network="none"))
    assert (tmp_path / "hostname").read_text() == "web\n"
    assert "127.0.1.1\tweb" in (tmp_path / "hosts").read_text()
    assert (tmp_path / "resolv.conf").read_text() == ""
