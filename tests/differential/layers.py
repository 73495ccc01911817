"""The starting layers of the differential runs, and a seeded generator of read-only stacks.

Every attribute that could differ between two copies made at different instants (owners,
modes, xattrs, and above all the timestamps) is set to a fixed value, so two stacks built from
the same spec are identical and a kernel mount and a unionfs mount of them must agree exactly.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

TOP: dict[str, object] = {
    "f0": "lower0 f0\n",
    "d/a": "a from lower0\n",
    "d/c": "c from lower0\n",
    "d/sub/": None,
    "d/gone_in_d": ("whiteout",),
    "gone": ("whiteout",),
    "wd": ("whiteout",),
    "opq/": ("opaque",),
    "opq/shown": "shown\n",
    "file_over_dir": "a file hides the dir below\n",
    "dir_over_file/in": "in\n",
    "owned": "owned by 1000\n",
    "x_attrs": "has xattrs\n",
    "empty/": None,
    "l0link": ("symlink", "d/a"),
}

BOTTOM: dict[str, object] = {
    "f1": "lower1 f1\n" * 50,
    "d/a": "a from lower1\n",
    "d/b": "b from lower1\n",
    "d/gone_in_d": "hidden\n",
    "d/sub/deep": "deep\n",
    "d/sub/deeper/x": "x\n",
    "gone": "whited out\n",
    "wd/old": "in a whited-out dir\n",
    "opq/hidden": "hidden by the opaque dir\n",
    "file_over_dir/x": "hidden\n",
    "dir_over_file": "hidden file\n",
    "l1only/x": "x\n",
    "l1only/y/z": "z\n",
    "setuid": "#!/bin/sh\n",
    "l1link": ("symlink", "nowhere"),
    "empty/e": "e\n",
}

FIXED_BASE_NS = 1_600_000_000_000_000_000  # 2020-09-13; every run starts long after
# A sparse file of the bottom layer: a hole, then data up to the end. The kernel's copy-up
# copies 1 MiB from wherever data starts (zeros included), so data that reaches the end
# comes out of either copy-up with the same holes; unionfs's copy keeps every hole.
SPARSE_HOLE = 1 << 20
SPARSE_DATA = b"sparse data\n" * 700


def unprivileged(spec: dict[str, object]) -> dict[str, object]:
    """``spec`` with its opaque dirs left plain: without privileges the ``trusted.`` marker
    cannot be written; :func:`decorate` sets ``user.overlay.opaque`` instead."""
    return {k: (None if v == ("opaque",) else v) for k, v in spec.items()}


def decorate(lowers: list[Path], upper: Path, *, rootless: bool = False) -> None:
    """Owners, modes, xattrs, a FIFO, and fixed timestamps on a stack built from TOP/BOTTOM.

    ``rootless``: in a user namespace, where only our own uid is mapped, no chown, and the
    opaque dir marked the ``userxattr`` way.
    """
    top, bottom = lowers
    if rootless:
        os.setxattr(top / "opq", "user.overlay.opaque", b"y")
    else:
        _chown_some(top, bottom)
    os.chmod(top / "owned", 0o640)
    os.setxattr(top / "x_attrs", "user.a", b"from lower0")
    os.setxattr(top / "x_attrs", "user.origin", b"l0")
    os.setxattr(top / "d", "user.dir", b"d of lower0")
    os.chmod(top / "d", 0o775)
    os.setxattr(bottom / "d/b", "user.b", b"b")
    os.chmod(bottom / "setuid", 0o4755)
    os.mkfifo(bottom / "pipe", 0o640)
    with open(bottom / "sparse", "wb") as f:
        f.seek(SPARSE_HOLE)
        f.write(SPARSE_DATA)
    for root in (*lowers, upper):
        fix_times(root)


def _chown_some(top: Path, bottom: Path) -> None:
    os.chown(top / "owned", 1000, 1000)
    os.chown(bottom / "d/b", 1234, 1234)
    os.chown(bottom / "l1only", 1000, 1234)


def fix_times(root: Path) -> None:
    """Give every entry under ``root`` (and ``root``) a fixed mtime and atime, by path."""
    paths = sorted([root, *root.rglob("*")])
    for i, path in enumerate(paths):
        t = FIXED_BASE_NS + i * 1_000_000_007
        os.utime(path, ns=(t, t), follow_symlinks=False)


# ---- random read-only stacks -------------------------------------------------------------

_NAMES = ("a", "b", "c", "d", "e")


def random_stack(seed: int, depth: int = 3, layers: int = 3) -> list[dict[str, object]]:
    """Layer specs (top first) for a read-only stack: files, dirs, symlinks, whiteouts and
    opaque dirs at random over a small name space, so that names collide across layers."""
    rng = random.Random(seed)
    return [_random_layer(rng, depth) for _ in range(layers)]


def _random_layer(rng: random.Random, depth: int) -> dict[str, object]:
    spec: dict[str, object] = {}
    _fill(rng, spec, "", depth)
    return spec


def _fill(rng: random.Random, spec: dict[str, object], prefix: str, depth: int) -> None:
    for name in _NAMES:
        roll = rng.random()
        path = prefix + name
        if roll < 0.35:
            continue
        if roll < 0.55:
            spec[path] = f"{path} {rng.random()}\n"
        elif roll < 0.62:
            spec[path] = ("symlink", rng.choice(_NAMES))
        elif roll < 0.72:
            spec[path] = ("whiteout",)
        elif depth > 0:
            spec[path + "/"] = ("opaque",) if rng.random() < 0.2 else None
            _fill(rng, spec, path + "/", depth - 1)
