"""Live mounts as the store sees them: what they stack, whether they use an image, commit.

The mount server records each live union (lowers, upper, workdir, mount point);
:func:`unionfs.api.mount_info` reads that record for a mount point.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.store.fsutil import flock
from unionfs.store.store import UPPER_RECORD, ConfigArg, Image, Progress, Store


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a mount point (see :func:`unionfs.api.is_mounted`)."""
    from unionfs.api import is_mounted as api_is_mounted

    return api_is_mounted(path)


def mount_info(store: Store, mountpoint: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of the union mounted at ``mountpoint``, or None if it is not one."""
    from unionfs.api import mount_info as api_mount_info

    if not is_mounted(mountpoint):
        return None
    record = api_mount_info(mountpoint)
    return dict(record) if record else None


def _fuse_mountpoints() -> list[str]:
    """Mount points of FUSE file systems in this mount namespace."""
    from unionfs.mount.process import unescape_mountinfo

    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        rows = [ln.split(" - ", 1) for ln in f]
    return [unescape_mountinfo(r[0].split()[4]) for r in rows
            if len(r) == 2 and r[1].startswith("fuse")]


def _all_mounts(store: Store) -> Iterator[dict[str, Any]]:
    from unionfs.api import mount_info as api_mount_info

    for point in _fuse_mountpoints():
        info = api_mount_info(point)
        if info:
            yield dict(info)


def mount_user(store: Store, image: Image) -> str | None:
    """A live mount that uses ``image``: one whose lowest layers are exactly the image's
    (compared by layer id, so a lower moved into the store by a commit still counts).
    Containers are the runtime's to report: the CLI asks both."""
    mine = image.layer_ids[::-1]
    for info in _all_mounts(store):
        lowers = [store.layer_of_dir(Path(p)) for p in info.get("lowers", [])]
        if mine and lowers[len(lowers) - len(mine):] == mine:
            return f"the mount at {info.get('mountpoint')}"
    return None


def lower_layer_ids(store: Store, lowers: list[str], progress: Progress | None = None
                    ) -> list[str]:
    """Layer ids for a mount's lowers (top first); lowers not in the store are imported.

    A lower with a sibling ``<dir>.runtime-only`` file is the container runtime's own (its
    init layer of mount points and /etc stubs) and is left out.
    """
    out = []
    for lower in lowers:
        if os.path.exists(f"{lower.rstrip('/')}.runtime-only"):
            continue
        layer_id = store.layer_of_dir(Path(lower))
        if layer_id is None:
            layer_id = store.add_layer_dir(Path(lower), f"lower {lower}", progress=progress).id
        out.append(layer_id)
    return out


def commit_mounted(store: Store, mountpoint: Path, tag: str, message: str = "",
                   created_by: str = "", author: str | None = None,
                   progress: Progress | None = None, config: ConfigArg = None) -> Image:
    """Commit a live mount's upper as a new image; the mount goes on over a fresh upper.

    Commits on the same mount point are serialized by a lock file in the store.
    """
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:32]
    with flock(store.root / "locks" / f"commit-{key}.lock"):
        info = mount_info(store, mountpoint)
        if info is None:
            raise UserError(f"{mountpoint} is not a unionfs mount")
        if not info.get("upper"):
            raise UserError(f"{mountpoint} is mounted read-only (no upper to commit)")
        lower_ids = lower_layer_ids(store, list(info.get("lowers", [])), progress)
        from unionfs.api import switch_upper

        old_upper = Path(switch_upper(mountpoint))
        image = store.commit_on_layers(old_upper, lower_ids, tag, message, created_by, author,
                                       adopt=True, progress=progress, config=config)
        store.record_committed(old_upper, image.layer_ids[-1])
        return image


def upper_lowers(upper: Path) -> list[str] | None:
    """The lowers recorded for an (unmounted) upper made by the store, if any."""
    try:
        info = json.loads((upper.parent / UPPER_RECORD).read_bytes())
    except (OSError, ValueError):
        return None
    lowers = info.get("lowers") if isinstance(info, dict) else None
    return [str(p) for p in lowers] if isinstance(lowers, list) else None


def in_store_uppers(store: Store, upper: Path) -> bool:
    """True for an upper directory the store made (``uppers/<kind>/<name>/upper``)."""
    real = Path(os.path.realpath(upper))
    return real.parent.parent.parent == Path(os.path.realpath(store.root / "uppers"))
