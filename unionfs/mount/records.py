"""Where running mounts are recorded, so other commands can find a mount's layers.

``/run/unionfs/mounts/`` for root, ``$XDG_RUNTIME_DIR/unionfs/mounts/`` (or
``/tmp/unionfs-<uid>/mounts/``) otherwise: one JSON file per mount point, removed at unmount.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unionfs.mount.spec import MountSpec


def state_dir() -> Path:
    """The per-user directory for runtime state (a user namespace's root is its user)."""
    uid = host_uid()
    if uid == 0:
        return Path("/run/unionfs")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime, "unionfs") if runtime else Path(f"/tmp/unionfs-{uid}")


def host_uid() -> int:
    """Our effective uid as the initial user namespace sees it."""
    euid = os.geteuid()
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, count = (int(x) for x in line.split())
                if inside <= euid < inside + count:
                    return outside + euid - inside
    except (OSError, ValueError):
        pass
    return euid


def _record_path(mountpoint: str) -> Path:
    """The record of ``mountpoint``, which must be a real path already: a stat of a mount
    point the caller itself serves would wait for the caller forever."""
    key = hashlib.sha256(mountpoint.encode()).hexdigest()[:24]
    return state_dir() / "mounts" / f"{key}.json"


def control_path(mountpoint: str) -> Path:
    """The control socket of the server of ``mountpoint`` (a real path)."""
    return _record_path(mountpoint).with_suffix(".sock")


def record_mount(spec: MountSpec, pid: int) -> Path:
    """Write the record of a live mount; returns its path."""
    path = _record_path(spec.mountpoint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"mountpoint": spec.mountpoint, "lowers": spec.lowers,
            "upper": spec.upper, "workdir": spec.work_path, "pid": pid,
            "read_only": spec.read_only, "xattr_ns": spec.xattr_ns.prefix.decode(),
            "control": str(control_path(spec.mountpoint))}
    tmp = path.with_suffix(f".{pid}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def mount_record(mountpoint: str) -> dict[str, Any] | None:
    """The record of the union served at ``mountpoint``, if its server is alive."""
    path = _record_path(os.path.realpath(mountpoint))
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(data["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return data
