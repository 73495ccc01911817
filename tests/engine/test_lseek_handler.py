"""The lseek handler (``UnionOperations.lseek``) called directly, without a kernel mount: the
answers and errnos the kernel's FUSE_LSEEK gets for a read-only handle."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from tests.conftest import make_tree
from unionfs.core.whiteout import TRUSTED
from unionfs.engine.nodes import ROOT_ID
from unionfs.engine.union import StackConfig, Union
from unionfs.fuse.ops import UnionOperations

MIB = 1 << 20
SEEK_END = 2


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[UnionOperations]:
    lower = make_tree(tmp_path / "lower", {})
    with open(lower / "sparse", "wb") as f:
        f.seek(MIB)
        f.write(b"x" * 4096)
        f.truncate(2 * MIB)
    upper = make_tree(tmp_path / "upper", {})
    union = Union(StackConfig([str(lower)], str(upper), str(tmp_path / "work"), TRUSTED))
    try:
        yield UnionOperations(union)
    finally:
        union.close()


def call(ops: UnionOperations, name: str, *args: Any) -> Any:
    return trio.run(getattr(ops, name), *args)


def errno_of(ops: UnionOperations, *args: int) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        call(ops, "lseek", *args)
    return caught.value.errno


def test_lseek_answers_from_the_layer_file(ops: UnionOperations) -> None:
    entry = call(ops, "lookup", ROOT_ID, b"sparse", None)
    fh = call(ops, "open", entry.st_ino, os.O_RDONLY, None).fh
    try:
        assert call(ops, "lseek", fh, 0, os.SEEK_DATA) == MIB
        assert call(ops, "lseek", fh, MIB, os.SEEK_HOLE) == MIB + 4096
        assert call(ops, "lseek", fh, MIB + 4096, os.SEEK_HOLE) == MIB + 4096
        # No data at or after the end: ENXIO, for SEEK_HOLE at the end too (as ext4).
        assert errno_of(ops, fh, MIB + 4096, os.SEEK_DATA) == errno.ENXIO
        assert errno_of(ops, fh, 2 * MIB, os.SEEK_HOLE) == errno.ENXIO
        # Other whence values never come from the kernel; they are refused all the same.
        for whence in (os.SEEK_SET, os.SEEK_CUR, SEEK_END, 5, -1):
            assert errno_of(ops, fh, 0, whence) == errno.EINVAL
        assert ops.requests["lseek"] == 10
    finally:
        call(ops, "release", fh)
    assert errno_of(ops, fh, 0, os.SEEK_DATA) == errno.EBADF  # released
