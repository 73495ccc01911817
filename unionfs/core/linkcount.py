"""Link counts the union reports."""

from __future__ import annotations


def dir_nlink(layers: int, st_nlink: int) -> int:
    """A directory's link count: the layer's own when one layer makes it, else 1, as the
    kernel's overlayfs reports a merged directory ("unknown": ``find`` then does not use
    the count to skip subdirectories)."""
    return 1 if layers > 1 else st_nlink
