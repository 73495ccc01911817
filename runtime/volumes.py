"""Named volumes: directories in the store that outlive containers (``volume create|ls|
inspect|rm|prune``, ``-v NAME:/path``).

A volume ``NAME`` is ``<store>/volumes/NAME/`` (0700: only the store's owner reaches it)
holding ``volume.json`` and the data, ``_data/``, as docker's ``/var/lib/docker/volumes``.
``-v NAME:/path`` creates the volume when it does not exist; when its ``_data`` is empty, the
container's PID 1 fills it from the image's content at ``/path`` before mounting it (docker's
copy of the image directory), as root of the container's user namespace, so a rootless
volume's files are owned as the container sees them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from unionfs.errors import OperationFailed, UserError
from unionfs.runtime import state
from unionfs.runtime.spec import Volume, check_volume_name

DATA = "_data"


def volumes_dir(store: Any) -> Path:
    """Where a store keeps its volumes (reachable only by the store's owner)."""
    path = Path(store.root) / "volumes"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def info(store: Any, name: str) -> dict[str, Any]:
    """``volume inspect`` data of volume ``name``; a one-line error when there is none."""
    path = volumes_dir(store) / name
    try:
        data: dict[str, Any] = json.loads((path / "volume.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"no such volume: {name}") from None
    return data


def exists(store: Any, name: str) -> bool:
    return (volumes_dir(store) / name / "volume.json").exists()


def create(store: Any, name: str | None = None) -> dict[str, Any]:
    """Create volume ``name`` (a random one when None); an existing one is returned as is."""
    name = check_volume_name(name) if name else secrets.token_hex(32)
    base = volumes_dir(store)
    with state.store_lock(store):
        if exists(store, name):
            return info(store, name)
        staging = base / f".new-{name}-{os.getpid()}"
        staging.mkdir(mode=0o700)
        (staging / DATA).mkdir(mode=0o755)
        data = {"CreatedAt": state.now_iso(), "Driver": "local", "Labels": {},
                "Mountpoint": str(base / name / DATA), "Name": name, "Options": {},
                "Scope": "local"}
        state.write_json(staging / "volume.json", data)
        staging.rename(base / name)  # made complete under a hidden name: never half-made
    return data


def names(store: Any) -> list[str]:
    """Every volume's name, sorted."""
    return sorted(d.name for d in volumes_dir(store).iterdir()
                  if not d.name.startswith(".") and (d / "volume.json").exists())


def users(store: Any, name: str) -> list[state.Container]:
    """The containers (running or not) whose ``-v`` names volume ``name``."""
    found = []
    for c in state.all_containers(store):
        if c.broken:
            continue
        if any(v.get("volume") == name for v in c.config["spec"].get("volumes", [])):
            found.append(c)
    return found


def remove(store: Any, name: str) -> None:
    """Delete volume ``name`` and its data; refused while a container uses it (as docker,
    even with ``-f``)."""
    info(store, name)
    with state.store_lock(store):
        used = users(store, name)
        if used:
            ids = ", ".join(c.id[:12] for c in used)
            raise OperationFailed(f"remove {name}: volume is in use - [{ids}]")
        path = volumes_dir(store) / name
        hidden = path.with_name(f".rm-{name}-{os.getpid()}")
        path.rename(hidden)  # gone from ls at once; the data follows
    from unionfs.runtime.idmap import remove_tree

    remove_tree(str(hidden))  # a rootless volume holds files of mapped owners


def resolve(store: Any, volumes: list[Volume]) -> None:
    """Give each named volume of ``-v`` its data directory, creating the volume if needed."""
    for vol in volumes:
        if vol.volume:
            vol.host = create(store, vol.volume)["Mountpoint"]


# -- filling an empty volume from the image (in the container's PID 1, before the bind) ---


def populate(source: str, dest: str) -> None:
    """Copy the image's directory ``source`` into the empty volume directory ``dest``:
    contents, modes, owners, times and symlinks (device nodes and sockets are left out).
    Nothing happens when ``dest`` holds anything or ``source`` is not a directory."""
    if os.listdir(dest) or not os.path.isdir(source) or os.path.islink(source):
        return
    _copy_tree(source, dest)
    st = os.lstat(source)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    with contextlib.suppress(OSError):
        os.lchown(dest, st.st_uid, st.st_gid)


def _copy_tree(src: str, dst: str) -> None:
    with os.scandir(src) as entries:
        for entry in entries:
            s, d = entry.path, os.path.join(dst, entry.name)
            st = entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                os.symlink(os.readlink(s), d)
            elif entry.is_dir(follow_symlinks=False):
                os.mkdir(d)
                _copy_tree(s, d)
            elif entry.is_file(follow_symlinks=False):
                shutil.copyfile(s, d, follow_symlinks=False)
            else:
                continue  # devices, fifos, sockets: not copied
            with contextlib.suppress(OSError):  # an owner our namespace does not map
                os.lchown(d, st.st_uid, st.st_gid)
            if not entry.is_symlink():
                os.chmod(d, stat.S_IMODE(st.st_mode))
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- the commands -----------------------------------------------------------------------


def register(sub: Any, parser: Any) -> None:
    """Add ``volume create|ls|inspect|rm|prune``; ``parser(sub, name, help)`` makes one."""
    top = parser(sub, "volume", "manage named volumes")
    verbs = top.add_subparsers(dest="volume_command", metavar="COMMAND", required=True)
    p = parser(verbs, "create", "create a volume (a random name when none is given)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(func=cmd_create)
    p = parser(verbs, "ls", "list volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.set_defaults(func=cmd_ls)
    p = parser(verbs, "inspect", "show volumes as JSON")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_inspect)
    p = parser(verbs, "rm", "remove volumes (never one a container uses)")
    p.add_argument("-f", "--force", action="store_true", help="no error for a missing volume")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_rm)
    p = parser(verbs, "prune", "remove every volume no container uses")
    p.add_argument("-a", "--all", action="store_true", help="the same (docker's option)")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")
    p.set_defaults(func=cmd_prune)


def _store(args: argparse.Namespace) -> Any:
    from unionfs.store import Store

    return Store.open(getattr(args, "store", None))


def cmd_create(args: argparse.Namespace) -> int:
    print(create(_store(args), args.name)["Name"])
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    found = names(_store(args))
    if args.quiet:
        for name in found:
            print(name)
        return 0
    print("DRIVER    VOLUME NAME")
    for name in found:
        print(f"local     {name}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    shown, failed = [], 0
    for name in args.names:
        try:
            shown.append(info(store, name))
        except UserError as exc:
            print(f"unionfs: error: {exc}", file=sys.stderr)
            failed = 1
    print(json.dumps(shown, indent=4))
    return failed


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    failed = 0
    for name in args.names:
        if args.force and not exists(store, name):
            continue
        try:
            remove(store, name)
            print(name)
        except UserError as exc:
            print(f"unionfs: error: {exc}", file=sys.stderr)
            failed = 1
    return failed


def cmd_prune(args: argparse.Namespace) -> int:
    store = _store(args)
    if not args.force:
        print("WARNING! This will remove all volumes not used by at least one container.\n"
              "Are you sure you want to continue? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed = []
    for name in names(store):
        with contextlib.suppress(UserError):  # in use (or taken meanwhile): kept
            remove(store, name)
            removed.append(name)
    if removed:
        print("Deleted Volumes:")
        for name in removed:
            print(name)
        print()
    print(f"Total reclaimed space: {len(removed)} volumes")
    return 0
