"""What a test needs to run ``unionfs`` as an unprivileged user, on a machine as it is.

The checkout and its venv may be where other users cannot enter (root's home is 0700), so
:func:`readable_install` copies the project's packages and the installed distributions they
need (found from their metadata, not a fixed list) into a directory under /tmp that every
user can read. The user runs Debian's python3 with that directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# unionfs/runtime is a link to runtime/: copying unionfs/ (links followed) brings it along.
PACKAGES = ("unionfs",)
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
_NAME = re.compile(r"^[A-Za-z0-9._-]+")


def _requirements(dist: md.Distribution) -> list[str]:
    """The names of what ``dist`` needs (extras left out)."""
    names = []
    for req in dist.requires or []:
        if "extra ==" in req or "extra==" in req:
            continue
        m = _NAME.match(req.strip())
        if m:
            names.append(m.group(0))
    return names


def runtime_distributions() -> list[md.Distribution]:
    """The installed distributions unionfs needs to run, without its test or bench tools."""
    todo = _requirements(md.distribution("unionfs"))
    seen: dict[str, md.Distribution] = {}
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a requirement only some platforms have
        seen[name] = dist
        todo += _requirements(dist)
    return list(seen.values())


def readable_install(dest: Path) -> str:
    """Copy the project and its dependencies under ``dest`` (made readable by all); returns
    the ``PYTHONPATH`` that runs it."""
    project, site = dest / "project", dest / "site-packages"
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, project / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for dist in runtime_distributions():
        for rel in dist.files or []:
            src = Path(str(dist.locate_file(rel)))
            if ".." in rel.parts or "__pycache__" in rel.parts or not src.is_file():
                continue
            target = site / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    for path in [dest, *dest.rglob("*")]:
        mode = 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644
        os.chmod(path, mode, follow_symlinks=False)
    return f"{project}:{site}"
