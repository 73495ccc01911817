"""``container prune`` and ``image prune``, with docker's prompt and output.

``container prune`` removes every stopped container (created or exited) with its upper;
``image prune`` every dangling image (no tag, no container on it, no image built on it),
with ``-a`` every image no container uses. Both print what they removed and the space it
freed (docker's decimal units: ``212B``, ``1.23MB``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unionfs.runtime import lifecycle, state

CONTAINER_WARNING = "WARNING! This will remove all stopped containers."
DANGLING_WARNING = "WARNING! This will remove all dangling images."
ALL_WARNING = ("WARNING! This will remove all images without at least one container "
               "associated to them.")


def human_size(n: float) -> str:
    """Bytes as docker's ``units.HumanSize`` prints them (4 significant digits, kB = 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}PB"


def tree_size(path: Path | None) -> int:
    """Bytes of the regular files under ``path`` (links not followed; unreadable parts
    count as nothing)."""
    if path is None:
        return 0
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(top, name)):
                total += st.st_size
    return total


def prune_containers(store: Any) -> tuple[list[str], int]:
    """Remove the stopped containers; their ids and the bytes of their uppers."""
    removed, freed = [], 0
    for c in state.all_containers(store):
        if c.broken or c.running():
            continue
        size = tree_size(c.upper)
        lifecycle.remove(c)
        removed.append(c.id)
        freed += size
    return removed, freed


def prune_images(store: Any, every: bool) -> tuple[list[str], int]:
    """Remove dangling images (``every``: all unused ones), again until none is left: an
    image becomes removable once the images built on it are gone."""
    from unionfs.store.mounts import mount_user

    def in_use(image: Any) -> str | None:
        return mount_user(store, image) or state.image_user(store, image)

    lines: list[str] = []
    freed = 0
    while True:
        candidates = [im for im in store.images() if (every or not im.tags)
                      and in_use(im) is None and not store.children(im)]
        if not candidates:
            return lines, freed
        for image in candidates:
            sizes = {layer.id: layer.size for layer in image.layers}
            for line in store.remove(image.id, in_use=in_use):
                what, _, name = line.partition(": ")
                if what == "Deleted layer":
                    freed += sizes.get(name, 0)
                lines.append(f"{'untagged' if what == 'Untagged' else 'deleted'}: {name}")


def _confirmed(warning: str) -> bool:
    print(warning)
    print("Are you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def register(sub: Any, parser: Callable[..., argparse.ArgumentParser]) -> None:
    for group, help_, add in (("container", "manage containers", _add_container_prune),
                              ("image", "manage images", _add_image_prune)):
        p = parser(sub, group, help_)
        inner = p.add_subparsers(dest=f"{group}_command", metavar="COMMAND", required=True)
        add(inner, parser)


def _add_container_prune(inner: Any, parser: Callable[..., argparse.ArgumentParser]) -> None:
    p = parser(inner, "prune", "remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_container_prune)


def _add_image_prune(inner: Any, parser: Callable[..., argparse.ArgumentParser]) -> None:
    p = parser(inner, "prune", "remove dangling images (-a: every image no container uses)")
    p.add_argument("-a", "--all", action="store_true", help="every unused image, not only "
                   "dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_image_prune)


def _store(args: argparse.Namespace) -> Any:
    from unionfs.store import Store

    return Store.open(getattr(args, "store", None))


def cmd_container_prune(args: argparse.Namespace) -> int:
    if not args.force and not _confirmed(CONTAINER_WARNING):
        return 0
    _report("Deleted Containers:", *prune_containers(_store(args)))
    return 0


def cmd_image_prune(args: argparse.Namespace) -> int:
    if not args.force and not _confirmed(ALL_WARNING if args.all else DANGLING_WARNING):
        return 0
    _report("Deleted Images:", *prune_images(_store(args), args.all))
    return 0


def _report(title: str, lines: list[str], freed: int) -> None:
    """Docker's prune report: what went, under ``title``, then the space freed."""
    if lines:
        print(title)
        print("\n".join(lines))
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
