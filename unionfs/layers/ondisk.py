"""The on-disk format of a layer, read and written here only.

What the markers mean is in :mod:`unionfs.core.whiteout` (pure); this module applies it to
what the disk holds, for the union (``layers/layer.py``, ``engine/changes.py``) and for the
store (``store/tree.py``, ``diff.py``, ``untar.py``, ``materialize.py``) alike. The callers
do their own I/O (fd-relative in the union, by path in the store) and hand over what they
read: a stat, and a way to read an xattr.

* whiteout: a character device 0/0 (overlayfs); an empty regular file with an
  ``overlay.whiteout`` xattr, in a directory whose ``overlay.opaque`` is ``x`` (overlayfs
  xattr whiteouts); a ``.wh.<name>`` entry (OCI).
* opaque directory: ``overlay.opaque`` = ``y`` in the ``trusted.`` or the ``user.``
  namespace; a ``.wh..wh..opq`` entry in it (OCI).
* ``trusted.overlay.redirect``: where a renamed directory's lower content is;
  ``overlay.unionfs.origin``: the inode number of a copied-up file.

Written in one form, the kernel's: whiteouts as character devices 0/0
(:func:`make_device_whiteout`, which ``WorkDir`` in ``layers/copyup.py`` and
``store/materialize.py`` call), opacity as ``opaque=y``; the OCI markers only in layer tars
(:func:`oci_whiteout_path`, :func:`oci_opaque_marker_path`, for ``store/layertar.py``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from unionfs.core.whiteout import (
    NAMESPACES,
    OCI_OPAQUE_MARKER,
    OCI_WHITEOUT_PREFIX,
    OPAQUE_HAS_XATTR_WHITEOUTS,
    OPAQUE_YES,
    TRUSTED,
    XattrNamespace,
    is_opaque_value,
    is_whiteout_stat,
)

GetXattr = Callable[[bytes], bytes | None]  # an xattr of the entry read (None: it has none)
OPAQUE_NAMES = tuple(ns.opaque for ns in NAMESPACES)
WHITEOUT_NAMES = tuple(ns.whiteout for ns in NAMESPACES)


@dataclass(frozen=True, slots=True)
class DirMarks:
    """A directory's own overlay xattrs, in either namespace."""

    opaque: bool  # it hides what the layers below have at its path
    xattr_whiteouts: bool  # its empty files may be xattr whiteouts (``opaque=x``)


def dir_marks(get: GetXattr) -> DirMarks:
    """The marks of a directory whose xattrs ``get`` reads (the OCI marker inside it is
    another read: :func:`has_oci_opaque_marker`)."""
    values = [get(name) for name in OPAQUE_NAMES]
    return DirMarks(any(is_opaque_value(v) for v in values),
                    OPAQUE_HAS_XATTR_WHITEOUTS in values)


def oci_opaque_marker_path(dir_path: bytes) -> bytes:
    """Where the OCI opaque marker of the directory at ``dir_path`` is (a tar path too)."""
    return os.path.join(dir_path, OCI_OPAQUE_MARKER)


def oci_whiteout_path(parent_path: bytes, name: bytes) -> bytes:
    """Where the OCI whiteout of ``name`` in ``parent_path`` is (a tar path too)."""
    return os.path.join(parent_path, OCI_WHITEOUT_PREFIX + name)


def has_oci_opaque_marker(dir_path: bytes) -> bool:
    """True when the directory at ``dir_path`` holds the OCI opaque marker ``.wh..wh..opq``."""
    return os.path.lexists(oci_opaque_marker_path(dir_path))


def has_oci_whiteout(parent_path: bytes, name: bytes) -> bool:
    """True when the directory at ``parent_path`` holds an OCI whiteout of ``name``."""
    return os.path.lexists(oci_whiteout_path(parent_path, name))


def make_device_whiteout(name: bytes, dir_fd: int | None) -> None:
    """Make the overlayfs whiteout, a character device 0/0, at ``name`` in ``dir_fd``
    (None: ``name`` is a path)."""
    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dir_fd)


def is_device_whiteout(st: os.stat_result) -> bool:
    """The overlayfs whiteout: a character device 0/0."""
    return is_whiteout_stat(st.st_mode, st.st_rdev)


def is_xattr_whiteout(st: os.stat_result, has_xattr: Callable[[bytes], bool]) -> bool:
    """An overlayfs xattr whiteout (in a directory marked ``opaque=x``): an empty regular
    file with ``overlay.whiteout`` in either namespace."""
    return (stat.S_ISREG(st.st_mode) and st.st_size == 0
            and any(has_xattr(name) for name in WHITEOUT_NAMES))


def redirect(get: GetXattr) -> bytes | None:
    """A directory's ``trusted.overlay.redirect`` (the kernel follows trusted ones only: a
    user could forge a ``user.`` one)."""
    return get(TRUSTED.redirect)


def origin(get: GetXattr, ns: XattrNamespace) -> int | None:
    """The inode number a copied-up entry keeps (its ``overlay.unionfs.origin`` in ``ns``);
    None when it has none. Raises ValueError for a malformed value."""
    value = get(ns.origin)
    return int(value) if value else None


def origin_xattr(ns: XattrNamespace, ino: int) -> tuple[bytes, bytes]:
    """The (name, value) of the origin xattr that records inode number ``ino``."""
    return ns.origin, b"%d" % ino


def mark_opaque(path: bytes, ns: XattrNamespace) -> None:
    """Make the directory at ``path`` (an xattr path: not followed) opaque."""
    os.setxattr(path, ns.opaque, OPAQUE_YES, follow_symlinks=False)


def set_redirect(path: bytes, value: bytes) -> None:
    """Record where the directory at ``path`` has its lower content (trusted only)."""
    os.setxattr(path, TRUSTED.redirect, value, follow_symlinks=False)
