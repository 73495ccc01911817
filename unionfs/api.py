"""The public entry point: mount a union in a server process, and unmount it.

Everything outside the filesystem itself (the CLI's background mode, the container runtime,
the benchmarks, the tests) mounts through :func:`mount`, which starts
``python -m unionfs mount --foreground`` as a separate process and returns once the mount is
live. The server stays a separate process, so whatever happens to the caller (an OOM kill in
a container, a ``kill -9 -1``) the union stays served until it is unmounted.

The code is the mount API package, :mod:`unionfs.mount`; these are its public names.
"""

from __future__ import annotations

from unionfs.mount.options import MountOptions, PathLike, escape_layer, escape_option
from unionfs.mount.process import (
    MountHandle,
    add_fault_rules,
    clear_fault_rules,
    fault_rules,
    is_mounted,
    mount,
    mount_info,
    server_command,
    server_metrics,
    server_stats,
    switch_upper,
    syncfs,
    unmount,
)

__all__ = [
    "MountHandle", "MountOptions", "PathLike", "add_fault_rules", "clear_fault_rules",
    "escape_layer", "escape_option", "fault_rules", "is_mounted", "mount", "mount_info",
    "server_command", "server_metrics", "server_stats", "switch_upper", "syncfs", "unmount",
]
