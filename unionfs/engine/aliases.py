"""Lower hard links stay one file through copy-up.

When a file that has several names in a lower layer is copied up, its other names that the
union still shows from that layer are linked to the copy in the upper at once. The upper then
holds them as one inode, as the lower did: writes through one name show through the others,
for good, and a remount or the kernel's overlayfs reads the same (overlayfs itself keeps lower
links together only with ``index=on``). Each link is one ``link(2)`` into place, so a crash
leaves every name either linked or still reading the lower.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from unionfs.engine.nodes import Node
from unionfs.layers.layer import keeping_times

if TYPE_CHECKING:
    from unionfs.engine.union import Union


def link_aliases(union: Union, node: Node, layer_index: int, ino: int) -> None:
    """Link the other visible names of lower inode ``ino`` to ``node``'s fresh upper copy."""
    source = union.path_in(node, layer_index)
    for rel in union.layers[layer_index].names_of(ino):
        target = _visible(union, rel, layer_index) if rel != source else None
        if target is not None:
            _link(union, node, *target)


def _visible(union: Union, rel: bytes, layer_index: int) -> tuple[Node, bytes] | None:
    """The (parent node, name) of ``rel`` when the union shows it from ``layer_index``."""
    *dirs, name = rel.split(b"/")
    parent = union.root
    for component in dirs:
        entry = union.merged(parent).get(component)
        if entry is None or not entry.is_dir:
            return None
        parent = union.view_of(parent, component)
        union.merged(parent)
        if layer_index not in (parent.layers or ()):
            return None
    entry = union.merged(parent).get(name)
    if entry is None or entry.is_dir or entry.layer != layer_index:
        return None
    if union.has_redirects and union.dir_path(parent, layer_index) != b"/".join(dirs):
        return None  # the union shows another file of that layer there (a redirect)
    return parent, name


def _link(union: Union, node: Node, parent: Node, name: bytes) -> None:
    """Link ``node``'s upper file as ``parent/name`` (``parent`` copied up first)."""
    union.copy_up(parent)
    union.mark_impure(parent)  # the link has the copy's origin
    upper = union.layers[0]
    src_parent = node.parent
    assert src_parent is not None
    dst_fd = upper.dir_fd(parent.path())
    with keeping_times(dst_fd):  # part of a copy-up, not a change of the directory
        os.link(node.name, name, src_dir_fd=upper.dir_fd(src_parent.path()),
                dst_dir_fd=dst_fd, follow_symlinks=False)
    union.merged(parent)[name].layer = 0
