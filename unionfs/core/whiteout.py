"""On-disk encodings of whiteouts and opaque directories.

Read in every form people have on disk; written in one (the kernel overlayfs form):

* whiteout: a character device 0/0 (overlayfs); a ``.wh.<name>`` file (OCI layer tar); a
  zero-size regular file with an ``overlay.whiteout`` xattr in a directory whose
  ``overlay.opaque`` is ``x`` (overlayfs "xattr whiteouts", kernel 6.7+).
* opaque directory: ``trusted.overlay.opaque`` or ``user.overlay.opaque`` = ``y`` (overlayfs);
  a ``.wh..wh..opq`` entry inside it (OCI).

Names are ``bytes`` throughout: that is what the kernel hands a FUSE server.
"""

from __future__ import annotations

import stat
from enum import IntEnum

TRUSTED_PREFIX = b"trusted.overlay."
USER_PREFIX = b"user.overlay."
PRIVATE_XATTR_PREFIXES = (TRUSTED_PREFIX, USER_PREFIX)

OCI_WHITEOUT_PREFIX = b".wh."
OCI_OPAQUE_MARKER = b".wh..wh..opq"

OPAQUE_YES = b"y"
IMPURE_YES = b"y"
OPAQUE_HAS_XATTR_WHITEOUTS = b"x"


class Kind(IntEnum):
    """What a name is in one layer, as far as the union is concerned."""

    DIR = 1
    OTHER = 2
    WHITEOUT = 3


class XattrNamespace:
    """The ``overlay.*`` xattr names for one namespace (``trusted.`` or ``user.``)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.opaque = prefix + b"opaque"
        self.whiteout = prefix + b"whiteout"
        self.origin = prefix + b"unionfs.origin"
        # "Some entry here has an origin": unionfs's own name, not the kernel's "impure"
        # (which means kernel origins, and which the kernel removes where it finds none).
        self.impure = prefix + b"unionfs.impure"
        self.redirect = prefix + b"redirect"

    @property
    def is_user(self) -> bool:
        """True for the kernel's ``userxattr`` mode."""
        return self.prefix == USER_PREFIX


TRUSTED = XattrNamespace(TRUSTED_PREFIX)
USER = XattrNamespace(USER_PREFIX)
NAMESPACES = (TRUSTED, USER)


def is_whiteout_stat(st_mode: int, st_rdev: int) -> bool:
    """True for the overlayfs whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st_mode) and st_rdev == 0


# Nesting (Linux >= 6.7): an ``overlay.*`` xattr set through the union is stored one level
# down, ``trusted.overlay.x`` as ``trusted.overlay.overlay.x``, so a union can hold the
# layers of another union; stored escaped names show through unescaped.
ESCAPE = b"overlay."
_ESCAPED_PREFIXES = tuple(p + ESCAPE for p in PRIVATE_XATTR_PREFIXES)


def is_private_xattr(name: bytes) -> bool:
    """True for the overlay's own xattrs (not escaped ones), which never show through."""
    return name.startswith(PRIVATE_XATTR_PREFIXES) and not name.startswith(_ESCAPED_PREFIXES)


def escape_xattr(name: bytes) -> bytes:
    """The name stored in a layer for xattr ``name`` as the union's caller gives it."""
    for prefix in PRIVATE_XATTR_PREFIXES:
        if name.startswith(prefix):
            return prefix + ESCAPE + name[len(prefix):]
    return name


def unescape_xattr(stored: bytes) -> bytes | None:
    """The name the caller sees for an xattr stored in a layer (None: the overlay's own)."""
    for prefix in PRIVATE_XATTR_PREFIXES:
        if stored.startswith(prefix):
            if not stored.startswith(prefix + ESCAPE):
                return None
            return prefix + stored[len(prefix) + len(ESCAPE):]
    return stored


def redirect_target(value: bytes | None, lower_parent: bytes) -> bytes | None:
    """Where a directory with ``overlay.redirect`` = ``value`` has its content in the layers
    below (a layer-relative path), its parent being at ``lower_parent`` there; None when the
    value is no redirect: absolute ``/a/b`` from the root, relative ``name`` (no slash)
    beside it. Empty names, ``.`` and ``..`` are refused (never a way out of a layer)."""
    if not value:
        return None
    if value.startswith(b"/"):
        parts = value[1:].split(b"/")
        if all(p not in (b"", b".", b"..") for p in parts):
            return b"/".join(parts)
        return None
    if b"/" in value or value in (b".", b".."):
        return None
    return lower_parent + b"/" + value if lower_parent else value


def is_opaque_value(value: bytes | None) -> bool:
    """True when an ``overlay.opaque`` value makes the directory opaque."""
    return value == OPAQUE_YES


def oci_whiteout_target(name: bytes) -> bytes | None:
    """The name an OCI ``.wh.<name>`` entry hides, or None for an ordinary name.

    The opaque marker ``.wh..wh..opq`` is not a whiteout of a name; it returns None.
    """
    if not name.startswith(OCI_WHITEOUT_PREFIX) or name == OCI_OPAQUE_MARKER:
        return None
    target = name[len(OCI_WHITEOUT_PREFIX) :]
    return target or None


def is_oci_marker(name: bytes) -> bool:
    """True for any OCI marker entry (a ``.wh.<name>`` whiteout or the opaque marker)."""
    return name.startswith(OCI_WHITEOUT_PREFIX)


def translate_entries(
    entries: dict[bytes, Kind],
) -> tuple[dict[bytes, Kind], bool]:
    """Turn a raw layer listing into union terms: OCI markers become whiteouts and opacity.

    Returns the names with their kinds (OCI ``.wh.x`` becomes ``x: WHITEOUT`` unless the layer
    also has a real ``x``) and whether an OCI opaque marker was present.
    """
    if not any(name.startswith(OCI_WHITEOUT_PREFIX) for name in entries):
        return entries, False
    out: dict[bytes, Kind] = {}
    opaque = False
    for name, kind in entries.items():
        if name == OCI_OPAQUE_MARKER:
            opaque = True
            continue
        target = oci_whiteout_target(name)
        if target is None:
            out[name] = kind
        elif target not in entries:
            out[target] = Kind.WHITEOUT
    return out, opaque
