"""Name checks: which names the upper can store (a lookup of a longer name than NAME_MAX
is ENAMETOOLONG too)."""

from __future__ import annotations

import errno

from unionfs.core.whiteout import is_oci_marker

NAME_MAX = 255


def storable_errno(name: bytes) -> int | None:
    """The errno of a new name the upper cannot hold (None: it can): too long, or an OCI
    marker (``.wh.x``), which every later mount reads as a whiteout (the file, and ``x``
    with it, would vanish)."""
    if len(name) > NAME_MAX:
        return errno.ENAMETOOLONG
    if is_oci_marker(name):
        return errno.EINVAL
    return None
