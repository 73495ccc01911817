"""Programs run straight from the union (the kernel opens them with __FMODE_EXEC)."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import Mounts


def test_exec_a_lower_binary_through_the_mount(stack, mounts: Mounts) -> None:  # type: ignore[no-untyped-def]
    st = stack({})
    shutil.copy2("/bin/busybox", st.lowers[0] / "busybox")
    mnt = mounts.unionfs(st)
    out = subprocess.run([str(mnt / "busybox"), "echo", "ran"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ran\n"
