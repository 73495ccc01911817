"""The build context: ``.dockerignore``, COPY/ADD sources inside it, and their digest.

Every source is checked to stay inside the context: ``..`` that leaves it, and a source that
is (or passes through) a symlink pointing outside, are refused. Symlinks inside a copied
directory are copied as symlinks, never followed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from unionfs.errors import UserError

IGNORE_FILES = (".containerignore", ".dockerignore")


class Ignore:
    """``.dockerignore`` patterns: the last matching pattern decides, ``!`` re-includes."""

    def __init__(self, patterns: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in patterns:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((keep, re.compile(_glob_regex(pattern))))

    @classmethod
    def load(cls, context: Path) -> Ignore:
        for name in IGNORE_FILES:
            path = context / name
            if path.is_file():
                return cls(path.read_text(errors="replace").splitlines())
        return cls([])

    def excluded(self, rel: str) -> bool:
        """True if ``rel`` (or a directory above it) is excluded."""
        parts = rel.split("/")
        result = False
        for keep, rx in self.rules:
            for n in range(len(parts), 0, -1):
                if rx.fullmatch("/".join(parts[:n])):
                    result = not keep
                    break
        return result


def _glob_regex(pattern: str) -> str:
    """A Go ``filepath.Match`` pattern plus ``**`` (any number of directories) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i)
            if end < 0:
                raise UserError(f"bad .dockerignore pattern: {pattern!r}")
            out.append(pattern[i:end + 1].replace("[!", "[^"))
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def inside(root: Path, rel: str, what: str) -> Path:
    """``root/rel`` resolved (symlinks followed); refused if it leaves ``root``."""
    norm = os.path.normpath(rel.lstrip("/")) if rel.strip("/") else "."
    if norm == ".." or norm.startswith("../"):
        raise UserError(f"{what} {rel!r} is outside the build context")
    real = Path(os.path.realpath(root / norm))
    base = Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        raise UserError(f"{what} {rel!r} is outside the build context (a symlink leads out)")
    return real


def expand_sources(root: Path, patterns: list[str], ignore: Ignore | None, what: str
                   ) -> list[tuple[Path, str]]:
    """Each source pattern (globs allowed) as (resolved path, name it has when copied)."""
    found: list[tuple[Path, str]] = []
    for pattern in patterns:
        norm = os.path.normpath(pattern.lstrip("/")) if pattern.strip("/") else "."
        inside(root, norm, what)
        if any(ch in norm for ch in "*?["):
            rx = re.compile(_glob_regex(norm))  # '*' stays in one directory, as Go's Match
            matches = sorted(p for p in _all_paths(root) if rx.fullmatch(p))
            matches = [m for m in matches if not (ignore and ignore.excluded(m))]
            if not matches:
                raise UserError(f"{what} {pattern!r}: no source files were specified")
            found += [(inside(root, m, what), m.rsplit("/", 1)[-1]) for m in matches]
            continue
        path = inside(root, norm, what)
        if not os.path.lexists(path) or (ignore and norm != "." and ignore.excluded(norm)):
            raise UserError(f"{what} {pattern!r}: no such file or directory in the context")
        found.append((path, "" if norm == "." else norm.rsplit("/", 1)[-1]))
    return found


def _all_paths(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in [*dirnames, *filenames]:
            yield name if rel == "." else f"{rel}/{name}"


def walk(src: Path, root: Path, ignore: Ignore | None) -> Iterator[tuple[Path, str]]:
    """``src`` and everything below it (not following symlinks), as (path, rel below src).

    Excluded paths (relative to the context ``root``) are left out.
    """
    yield src, ""
    if not src.is_dir() or src.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            full = Path(dirpath) / name
            if ignore is not None:
                ctx_rel = os.path.relpath(full, root)
                if not ctx_rel.startswith("..") and ignore.excluded(ctx_rel):
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
            yield full, os.path.relpath(full, src)


def digest(entries: list[tuple[Path, str]]) -> str:
    """sha256 over names, types, modes and contents (or link targets) of ``entries``."""
    h = hashlib.sha256()
    for path, rel in entries:
        st = os.lstat(path)
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()
