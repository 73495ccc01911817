"""``export CONTAINER [-o FILE]``: a tar of the container's merged filesystem, as docker's.

The merge is the store's (:func:`unionfs.store.squash.merged_nodes`, the union's own rules)
over the container's upper and its image's layers. The init layer (the runtime's mount
points and ``/etc`` stubs) and the volumes are left out, as are ``/proc`` and ``/dev``'s
mounts: only what the image and the container's writes hold. A rootless store is read in
its user namespace (``export`` is a store command there), so the tar has the container's
owners. A running container's unwritten pages are flushed first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from unionfs.api import syncfs
from unionfs.errors import UserError
from unionfs.runtime import state
from unionfs.store.layertar import write_tar
from unionfs.store.squash import merged_nodes


def export(container: state.Container, out: BinaryIO) -> None:
    """Write the container's filesystem to ``out`` as a tar."""
    if container.broken:
        raise UserError(f"cannot export container {container.id[:12]}: {container.broken}")
    _flush(container)
    upper = container.upper
    layers = ([os.fspath(upper)] if upper is not None else []) + list(
        container.config["layer_dirs"])
    write_tar(merged_nodes(layers), out)
    out.flush()


def _flush(container: state.Container) -> None:
    """syncfs on a running container's root, through its server's mount namespace."""
    st = container.state()
    if not container.running():
        return
    server = st.get("server")
    target = (f"/proc/{server}/root{container.rootfs}" if st.get("private_mounts") and server
              else os.fspath(container.rootfs))
    with contextlib.suppress(OSError):
        syncfs(target)


def register(sub: Any, parser: Callable[..., argparse.ArgumentParser]) -> None:
    p = parser(sub, "export", "write a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from unionfs.store import Store

    container = state.get(Store.open(getattr(args, "store", None)), args.container)
    if args.output is None:
        if sys.stdout.isatty():
            raise UserError("cowardly refusing to save to a terminal. Use the -o flag or "
                            "redirect")
        sys.stdout.flush()
        export(container, sys.stdout.buffer)
        return 0
    target = os.path.abspath(args.output)
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            export(container, f)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return 0
