"""A copy-up is published (renamed into the upper) only after its data is synced, and
copy-ups that run at the same time sync at the same time (their fsyncs overlap, so the
upper's journal commits them together). Shown by ordering, not timing: the server's
test-only hook holds each copy-up in its worker thread after its data is written and
before its sync (``copy-up-sync``, see unionfs.engine.slow)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from tests.conftest import Mounts, Stack
from tests.integration.test_concurrency import holding, many_held, started, wait_until_held

StackFactory = Callable[..., Stack]
FILES = {f"f{i}": os.urandom(3000) for i in range(3)}


def test_no_copy_up_is_visible_before_its_data_is_synced(stack: StackFactory,
                                                         mounts: Mounts,
                                                         tmp_path: Path) -> None:
    st = stack(dict(FILES))
    env = holding(tmp_path)
    mnt = mounts.unionfs(st, env=env)
    hold = many_held(Path(env["UNIONFS_TEST_HOLD"]), "copy-up-sync")
    with hold as (held, release), ExitStack() as running:
        writers = [running.enter_context(started(["sh", "-c", f"echo x >> {mnt / name}"]))
                   for name in FILES]
        try:
            wait_until_held(held, len(FILES), "copy-ups")
            # Every copy is complete in the work dir, all at once, and none is in the
            # upper yet: nothing is published before its sync.
            work = st.work / "unionfs-tmp"
            copies = sorted((work / n).read_bytes() for n in os.listdir(work)
                            if n.startswith("tmp-"))
            assert copies == sorted(FILES.values())
            assert not set(FILES) & set(os.listdir(st.upper))
            assert all(w.poll() is None for w in writers)  # their opens still wait
        finally:
            os.write(release, b"x" * len(FILES))
        assert all(w.wait(30) == 0 for w in writers), [w.stderr for w in writers]
    for name, data in FILES.items():
        assert (st.upper / name).read_bytes() == data + b"x\n"
        assert (mnt / name).read_bytes() == data + b"x\n"
    assert set(os.listdir(st.work / "unionfs-tmp")) <= {"whiteout", "upper-format"}
