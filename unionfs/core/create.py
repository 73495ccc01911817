"""Creating a name in the union: when it is refused, and how it lands in the upper.

A new name goes straight into its upper directory, unless the upper holds a whiteout
there (a lower layer had the name, and it was deleted): then the entry is made in the work
dir and renamed over the whiteout. A directory made there is opaque (the lower directory of
that name must not show through it) and is swapped in with ``RENAME_EXCHANGE`` (a rename
cannot replace a character device by a directory); the whiteout that comes back is removed.
"""

from __future__ import annotations

import errno
import functools
import stat

from unionfs.core.merge import Entry
from unionfs.core.names import storable_errno
from unionfs.core.plan import DropWork, Finish, Install, Make, Place, SetOpaque, Step
from unionfs.core.whiteout import Kind, is_whiteout_stat


def create_errno(name: bytes, existing: Entry | None) -> int | None:
    """The errno of creating ``name`` (create, mkdir, mknod, symlink, link) when the merged
    directory has ``existing`` there (None: allowed)."""
    refused = storable_errno(name)
    if refused is not None:
        return refused
    return errno.EEXIST if existing is not None else None


def mknod_errno(mode: int, rdev: int) -> int | None:
    """A character device 0/0 is a whiteout on disk: it would vanish at the next lookup.
    The kernel's overlayfs refuses it the same way (EPERM)."""
    return errno.EPERM if is_whiteout_stat(mode, rdev) else None


def link_errno(source_is_dir: bool) -> int | None:
    """No hard link to a directory (EPERM), as link(2)."""
    return errno.EPERM if source_is_dir else None


def new_owner(uid: int, gid: int, sgid_group: int | None) -> tuple[int, int, bool]:
    """Owner and group of a new entry made by ``uid``/``gid``, and whether it inherits set-gid:
    in a set-gid directory (``sgid_group``: its group) the directory's group, as POSIX."""
    if sgid_group is not None:
        return uid, sgid_group, True
    return uid, gid, False


def special_bits(mode: int, is_dir: bool, inherit_sgid: bool) -> int:
    """The set-id and sticky bits a new entry gets: its own, and set-gid for a directory made
    in a set-gid directory."""
    special = mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
    return special | stat.S_ISGID if is_dir and inherit_sgid else special


def kind_of(mode: int) -> Kind:
    return Kind.DIR if stat.S_ISDIR(mode) else Kind.OTHER


@functools.cache  # six possible plans, of frozen steps: made once each (a create each file)
def plan_create(kind: Kind, over_whiteout: bool, *, new_link: bool = False) -> tuple[Step, ...]:
    """The steps that put a new entry of ``kind`` at a name; ``over_whiteout``: the upper
    has a whiteout there; ``new_link``: a hard link to an existing file (it keeps its owner
    and mode)."""
    made: tuple[Step, ...]
    if not over_whiteout:
        made = (Make(Place.UPPER),) if new_link else (Make(Place.UPPER), Finish(Place.UPPER))
        return made
    made = (Make(Place.WORK),) if new_link else (Make(Place.WORK), Finish(Place.WORK))
    if kind is Kind.DIR:
        return (*made, SetOpaque(Place.WORK), Install(exchange=True), DropWork())
    return (*made, Install())
