"""Size profiles: how much data each workload touches.

``full`` is the published run (the sizes the README's table is measured at), ``quick`` a
reduced run for development, ``tiny`` the few-file run the smoke test uses so the benchmark
code itself is exercised in seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """Every size the data generator and the workloads use."""

    name: str
    tree_files: int  # files in each of the two lowers of the merged tree (merged: twice that)
    tree_dirs: int  # directories the tree's files are spread over (the same in both lowers)
    untar_files: int  # small files in the tarball that is unpacked into the mount
    bigdir_entries: int  # entries of the one big directory, spread over three layers
    big_mib: int  # the big lower file (sequential read, random read, copy-up)
    write_mib: int  # sequential write with fsync
    fio_mib: int  # volume of 4 KiB random reads
    copyup_files: int  # small lower files that are copied up
    src_modules: int  # Python modules of the git repository in a lower
    commit_files: int  # changed files in the upper that is committed
    small_bytes: int  # the largest small file (sizes vary from an eighth of this up)
    timeout: float  # seconds one timed command may take before it counts as failed
    rounds: int  # default number of rounds

    def key(self) -> str:
        """A short stable name for the data cache: profile name plus a hash of the sizes."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"


FULL = Sizes(
    name="full", tree_files=10_000, tree_dirs=100, untar_files=20_000, bigdir_entries=10_000,
    big_mib=1024, write_mib=1024, fio_mib=64, copyup_files=100, src_modules=1000,
    commit_files=10_000, small_bytes=4096, timeout=600.0, rounds=3,
)

QUICK = Sizes(
    name="quick", tree_files=1_500, tree_dirs=30, untar_files=3_000, bigdir_entries=1_500,
    big_mib=128, write_mib=128, fio_mib=8, copyup_files=100, src_modules=200,
    commit_files=1_500, small_bytes=4096, timeout=120.0, rounds=1,
)

TINY = Sizes(
    name="tiny", tree_files=40, tree_dirs=4, untar_files=60, bigdir_entries=60,
    big_mib=2, write_mib=2, fio_mib=1, copyup_files=5, src_modules=5,
    commit_files=30, small_bytes=1024, timeout=60.0, rounds=1,
)

PROFILES = {s.name: s for s in (FULL, QUICK, TINY)}
