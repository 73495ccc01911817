"""Freezing the upper of a live mount (what a commit does) loses no write."""

from __future__ import annotations

import os

from tests.conftest import Mounts
from unionfs.api import mount_info, switch_upper


def test_switch_keeps_tree_and_moves_open_writers(stack, mounts: Mounts) -> None:  # type: ignore[no-untyped-def]
    st = stack({"base": "lower", "d/x": "x"})
    mnt = mounts.unionfs(st)
    (mnt / "before").write_text("written before")
    os.remove(mnt / "d/x")
    writer = open(mnt / "open-file", "w")  # noqa: SIM115 - kept open across the switch
    writer.write("first;")
    writer.flush()
    frozen = switch_upper(mnt)
    writer.write("second")
    writer.close()
    (mnt / "after").write_text("written after")
    assert (mnt / "before").read_text() == "written before"
    assert (mnt / "open-file").read_text() == "first;second"
    assert not (mnt / "d/x").exists()
    # The frozen upper holds the state at the switch and never changes after it.
    assert (frozen / "before").read_text() == "written before"
    assert (frozen / "open-file").read_text() == "first;"
    assert not (frozen / "after").exists()
    assert sorted(os.listdir(st.upper)) == ["after", "open-file"]
    info = mount_info(mnt)
    assert info is not None
    lowers = info["lowers"]
    assert isinstance(lowers, list) and lowers[0] == str(frozen)
