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
* ``overlay.unionfs.impure`` = ``y`` on an upper directory: some entry in it may have an
  origin (a copy-up, or one renamed or linked in from another directory); set before such
  an entry appears. Where it is absent no entry has one, so a listing needs no xattr read
  per entry. It holds only where the upper's *format record* (``upper-format`` in the work
  dir's ``unionfs-tmp``, naming the upper and the namespace) says every writer kept the
  markers: an upper without it (written before the markers, or by an older unionfs, whose
  work-dir cleaning removes the record) is walked once and marked (:func:`format_record`).

Written in one form, the kernel's: whiteouts as character devices 0/0
(:func:`make_device_whiteout`, which ``WorkDir`` in ``layers/copyup.py`` and
``store/materialize.py`` call), opacity as ``opaque=y``; the OCI markers only in layer tars
(:func:`oci_whiteout_path`, :func:`oci_opaque_marker_path`, for ``store/layertar.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from unionfs.core.whiteout import (
    IMPURE_YES,
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


# ---- impure directories, and the upper's format record --------------------------------------

XattrTarget = int | bytes  # an open fd, or a path whose final component is not followed
FORMAT_RECORD = b"upper-format"  # in the work dir's unionfs-tmp (see the module docstring)
FORMAT_VERSION = 1


def is_impure(get: GetXattr, ns: XattrNamespace) -> bool:
    """True when the upper directory whose xattrs ``get`` reads is marked impure."""
    return get(ns.impure) == IMPURE_YES


def mark_impure(target: XattrTarget, ns: XattrNamespace) -> None:
    """Mark the upper directory ``target`` impure: an entry with an origin may be in it."""
    if isinstance(target, int):
        os.setxattr(target, ns.impure, IMPURE_YES)
    else:
        os.setxattr(target, ns.impure, IMPURE_YES, follow_symlinks=False)


def format_record(upper_root: os.stat_result, ns: XattrNamespace) -> bytes:
    """The record that says: every upper directory of this upper (its root's stat) that
    holds an entry with an origin in namespace ``ns`` is marked impure."""
    return b"unionfs upper format %d: impure markers (%s) kept in upper %d:%d\n" % (
        FORMAT_VERSION, ns.impure, upper_root.st_dev, upper_root.st_ino)


def read_format_record(work_fd: int) -> bytes | None:
    """The format record in the work directory ``work_fd`` (None: there is none)."""
    try:
        fd = os.open(FORMAT_RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=work_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):  # ELOOP: a symlink planted there
            return None
        raise
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def write_format_record(work_fd: int, tmp: bytes, record: bytes) -> None:
    """Write ``record`` atomically (through work entry ``tmp``) and durably."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=work_fd)
    try:
        os.write(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, FORMAT_RECORD, src_dir_fd=work_fd, dst_dir_fd=work_fd)


def drop_format_record(work_fd: int) -> None:
    """Remove the format record: the next mount walks the upper again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(FORMAT_RECORD, dir_fd=work_fd)
