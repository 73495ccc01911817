"""The layer data, generated once per size profile into a cache directory.

Every target is measured on the same bytes. Each dataset is a directory whose contents
become one layer (a lower, or the seed of an upper); a ``.complete`` marker says the cache
is whole, so an interrupted generation is redone rather than trusted.

Datasets (names are what workloads ask for):

- ``empty``        an empty lower, for workloads that only write
- ``tree_a``/``tree_b``  ``tree/dNNN/{a,b}_NNNNN.txt``: two lowers that merge into one tree
- ``bigdir_1``/``bigdir_2``/``bigdir_up``  ``big/e_NNNNN``: one directory over three layers
- ``bigfile``      ``big.bin``, pseudo-random bytes
- ``small``        ``small/f_NNNN.txt``, the files that are copied up
- ``src``          ``pkg/mod_NNNN.py`` and the ``.git`` that tracks them
- ``commit_upper`` an upper with changed and new files, for the commit workload
- ``untar.tar``    a tarball of small files (not a layer: it is unpacked into the mount)
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from unionfs.benchmarks.profiles import MIB, Sizes
from unionfs.benchmarks.system import run

DATA_VERSION = 3  # 2: the src index is not racy; 3: git ignores ctimes there (_make_src)
MARKER = ".complete"


def ensure_data(sizes: Sizes, workdir: Path, log: Callable[[str], None] = print) -> Path:
    """Return the cache directory for ``sizes``, generating it first if it is not whole."""
    root = workdir / f"data-v{DATA_VERSION}-{sizes.key()}"
    if (root / MARKER).exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, make in _GENERATORS:
        log(f"generating {name}")
        make(root, sizes)
    (root / MARKER).write_text("ok\n")
    return root


def small_content(name: str, index: int, limit: int) -> bytes:
    """Deterministic bytes for a small file, between limit/8 and limit long."""
    size = limit // 8 + (index * 7919) % (limit - limit // 8)
    line = f"{name} {index}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def tree_files(sizes: Sizes, prefix: str) -> list[str]:
    """Relative paths of one lower of the merged tree (``prefix`` is ``a`` or ``b``)."""
    return [
        f"tree/d{i % sizes.tree_dirs:03d}/{prefix}_{i:05d}.txt" for i in range(sizes.tree_files)
    ]


def bigdir_names(sizes: Sizes) -> list[str]:
    """All names in the big directory, in layer order: lower 1, lower 2, upper."""
    return [f"e_{i:05d}" for i in range(sizes.bigdir_entries)]


def _write_files(root: Path, paths: list[str], limit: int, tag: str = "") -> None:
    for index, rel in enumerate(paths):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(small_content(tag + rel, index, limit))


def _make_empty(root: Path, sizes: Sizes) -> None:
    (root / "empty").mkdir()


def _make_tree(root: Path, sizes: Sizes) -> None:
    for prefix in ("a", "b"):
        _write_files(root / f"tree_{prefix}", tree_files(sizes, prefix), sizes.small_bytes)


def _make_bigdir(root: Path, sizes: Sizes) -> None:
    names = bigdir_names(sizes)
    third = len(names) // 3
    parts = {"bigdir_1": names[:third], "bigdir_2": names[third : 2 * third],
             "bigdir_up": names[2 * third :]}
    for layer, part in parts.items():
        _write_files(root / layer, [f"big/{n}" for n in part], 256)


def _make_bigfile(root: Path, sizes: Sizes) -> None:
    rng = random.Random(4)
    (root / "bigfile").mkdir()
    with open(root / "bigfile" / "big.bin", "wb") as f:
        for _ in range(sizes.big_mib):
            f.write(rng.randbytes(MIB))


def _make_small(root: Path, sizes: Sizes) -> None:
    paths = [f"small/f_{i:04d}.txt" for i in range(sizes.copyup_files)]
    _write_files(root / "small", paths, sizes.small_bytes * 4)


def module_source(index: int) -> str:
    """A plausible Python module: a dataclass, a few functions, some branches."""
    funcs = "\n\n".join(
        f"def compute_{index}_{k}(values: list[int], limit: int = {k + 3}) -> int:\n"
        f'    """Sum the values below ``limit``, scaled by {k}."""\n'
        f"    total = 0\n"
        f"    for v in values:\n"
        f"        if v < limit:\n"
        f"            total += v * {k + 1}\n"
        f"        elif v % {k + 2} == 0:\n"
        f"            total -= {k}\n"
        f"    return total\n"
        for k in range(8)
    )
    return (
        f'"""Generated module {index} for the compileall and git status workloads."""\n\n'
        "from dataclasses import dataclass\n\n\n"
        f"@dataclass\nclass Record{index}:\n    name: str\n    size: int = {index}\n\n"
        f"    def describe(self) -> str:\n        return f'{{self.name}}: {{self.size}}'\n\n\n"
        f"{funcs}"
    )


SRC_MTIME = 1_700_000_000  # the src modules' mtime: well before any index written now


def _make_src(root: Path, sizes: Sizes) -> None:
    repo = root / "src"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text('"""Generated package."""\n')
    for i in range(sizes.src_modules):
        (repo / "pkg" / f"mod_{i:04d}.py").write_text(module_source(i))
    # Files older than the index, as in a repository whose files were not all written in the
    # second of its last `git add`: git (without USE_NSEC) compares whole seconds and reads
    # every file of that second again in each `git status` ("racily clean" entries). Left
    # to chance, the cold row read all 1000 modules or none, and the FUSE targets' warm row
    # paid one GETATTR per file read (benchmarks/README.md, branch warm).
    for path in (repo / "pkg").iterdir():
        os.utime(path, (SRC_MTIME, SRC_MTIME))
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    # The native target hard-links this data into its cells, and link() changes each file's
    # ctime: git (core.trustctime) would then read every module again on every target after
    # the first native cell (the full run's git rows: 0.65 s cold, 35 ms warm, against
    # 0.11 s and 11 ms alone). The files' content and mtimes are what git status checks here.
    for argv in (["init", "-q"], ["config", "core.trustctime", "false"], ["add", "-A"],
                 ["commit", "-q", "-m", "generated"]):
        run(["git", "-C", str(repo), *argv], env=env)


def commit_paths(sizes: Sizes) -> list[str]:
    """The upper of the commit workload: half rewritten tree files, half new files."""
    half = sizes.commit_files // 2
    changed = tree_files(sizes, "a")[:half]
    new = [f"new/d{i % sizes.tree_dirs:03d}/n_{i:05d}.txt"
           for i in range(sizes.commit_files - half)]
    return changed + new


def _make_commit_upper(root: Path, sizes: Sizes) -> None:
    _write_files(root / "commit_upper", commit_paths(sizes), sizes.small_bytes, tag="changed ")


def _make_tarball(root: Path, sizes: Sizes) -> None:
    with tarfile.open(root / "untar.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(sizes.untar_files):
            data = small_content("untar", i, sizes.small_bytes)
            info = tarfile.TarInfo(f"unpacked/d{i % 200:03d}/u_{i:05d}.txt")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


_GENERATORS: list[tuple[str, Callable[[Path, Sizes], None]]] = [
    ("empty lower", _make_empty),
    ("merged tree (two lowers)", _make_tree),
    ("big directory (three layers)", _make_bigdir),
    ("big file", _make_bigfile),
    ("small files for copy-up", _make_small),
    ("git repository of Python modules", _make_src),
    ("upper for commit", _make_commit_upper),
    ("tarball", _make_tarball),
]
