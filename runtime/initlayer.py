"""The container's init layer: the mount points the runtime needs, kept out of its upper.

As docker's ``<id>-init`` layer: a small lower directory, above the image's layers and below
the upper, that holds the files and directories the container's mounts are bound onto and
that the image lacks (``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``, ``-v``
targets, the ``-w`` directory, ``/proc``, ``/sys``, ``/dev``). So they never show in ``diff``
or ``commit``, and a ``--read-only`` root has them too.

Only what is missing from every image layer is made, and never below an image symlink (a
path through a symlink is left to the mount step, which resolves it inside the root).
The layer carries a sibling marker, ``<dir>.runtime-only``: the store leaves such a lower
out of a live commit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from unionfs.runtime.spec import Spec

MARKER_SUFFIX = ".runtime-only"
ETC_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def mount_points(spec: Spec) -> list[tuple[str, str]]:
    """(path in the container, "dir" or "file") for everything the runtime mounts on."""
    points = [("/proc", "dir"), ("/sys", "dir"), ("/dev", "dir")]
    points += [(path, "file") for path in ETC_FILES]
    for vol in spec.volumes:
        points.append((vol.container, "dir" if os.path.isdir(vol.host) else "file"))
    if spec.workdir and spec.workdir != "/":
        points.append((spec.workdir, "dir"))
    return points


def build(container_dir: Path, layer_dirs: list[str], spec: Spec) -> Path:
    """(Re)make the init layer of a container; its path (a lower, above ``layer_dirs``)."""
    init = container_dir / "init"
    shutil.rmtree(init, ignore_errors=True)
    init.mkdir(mode=0o755)
    layers = [Path(p) for p in layer_dirs]
    copied: dict[str, os.stat_result] = {}
    for path, kind in mount_points(spec):
        place(init, layers, path, kind, copied)
    # Directories the image has, made here only to hold an entry, look as in the image
    # (the union shows the top layer's attributes); deepest first, times last.
    for rel in sorted(copied, key=lambda r: r.count("/"), reverse=True):
        _copy_attributes(init / rel, copied[rel])
    Path(f"{init}{MARKER_SUFFIX}").touch()
    return init


def _lookup(layers: list[Path], rel: str) -> tuple[str, os.stat_result | None]:
    """What the merged image has at ``rel``: "dir", "file", "link" or "missing"."""
    for layer in layers:
        try:
            st = (layer / rel).lstat()
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return "missing", None
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return "missing", None  # a whiteout hides it and everything below
        if stat.S_ISLNK(st.st_mode):
            return "link", st
        return ("dir" if stat.S_ISDIR(st.st_mode) else "file"), st
    return "missing", None


def place(init: Path, layers: list[Path], path: str, kind: str,
          copied: dict[str, os.stat_result]) -> None:
    """Make ``path`` in ``init`` if the image lacks it (and all of its parents are dirs);
    ``copied`` collects the image directories made as its parents, with their stat."""
    parts = [p for p in os.path.normpath(path).split("/") if p and p != "."]
    if not parts or ".." in parts:
        return
    seen: dict[str, os.stat_result] = {}
    for i in range(len(parts)):
        rel = "/".join(parts[:i + 1])
        found, st = _lookup(layers, rel)
        if found == "missing":
            _make(init.joinpath(*parts), kind)
            copied.update(seen)
            return
        if found != "dir" or i == len(parts) - 1:
            return  # the image has it, or a symlink/file on the way: the mount step decides
        assert st is not None
        seen[rel] = st


def _make(target: Path, kind: str) -> None:
    if kind == "dir":
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
    else:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not target.exists():
            target.touch(mode=0o644)


def _copy_attributes(path: Path, st: os.stat_result) -> None:
    with contextlib.suppress(OSError):
        os.lchown(path, st.st_uid, st.st_gid)  # an unprivileged user keeps its own
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
