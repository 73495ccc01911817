"""COPY and ADD into a root tree (a union mount of the image so far, or a plain directory).

Destinations follow docker's rules: a destination ending in ``/``, several sources, or an
existing directory receive sources by name; a source directory's *contents* are copied;
``ADD`` unpacks a local tar archive. Paths in the root are resolved as the container would
see them (an image's symlink cannot lead out of the root), and the last component is never
followed.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from unionfs.build.context import Ignore, walk
from unionfs.errors import UserError


@dataclass(frozen=True)
class Owner:
    """``--chown``: uid and gid (None: leave as the copying process makes them)."""

    uid: int
    gid: int


def in_root(root: str, path: str) -> str:
    """``path`` as seen in the container, as a host path under ``root`` (symlinks inside)."""
    from unionfs.runtime.mounts import in_root as resolve

    return resolve(root, path)


def ensure_dir(root: str, path: str) -> str:
    """Make container directory ``path`` (and parents, mode 755) under ``root``; its host path."""
    done = "/"
    for part in [p for p in path.split("/") if p]:
        done = posixpath.join(done, part)
        host = in_root(root, done)
        if not os.path.lexists(host):
            os.mkdir(host, 0o755)
        elif not os.path.isdir(host):
            raise UserError(f"cannot copy to {path}: {done} is not a directory")
    return in_root(root, path)


def copy_sources(root: str, sources: list[tuple[Path, str]], dest: str, *, context: Path,
                 ignore: Ignore | None, owner: Owner | None, mode: int | None,
                 unpack: bool) -> None:
    """Copy each (path, name) of ``sources`` to container path ``dest`` (absolute)."""
    host_dest = in_root(root, dest)
    into_dir = dest.endswith("/") or len(sources) > 1 or os.path.isdir(host_dest)
    for path, name in sources:
        if path.is_dir() and not path.is_symlink():
            target = ensure_dir(root, dest)
            _chown(target, owner)
            _copy_tree(path, target, context, ignore, owner, mode)
        elif unpack and _is_archive(path):
            _unpack(path, ensure_dir(root, dest))
        else:
            cpath = posixpath.join(dest, name) if into_dir else dest
            parent = ensure_dir(root, posixpath.dirname(cpath) or "/")
            _copy_one(path, os.path.join(parent, posixpath.basename(cpath)), owner, mode)


def _copy_tree(src: Path, target: str, context: Path, ignore: Ignore | None,
               owner: Owner | None, mode: int | None) -> None:
    for path, rel in walk(src, context, ignore):
        if not rel:
            continue
        _copy_one(path, os.path.join(target, rel), owner, mode)


def _copy_one(src: Path, target: str, owner: Owner | None, mode: int | None) -> None:
    """One file, directory (itself only) or symlink; an existing non-directory is replaced."""
    st = os.lstat(src)
    if os.path.lexists(target) and not (stat.S_ISDIR(st.st_mode) and os.path.isdir(target)
                                        and not os.path.islink(target)):
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    if stat.S_ISDIR(st.st_mode):
        if not os.path.exists(target):
            os.mkdir(target, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), target)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    else:
        raise UserError(f"cannot copy {src}: not a file, directory or symlink")
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, mode if mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    _chown(target, owner or (Owner(0, 0) if os.geteuid() == 0 else None))


def _chown(path: str, owner: Owner | None) -> None:
    if owner is None:
        return
    try:
        os.lchown(path, owner.uid, owner.gid)
    except PermissionError:
        raise UserError(f"--chown={owner.uid}:{owner.gid}: not permitted (needs root)") from None


def _is_archive(path: Path) -> bool:
    with contextlib.suppress(OSError, tarfile.TarError):
        return path.is_file() and tarfile.is_tarfile(path)
    return False


def _unpack(path: Path, target: str) -> None:
    """A local tar archive (any compression) extracted with the safe ``data`` filter."""
    try:
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"ADD {path.name}: cannot unpack: {exc}") from None


def resolve_owner(root: str, text: str) -> Owner:
    """``--chown=user[:group]`` with names looked up in the root's /etc/passwd and group."""
    name, _, group = text.partition(":")
    uid = _lookup(root, "/etc/passwd", name, "user")
    gid = _lookup(root, "/etc/group", group, "group") if group else (
        _primary_gid(root, uid) if not name.isdigit() else uid)
    return Owner(uid, gid)


def _lookup(root: str, table: str, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    for fields in _rows(root, table):
        if fields[0] == name:
            return int(fields[2])
    raise UserError(f"--chown: unable to find {what} {name} in the image's {table}")


def _primary_gid(root: str, uid: int) -> int:
    for fields in _rows(root, "/etc/passwd"):
        if len(fields) > 3 and fields[2] == str(uid):
            return int(fields[3])
    return uid


def _rows(root: str, table: str) -> list[list[str]]:
    try:
        with open(in_root(root, table), errors="replace") as f:
            return [ln.rstrip("\n").split(":") for ln in f if ln.count(":") >= 2]
    except OSError:
        return []
