"""Deleting a name from the union: when unlink and rmdir are refused, and how.

The rule: *a delete needs a whiteout* when a lower layer shows the name (it is ``covered``,
see :func:`unionfs.core.merge.covered_and_whiteouts`): removing the upper entry alone would
let the lower one show through. So:

* only in a lower layer: put a whiteout in the upper;
* in the upper and covered: a whiteout replaces it in one rename (a directory is swapped
  out with ``RENAME_EXCHANGE``, then removed in the work dir);
* in the upper only: a file is unlinked; a directory is renamed into the work dir and
  removed there (it may hold whiteouts and an opaque mark rmdir would not take).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from unionfs.core.merge import Entry
from unionfs.core.plan import DropWork, Evict, Install, Place, PutWhiteout, Step, Unlink


def unlink_errno(entry: Entry | None) -> int | None:
    """The errno of unlink(2) of a name whose merged entry is ``entry`` (None: allowed)."""
    if entry is None:
        return errno.ENOENT
    return errno.EISDIR if entry.is_dir else None


def rmdir_errno(entry: Entry | None, is_empty: bool) -> int | None:
    """The errno of rmdir(2); ``is_empty``: the merged directory has no names."""
    if entry is None:
        return errno.ENOENT
    if not entry.is_dir:
        return errno.ENOTDIR
    return None if is_empty else errno.ENOTEMPTY


@dataclass(frozen=True)
class DeletePlan:
    steps: tuple[Step, ...]
    leaves_whiteout: bool  # the upper holds a whiteout at the name afterwards


def plan_delete(entry: Entry, covered: bool) -> DeletePlan:
    """How to take a name out of the union; ``covered``: a lower layer shows it."""
    if entry.layer != 0:
        return DeletePlan((PutWhiteout(Place.UPPER),), covered)
    if covered:
        if entry.is_dir:
            return DeletePlan((PutWhiteout(Place.WORK), Install(exchange=True), DropWork()), True)
        return DeletePlan((PutWhiteout(Place.WORK), Install()), True)
    if entry.is_dir:
        return DeletePlan((Evict(), DropWork()), False)
    return DeletePlan((Unlink(),), False)
