"""The union's change rules of unionfs/core: errno tables, and plans checked on a model.

The plans' steps are applied with :func:`unionfs.core.plan.apply` to a model of the upper
directory, and the result is resolved again with :func:`unionfs.core.merge.merge`: what a
plan does must be what the union shows afterwards. (The errno tables are compared with the
kernel's overlayfs in ``tests/differential/test_rule_tables.py``.)
"""

from __future__ import annotations

import errno
import stat

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from unionfs.core.create import (
    create_errno,
    link_errno,
    mknod_errno,
    new_owner,
    plan_create,
    special_bits,
)
from unionfs.core.delete import plan_delete, rmdir_errno, unlink_errno
from unionfs.core.linkcount import dir_nlink
from unionfs.core.merge import Entry, LayerListing, contributing_layers, covered_and_whiteouts
from unionfs.core.merge import merge as merge_listings
from unionfs.core.names import NAME_MAX, storable_errno
from unionfs.core.plan import Make, Place, UpperModel, apply
from unionfs.core.rename import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    MarkImpure,
    MarkOpaque,
    Move,
    PrepareMove,
    Rename,
    RenameFacts,
    SetRedirect,
    Side,
    how_to_move,
    must_be_empty,
    plan_rename,
    redirect_value,
    rename_errno,
    tree_copy_children,
)
from unionfs.core.whiteout import Kind

D, F, W = Kind.DIR, Kind.OTHER, Kind.WHITEOUT
NAMES = (b"a", b"b", b"c", b"d")


def stack(layers: list[dict[bytes, Kind]]) -> list[tuple[int, LayerListing]]:
    return [(i, LayerListing(entries)) for i, entries in enumerate(layers)]


def merge(layers: list[dict[bytes, Kind]]) -> dict[bytes, Entry]:
    return merge_listings(stack(layers))


# ---- errno tables -----------------------------------------------------------------------

def test_names_the_upper_cannot_hold() -> None:
    assert storable_errno(b"x" * NAME_MAX) is None
    assert storable_errno(b"x" * (NAME_MAX + 1)) == errno.ENAMETOOLONG
    assert storable_errno(b".wh.x") == errno.EINVAL  # would read back as a whiteout of x
    assert storable_errno(b".wh..wh..opq") == errno.EINVAL
    assert storable_errno(b"x.wh.") is None


def test_create_table() -> None:
    assert create_errno(b"n", None) is None
    assert create_errno(b"n", Entry(1, F)) == errno.EEXIST
    assert create_errno(b"n", Entry(0, D, (0,))) == errno.EEXIST
    assert create_errno(b".wh.n", None) == errno.EINVAL
    assert mknod_errno(stat.S_IFCHR | 0o600, 0) == errno.EPERM  # a whiteout on disk
    assert mknod_errno(stat.S_IFCHR | 0o600, 0x0103) is None
    assert mknod_errno(stat.S_IFIFO | 0o600, 0) is None
    assert link_errno(True) == errno.EPERM
    assert link_errno(False) is None


@pytest.mark.parametrize(("entry", "empty", "unlink", "rmdir"), [
    (None, True, errno.ENOENT, errno.ENOENT),
    (Entry(1, F), True, None, errno.ENOTDIR),
    (Entry(0, D, (0, 1)), True, errno.EISDIR, None),
    (Entry(0, D, (0, 1)), False, errno.EISDIR, errno.ENOTEMPTY),
])
def test_unlink_and_rmdir_tables(entry: Entry | None, empty: bool, unlink: int | None,
                                 rmdir: int | None) -> None:
    assert unlink_errno(entry) == unlink
    assert rmdir_errno(entry, empty) == rmdir


FILE, DIR = Entry(1, F), Entry(1, D, (1,))


@pytest.mark.parametrize(("src", "dst", "flags", "expected"), [
    (FILE, None, 0, None),
    (None, None, 0, errno.ENOENT),
    (FILE, FILE, 0, None),
    (DIR, DIR, 0, None),  # (ENOTEMPTY when the target has names: must_be_empty)
    (DIR, FILE, 0, errno.ENOTDIR),
    (FILE, DIR, 0, errno.EISDIR),
    (FILE, FILE, RENAME_NOREPLACE, errno.EEXIST),
    (FILE, None, RENAME_NOREPLACE, None),
    (FILE, None, RENAME_EXCHANGE, errno.ENOENT),
    (FILE, DIR, RENAME_EXCHANGE, None),
    (DIR, FILE, RENAME_EXCHANGE, None),
    (FILE, None, RENAME_WHITEOUT, errno.EINVAL),
    (None, None, RENAME_WHITEOUT, errno.EINVAL),  # the flag is checked first
])
def test_rename_table(src: Entry | None, dst: Entry | None, flags: int,
                      expected: int | None) -> None:
    assert rename_errno(src, dst, flags, b"new") == expected


def test_rename_refuses_names_the_upper_cannot_hold() -> None:
    assert rename_errno(FILE, None, 0, b"x" * 256) == errno.ENAMETOOLONG
    assert rename_errno(FILE, None, 0, b".wh.x") == errno.EINVAL


def test_only_a_replaced_directory_must_be_empty() -> None:
    assert must_be_empty(DIR, 0)
    assert not must_be_empty(DIR, RENAME_EXCHANGE)
    assert not must_be_empty(FILE, 0)
    assert not must_be_empty(None, 0)


def test_dir_link_count() -> None:
    assert dir_nlink(1, 5) == 5
    assert dir_nlink(2, 5) == 1  # merged: "unknown", as overlayfs


# ---- renaming a lower directory ---------------------------------------------------------

@pytest.mark.parametrize(("is_dir", "layers", "redirects", "move"), [
    (False, (), True, Move.COPY_UP),
    (True, (0,), True, Move.NONE),
    (True, (0,), False, Move.NONE),
    (True, (1,), True, Move.REDIRECT),
    (True, (0, 2), True, Move.REDIRECT),
    (True, (1,), False, Move.COPY_TREE),  # the kernel: EXDEV
    (True, (0, 1), False, Move.COPY_TREE),
])
def test_how_a_name_moves(is_dir: bool, layers: tuple[int, ...], redirects: bool,
                          move: Move) -> None:
    assert how_to_move(is_dir, layers, redirects) is move


@pytest.mark.parametrize(("current", "same_dir", "expected"), [
    (None, True, b"old"),  # relative: its lower name
    (None, False, b"/lower/path"),  # absolute: its path below
    (b"/kept", True, None),
    (b"/kept", False, None),
    (b"rel", True, None),  # a relative one stays right within the same directory
    (b"rel", False, b"/lower/path"),
])
def test_redirect_value(current: bytes | None, same_dir: bool, expected: bytes | None) -> None:
    assert redirect_value(current, same_dir, b"old", b"lower/path") == expected


def test_tree_copy_takes_directories_and_lower_files() -> None:
    view = {b"up": Entry(0, F), b"low": Entry(1, F), b"dir": Entry(0, D, (0,))}
    assert tree_copy_children(view) == (b"low", b"dir")


def facts(**changes: object) -> RenameFacts:
    base: dict[str, object] = dict(src=FILE, dst=None, exchange=False, src_move=Move.COPY_UP,
                                   dst_move=None, old_covered=False, new_covered=False,
                                   new_whiteout=False)
    base.update(changes)
    return RenameFacts(**base)  # type: ignore[arg-type]


def test_rename_leaves_a_whiteout_where_a_lower_name_shows() -> None:
    plan = plan_rename(facts(old_covered=True))
    assert plan.whiteout_at_old
    assert Rename(RENAME_WHITEOUT) in plan.steps
    assert not plan_rename(facts()).whiteout_at_old


def test_rename_onto_an_upper_whiteout_swaps_with_it() -> None:
    plan = plan_rename(facts(new_whiteout=True, new_covered=True))
    assert Rename(RENAME_EXCHANGE) in plan.steps
    assert not plan.whiteout_at_old  # what came back is removed
    assert plan_rename(facts(new_whiteout=True, old_covered=True)).whiteout_at_old


def test_a_directory_landing_on_a_hidden_name_is_opaque_unless_redirected() -> None:
    lower_dir = Entry(0, D, (0, 1))
    assert MarkOpaque(Side.SRC) in plan_rename(facts(
        src=lower_dir, src_move=Move.COPY_TREE, new_covered=True)).steps
    redirected = plan_rename(facts(src=lower_dir, src_move=Move.REDIRECT, new_covered=True))
    assert SetRedirect(Side.SRC) in redirected.steps
    assert MarkOpaque(Side.SRC) not in redirected.steps
    assert redirected.steps[0] == PrepareMove(Side.SRC, Move.REDIRECT)


@given(st.sampled_from([FILE, DIR, Entry(0, F), Entry(0, D, (0,))]),
       st.sampled_from([None, FILE, DIR, Entry(0, D, (0,))]), st.booleans(), st.booleans(),
       st.booleans(), st.booleans())
def test_rename_plans_end_with_one_rename_of_the_upper(
        src: Entry, dst: Entry | None, exchange: bool, old_covered: bool, new_covered: bool,
        new_whiteout: bool) -> None:
    assume(dst is not None or not exchange)
    assume(dst is None or not new_whiteout)  # a whited-out name shows nothing
    plan = plan_rename(facts(src=src, dst=dst, exchange=exchange, old_covered=old_covered,
                             new_covered=new_covered, new_whiteout=new_whiteout,
                             dst_move=Move.COPY_UP if exchange else None))
    renames = [s for s in plan.steps if isinstance(s, Rename)]
    assert len(renames) == 1
    assert plan.steps.index(renames[0]) > max(
        i for i, s in enumerate(plan.steps) if isinstance(s, PrepareMove))
    # a whiteout stays at the old name exactly when a lower layer shows it there
    assert plan.whiteout_at_old == (old_covered and not exchange)


# ---- plans on a model of the upper --------------------------------------------------------

layer = st.dictionaries(st.sampled_from(NAMES), st.sampled_from([D, F, W]), max_size=4)
layers = st.lists(layer, min_size=2, max_size=4)


def after(layers: list[dict[bytes, Kind]], model: UpperModel) -> list[dict[bytes, Kind]]:
    return [model.entries, *layers[1:]]


@given(layers, st.sampled_from(NAMES))
def test_a_deleted_name_never_resolves_and_nothing_else_changes(
        stack_: list[dict[bytes, Kind]], name: bytes) -> None:
    before = merge(stack_)
    assume(name in before)
    covered, _ = covered_and_whiteouts(stack(stack_))
    plan = plan_delete(before[name], name in covered)
    model = apply(UpperModel(dict(stack_[0])), name, before[name].kind, plan.steps)
    merged = merge(after(stack_, model))
    assert name not in merged
    assert merged == {n: e for n, e in before.items() if n != name}
    assert plan.leaves_whiteout == (model.entries.get(name) is W)
    assert model.work is None  # nothing left in the work dir
    # a whiteout is made only where something below needs hiding
    assert plan.leaves_whiteout == (name in covered)


@given(layers, st.sampled_from(NAMES), st.sampled_from([D, F]))
def test_a_created_name_resolves_to_the_upper_alone(
        stack_: list[dict[bytes, Kind]], name: bytes, kind: Kind) -> None:
    before = merge(stack_)
    assume(create_errno(name, before.get(name)) is None)
    _, whiteouts = covered_and_whiteouts(stack(stack_))
    steps = plan_create(kind, name in whiteouts)
    model = apply(UpperModel(dict(stack_[0])), name, kind, steps)
    merged = merge(after(stack_, model))
    entry = merged[name]
    assert (entry.layer, entry.kind) == (0, kind)
    if kind is D:  # a new directory shows nothing of what lower layers had at its name
        assert contributing_layers(entry.dir_layers, lambda i: name in model.opaque) == (0,)
    assert {n: e for n, e in merged.items() if n != name} == {
        n: e for n, e in before.items() if n != name}
    assert model.work is None


@given(layers, st.sampled_from(NAMES), st.sampled_from([D, F]), st.booleans())
def test_a_plan_applied_twice_changes_nothing_more(
        stack_: list[dict[bytes, Kind]], name: bytes, kind: Kind, delete: bool) -> None:
    before = merge(stack_)
    covered, whiteouts = covered_and_whiteouts(stack(stack_))
    if delete:
        assume(name in before)
        kind = before[name].kind
        steps = plan_delete(before[name], name in covered).steps
    else:
        assume(name not in before)
        steps = plan_create(kind, name in whiteouts)
    once = apply(UpperModel(dict(stack_[0])), name, kind, steps)
    twice = apply(once, name, kind, steps)
    assert twice == once


def test_a_directory_over_a_whiteout_is_made_in_the_work_dir() -> None:
    steps = plan_create(D, over_whiteout=True)
    assert steps[0] == Make(Place.WORK)
    assert plan_create(F, over_whiteout=False)[0] == Make(Place.UPPER)


def test_owner_and_set_id_bits_of_a_new_entry() -> None:
    assert new_owner(5, 6, None) == (5, 6, False)
    assert new_owner(5, 6, 9) == (5, 9, True)  # in a set-gid directory: its group
    assert special_bits(stat.S_IFDIR | 0o755, True, True) == stat.S_ISGID
    assert special_bits(stat.S_IFREG | 0o755, False, True) == 0  # files do not inherit it
    assert special_bits(stat.S_IFREG | 0o4755, False, False) == stat.S_ISUID


def test_a_name_with_an_origin_marks_the_directory_it_moves_into_first() -> None:
    steps = plan_rename(facts(src_origin=True)).steps
    assert MarkImpure(Side.SRC) in steps
    assert steps.index(MarkImpure(Side.SRC)) < steps.index(Rename())
    assert MarkImpure(Side.SRC) not in plan_rename(facts(src_origin=True, same_dir=True)).steps
    assert not any(isinstance(s, MarkImpure) for s in plan_rename(facts()).steps)
    exchange = plan_rename(facts(exchange=True, dst=FILE, dst_move=Move.COPY_UP,
                                 dst_origin=True)).steps
    assert MarkImpure(Side.DST) in exchange and MarkImpure(Side.SRC) not in exchange
    assert exchange.index(MarkImpure(Side.DST)) < exchange.index(Rename(RENAME_EXCHANGE))
