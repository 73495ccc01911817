"""Renaming in the union: its errnos, and how a rename lands in the upper.

**Errnos**, in the order they are checked (:func:`rename_errno`, then
:func:`must_be_empty`): ``RENAME_WHITEOUT`` is refused (EINVAL: a whiteout is the union's
own marker, as on overlayfs); a new name the upper cannot hold (ENAMETOOLONG, EINVAL for an
OCI marker); no source (ENOENT); ``RENAME_NOREPLACE`` over an existing name (EEXIST);
``RENAME_EXCHANGE`` without a target (ENOENT); a directory over a non-directory (ENOTDIR) and
the other way round (EISDIR). A rename of a name onto itself then does nothing; a directory
it replaces must be empty in the merged view (ENOTEMPTY), even if the upper alone is.

**What moves must be in the upper first** (:func:`how_to_move`): a file is copied up. A
directory that only the upper makes moves as it is. A directory that lower layers
contribute to (*renaming a lower directory*) is either

* ``REDIRECT``: copied up alone, and an ``overlay.redirect`` xattr records where its lower
  content is (:func:`redirect_value`), as the kernel's overlayfs does with
  ``redirect_dir=on``: O(1), trusted xattrs only; or
* ``COPY_TREE``: copied up with everything below it and made opaque
  (:func:`tree_copy_children`): with ``userxattr`` or ``-o redirect_dir=off``, where the
  kernel's overlayfs answers EXDEV (and ``mv`` copies by hand). unionfs never returns EXDEV
  for a rename: afterwards the directory is self-contained, and overlayfs reads it too.

**Where the rename leaves whiteouts** (:func:`plan_rename`): when a lower layer shows the
old name, a whiteout stays there (``RENAME_WHITEOUT``). A name that lands on an upper
whiteout swaps with it (``RENAME_EXCHANGE``: a directory cannot replace a character device),
and the whiteout that comes back stays at the old name only if that needs one. A directory
landing where a lower layer has the name is made opaque, unless it has a redirect.

**Impure directories**: a name that keeps its inode number from elsewhere (it has an origin:
a copy-up) and moves to another directory marks that directory impure first, as the
kernel's overlayfs does (:mod:`unionfs.layers.ondisk`); so does the target of an exchange.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import Enum

from unionfs.core.merge import Entry
from unionfs.core.names import storable_errno

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4


def rename_errno(src: Entry | None, dst: Entry | None, flags: int, new: bytes) -> int | None:
    """The errno of renaming merged entry ``src`` to name ``new``, where the merged target
    directory has ``dst`` (None: allowed, so far; see :func:`must_be_empty`)."""
    if flags & RENAME_WHITEOUT:
        return errno.EINVAL
    refused = storable_errno(new)
    if refused is not None:
        return refused
    if src is None:
        return errno.ENOENT
    if flags & RENAME_NOREPLACE and dst is not None:
        return errno.EEXIST
    if flags & RENAME_EXCHANGE:
        return errno.ENOENT if dst is None else None
    if dst is None:
        return None
    if src.is_dir and not dst.is_dir:
        return errno.ENOTDIR
    if not src.is_dir and dst.is_dir:
        return errno.EISDIR
    return None


def must_be_empty(dst: Entry | None, flags: int) -> bool:
    """True when the rename replaces directory ``dst``: it must be empty (else ENOTEMPTY)."""
    return dst is not None and dst.is_dir and not flags & RENAME_EXCHANGE


class Move(Enum):
    """What a name that moves needs first (see the module docstring)."""

    NONE = "a directory only the upper makes: it moves as it is"
    COPY_UP = "a file: copied up"
    REDIRECT = "a lower directory: copied up alone, with a redirect to its lower content"
    COPY_TREE = "a lower directory: copied up with its whole tree, and made opaque"


def how_to_move(is_dir: bool, view_layers: tuple[int, ...], make_redirects: bool) -> Move:
    """How a name moves: ``view_layers``, the layers a directory's merged view is made of
    (cut at an opaque one); ``make_redirects``: redirect_dir=on with trusted xattrs."""
    if not is_dir:
        return Move.COPY_UP
    if all(index == 0 for index in view_layers):
        return Move.NONE
    return Move.REDIRECT if make_redirects else Move.COPY_TREE


def redirect_value(current: bytes | None, same_dir: bool, old: bytes,
                   lower_path: bytes) -> bytes | None:
    """The ``overlay.redirect`` a directory gets as it moves from name ``old`` (None: keep
    ``current``). ``lower_path``: where its content is in the first layer below. Within one
    directory a relative redirect (its lower name), else an absolute one (its path below);
    an absolute one is kept, and so is a relative one within the same directory."""
    if current is not None and (same_dir or current.startswith(b"/")):
        return None
    return old if same_dir and current is None else b"/" + lower_path


def tree_copy_children(view: dict[bytes, Entry]) -> tuple[bytes, ...]:
    """The names of a directory being copied up with its tree that need work, in order:
    its directories (each copied by the same rule) and files that are not in the upper."""
    return tuple(name for name, entry in view.items() if entry.is_dir or entry.layer != 0)


class Side(Enum):
    SRC = "the source, moving from the old name to the new one"
    DST = "the target of an exchange, moving from the new name to the old one"


@dataclass(frozen=True)
class PrepareMove:
    side: Side
    move: Move


@dataclass(frozen=True)
class KeepTargetStat:
    """The replaced target's last attributes (it may live on: open, or hard links)."""


@dataclass(frozen=True)
class CopyUpNewParent:
    pass


@dataclass(frozen=True)
class EmptyTargetDir:
    """An upper directory replaced (merged-empty) may still hold whiteouts: remove them."""


@dataclass(frozen=True)
class KeepTargetInode:
    """The replaced upper target may still be held by the kernel: keep its inode (and so
    its number) until the kernel forgets it."""


@dataclass(frozen=True)
class DropTargetWhiteout:
    pass


@dataclass(frozen=True)
class SetRedirect:
    side: Side


@dataclass(frozen=True)
class MarkOpaque:
    side: Side


@dataclass(frozen=True)
class MarkImpure:
    """Mark the directory the ``side`` moves into impure (it gets an entry with an origin)."""

    side: Side


@dataclass(frozen=True)
class Rename:
    """renameat2(old, new, flags) in the upper."""

    flags: int = 0


@dataclass(frozen=True)
class RemoveOld:
    """Remove what came back to the old name from the swap with a whiteout."""


@dataclass(frozen=True)
class ForgetDirFds:
    """A directory moved: cached directory fds below both names are stale."""


RenameStep = (PrepareMove | KeepTargetStat | CopyUpNewParent | EmptyTargetDir
              | KeepTargetInode | DropTargetWhiteout | SetRedirect | MarkOpaque | MarkImpure
              | Rename | RemoveOld | ForgetDirFds)


@dataclass(frozen=True)
class RenameFacts:
    """What a rename plan depends on: the merged entries, how each side moves, and which
    names lower layers show (``covered``) or the upper whites out."""

    src: Entry
    dst: Entry | None
    exchange: bool
    src_move: Move
    dst_move: Move | None  # exchange only
    old_covered: bool
    new_covered: bool
    new_whiteout: bool
    same_dir: bool = False  # old and new name in one directory
    src_origin: bool = False  # the source has (or gets, by its copy-up) an origin
    dst_origin: bool = False  # the same of the target (an exchange moves it too)


@dataclass(frozen=True)
class RenamePlan:
    steps: tuple[RenameStep, ...]
    whiteout_at_old: bool  # the upper holds a whiteout at the old name afterwards


def plan_rename(f: RenameFacts) -> RenamePlan:
    """The steps of a rename that :func:`rename_errno` allowed (and that is no no-op)."""
    replaces = f.dst is not None and not f.exchange
    steps: list[RenameStep] = [PrepareMove(Side.SRC, f.src_move)]
    if replaces:
        steps.append(KeepTargetStat())
    if f.exchange and f.dst_move is not None:
        steps.append(PrepareMove(Side.DST, f.dst_move))
    steps.append(CopyUpNewParent())
    target_whiteout = f.new_whiteout
    if replaces and f.dst is not None:
        if f.dst.layer == 0 and f.dst.is_dir:
            steps.append(EmptyTargetDir())
        if f.dst.layer == 0:
            steps.append(KeepTargetInode())
        elif f.new_whiteout:
            steps.append(DropTargetWhiteout())
            target_whiteout = False
    steps += _marks(Side.SRC, f.src, f.src_move, f.new_covered or target_whiteout)
    if f.src_origin and not f.same_dir:
        steps.append(MarkImpure(Side.SRC))
    if f.exchange and f.dst is not None and f.dst_move is not None:
        steps += _marks(Side.DST, f.dst, f.dst_move, f.old_covered)
        if f.dst_origin and not f.same_dir:
            steps.append(MarkImpure(Side.DST))
    whiteout_at_old = False
    if f.exchange:
        steps.append(Rename(RENAME_EXCHANGE))
    elif target_whiteout:
        steps.append(Rename(RENAME_EXCHANGE))
        whiteout_at_old = f.old_covered
        if not f.old_covered:
            steps.append(RemoveOld())
    elif f.old_covered:
        steps.append(Rename(RENAME_WHITEOUT))
        whiteout_at_old = True
    else:
        steps.append(Rename())
    if f.src.is_dir or (f.dst is not None and f.dst.is_dir):
        steps.append(ForgetDirFds())
    return RenamePlan(tuple(steps), whiteout_at_old)


def _marks(side: Side, entry: Entry, move: Move, lands_on_hidden: bool) -> list[RenameStep]:
    """The xattrs set just before the move (everything that can fail is done by then)."""
    if move is Move.REDIRECT:
        return [SetRedirect(side)]
    if entry.is_dir and lands_on_hidden:
        return [MarkOpaque(side)]
    return []
