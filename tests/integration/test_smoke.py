"""A first real mount: precedence, whiteouts, copy-up, and a clean unmount."""

from __future__ import annotations

import os

from tests.conftest import Mounts


def test_mount_read_write_unmount(stack, mounts: Mounts) -> None:  # type: ignore[no-untyped-def]
    st = stack({"d/a": "top", "gone": ("whiteout",)}, {"d/a": "bottom", "d/b": "b", "gone": "x"})
    mnt = mounts.unionfs(st)
    assert (mnt / "d/a").read_text() == "top"
    assert sorted(os.listdir(mnt / "d")) == ["a", "b"]
    assert not (mnt / "gone").exists()
    (mnt / "d/b").write_text("changed")
    assert (st.upper / "d/b").read_text() == "changed"
    assert (st.lowers[1] / "d/b").read_text() == "b"
    mounts.unmount(mnt)
    assert not os.path.ismount(mnt)
