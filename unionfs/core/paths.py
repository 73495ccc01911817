"""Layer-relative paths: ``bytes`` without a leading slash, b"" being the layer root."""

from __future__ import annotations


def join(parent: bytes, name: bytes) -> bytes:
    """The layer-relative path of ``name`` in ``parent``."""
    return parent + b"/" + name if parent else name
