"""Several processes create, write, rename, delete and list the same names at once.

Afterwards the tree through unionfs must be what the kernel's overlayfs shows for the same
layers and upper (so the upper holds no trace of a half-done change), and the server holds
nothing it should have let go: no open files, locks, slow work, and no fds beyond its caches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

from tests.conftest import Mounts, Stack, needs_root
from tests.differential import snapshot
from unionfs.api import server_stats

StackFactory = Callable[..., Stack]
WORKERS = 4
ROUNDS = 400

WORKER = textwrap.dedent("""
    import errno, os, random, sys
    root, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    names = [os.path.join(root, d, f"n{i}") for d in ("d", "d/sub", "e") for i in range(5)]
    expected = (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR)
    for _ in range(rounds):
        op = rng.choice(["write", "write", "append", "rename", "unlink", "list", "big"])
        a, b = rng.choice(names), rng.choice(names)
        try:
            if op in ("write", "append", "big"):
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if op == "append" else os.O_TRUNC)
                fd = os.open(a, flags, 0o644)
                os.write(fd, (b"%d " % seed) * (20000 if op == "big" else 3))
                if op == "big":
                    os.fsync(fd)
                os.close(fd)
            elif op == "rename":
                os.rename(a, b)
            elif op == "unlink":
                os.unlink(a)
            else:
                for d in ("d", "d/sub", "e"):
                    for name in os.listdir(os.path.join(root, d)):
                        os.lstat(os.path.join(root, d, name))
        except OSError as exc:
            if exc.errno not in expected:  # EIO included: see test_unlinked_held.py
                raise
""")


def test_concurrent_changes_match_the_kernel_and_leak_nothing(stack: StackFactory,
                                                               mounts: Mounts) -> None:
    needs_root()
    lower: dict[str, object] = {f"d/n{i}": "lower" * 100 for i in range(5)}
    lower.update({"d/sub/n0": "sub", "e/n1": "e" * 70_000, "big": "b" * 2_000_000})
    st = stack(lower)
    mnt = mounts.unionfs(st)
    before = server_stats(mnt)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(mnt), str(seed), str(ROUNDS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(WORKERS)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    after = server_stats(mnt)
    assert (after["open_files"], after["open_dirs"]) == (0, 0)
    assert (after["slow_in_flight"], after["entry_locks"]) == (0, 0)
    assert (after["fds"] - after["cached_dir_fds"]) <= (before["fds"] - before["cached_dir_fds"])
    assert after["threads"] <= before["threads"] + 4  # trio's idle worker threads at most
    ours = snapshot.take(str(mnt))
    mounts.unmount(mnt)
    mounts.overlay(st)
    kernels = snapshot.take(str(mnt))
    assert snapshot.diff(kernels, ours, since_ns=None) == []
    assert set(os.listdir(st.work / "unionfs-tmp")) <= {"whiteout", "upper-format"}
