"""The layer store: content-addressed layers, images, commit, diff, squash, OCI save/load.

Public API: :class:`Store` (``Store.open(path)``), :class:`Image`, :class:`Layer`.
"""

from unionfs.store.store import Image, Layer, Store

__all__ = ["Image", "Layer", "Store"]
