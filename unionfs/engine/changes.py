"""Changes to the union: create, remove, rename, link, attributes, xattrs.

Every change lands in the upper in the kernel overlayfs format, and every change that replaces
something is prepared in the work dir and renamed into place, so a crash leaves the old state
or the new one. The merged views of the directories involved are updated in place, never
recomputed, so a directory being filled does not cost a rescan per file.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from unionfs.core import rename as rules
from unionfs.core.create import (
    create_errno,
    kind_of,
    link_errno,
    mknod_errno,
    new_owner,
    plan_create,
    special_bits,
)
from unionfs.core.delete import plan_delete, rmdir_errno, unlink_errno
from unionfs.core.merge import Entry
from unionfs.core.paths import join
from unionfs.core.rename import Move, RenameFacts, RenamePlan, Side
from unionfs.core.whiteout import Kind, escape_xattr
from unionfs.engine.nodes import Node
from unionfs.engine.steps import run_steps
from unionfs.engine.union import CAPABILITY, NewEntry, Union, fail
from unionfs.layers import ondisk
from unionfs.layers.layer import keeping_times
from unionfs.layers.syscalls import proc_path, renameat2

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Caller:
    """Who asks: new entries belong to them."""

    uid: int
    gid: int


Make = Callable[[int, bytes], None]


class Changes:
    """The write side of a :class:`Union`."""

    def __init__(self, union: Union) -> None:
        self.u = union
        self._ids = (os.geteuid(), os.getegid())  # who owns what the server creates

    # ---- creating ------------------------------------------------------------------------

    def create(self, parent: Node, name: bytes, mode: int, flags: int,
               caller: Caller) -> tuple[int, Node, os.stat_result]:
        """Create and open a regular file; returns (fd, node, stat)."""
        fds: list[int] = []

        def make(dir_fd: int, entry_name: bytes) -> None:
            open_flags = (flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC) & ~(
                os.O_TRUNC
            )
            fds.append(os.open(entry_name, open_flags, stat.S_IMODE(mode), dir_fd=dir_fd))

        try:
            node, st = self._make_entry(parent, name, mode, caller, make,
                                        made=lambda: os.fstat(fds[0]))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds[0], node, st

    def mkdir(self, parent: Node, name: bytes, mode: int,
              caller: Caller) -> tuple[Node, os.stat_result]:
        def make(dir_fd: int, entry_name: bytes) -> None:
            os.mkdir(entry_name, stat.S_IMODE(mode), dir_fd=dir_fd)

        return self._make_entry(parent, name, stat.S_IFDIR | mode, caller, make)

    def mknod(self, parent: Node, name: bytes, mode: int, rdev: int,
              caller: Caller) -> tuple[Node, os.stat_result]:
        _refuse(mknod_errno(mode, rdev), name)

        def make(dir_fd: int, entry_name: bytes) -> None:
            os.mknod(entry_name, mode, rdev, dir_fd=dir_fd)

        return self._make_entry(parent, name, mode, caller, make)

    def symlink(self, parent: Node, name: bytes, target: bytes,
                caller: Caller) -> tuple[Node, os.stat_result]:
        def make(dir_fd: int, entry_name: bytes) -> None:
            os.symlink(target, entry_name, dir_fd=dir_fd)

        return self._make_entry(parent, name, stat.S_IFLNK | 0o777, caller, make)

    def link(self, node: Node, parent: Node, name: bytes) -> tuple[Node, os.stat_result]:
        """A hard link to ``node`` at ``parent/name`` (copying ``node`` up first)."""
        u = self.u
        _refuse(link_errno(node.is_dir))
        self._check_new_name(parent, name)
        u.copy_up(node)
        u.copy_up(parent)  # the new name's directory may still be only in a lower layer
        src_parent = node.parent
        assert src_parent is not None
        if u.numbered_by_origin(src_parent, u.entry(node)):
            u.mark_impure(parent)
        upper = u.layers[0]
        src_fd = upper.dir_fd(src_parent.path())
        src_name = node.name

        def make(dir_fd: int, entry_name: bytes) -> None:
            os.link(src_name, entry_name, src_dir_fd=src_fd, dst_dir_fd=dir_fd,
                    follow_symlinks=False)

        pfd = self._place(parent, parent.path(), name, make, Kind.OTHER, owner=None)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        u.table.adopt(node, parent, name)
        return node, st

    def _check_new_name(self, parent: Node, name: bytes) -> None:
        _refuse(create_errno(name, self.u.merged(parent).get(name)), name)

    def _make_entry(self, parent: Node, name: bytes, mode: int, caller: Caller,
                    make: Make, made: Callable[[], os.stat_result] | None = None,
                    ) -> tuple[Node, os.stat_result]:
        """Make ``parent/name`` with ``make``; ``made``: the new entry's stat from an fd
        the make opened (cheaper than a stat of the name)."""
        self._check_new_name(parent, name)
        u = self.u
        u.copy_up(parent)
        path = parent.path()
        owner = self._owner(parent, path, caller)
        kind = kind_of(mode)
        pfd = self._place(parent, path, name, make, kind, owner, mode)
        st = made() if made is not None else os.stat(name, dir_fd=pfd, follow_symlinks=False)
        node = u.new_child(parent, name, st)
        node.absent_xattrs = {CAPABILITY}  # only a setxattr gives a file capabilities
        if kind is Kind.DIR:  # its view is known: empty, in the upper only
            node.merged, node.layers, node.covered, node.whiteouts = {}, (0,), set(), set()
            node.impure = False
        return node, st

    def _owner(self, parent: Node, path: bytes, caller: Caller) -> tuple[int, int, bool]:
        """uid, gid and set-gid inheritance for a new entry in ``parent`` (at ``path``)."""
        gid = parent.sgid_gid
        if gid is None:
            pst = self.u.layers[0].stat_path(path)
            gid = parent.sgid_gid = pst.st_gid if pst.st_mode & stat.S_ISGID else -1
        return new_owner(caller.uid, caller.gid, gid if gid >= 0 else None)

    def _place(self, parent: Node, path: bytes, name: bytes, make: Make, kind: Kind,
               owner: tuple[int, int, bool] | None, mode: int = 0) -> int:
        """Create an entry in the upper: in place, or over a whiteout via the work dir.

        ``owner`` None: the entry is a new link to an existing file, whose owner and
        xattrs stay as they are. Returns the upper fd of ``parent`` (at ``path``).
        """
        u = self.u
        copier = u.require_upper()
        pfd = u.layers[0].dir_fd(path)
        over_whiteout = name in parent.whiteouts
        steps = plan_create(kind, over_whiteout, new_link=owner is None)

        def finish(dir_fd: int, entry_name: bytes) -> None:
            self._finish(dir_fd, entry_name, owner, mode, kind)

        run_steps(steps, copier.work, pfd, name, make=make, finish=finish,
                  set_opaque=self._set_opaque)
        if over_whiteout:
            parent.whiteouts.discard(name)
        dir_layers = (0,) if kind is Kind.DIR else ()
        # A new link to a copied-up file has its origin xattr; a new file has none.
        entry_type = Entry if owner is None else NewEntry
        u.merged(parent)[name] = entry_type(0, kind, dir_layers)
        return pfd

    def _finish(self, dir_fd: int, name: bytes, owner: tuple[int, int, bool] | None,
                mode: int, kind: Kind) -> None:
        if owner is None:
            return
        uid, gid, inherit_sgid = owner
        copier = self.u.require_upper()
        if (uid, gid) != self._ids:
            copier.chown(dir_fd, name, uid, gid)
        special = special_bits(mode, kind is Kind.DIR, inherit_sgid)
        if special and not stat.S_ISLNK(mode):
            os.chmod(name, stat.S_IMODE(mode) | special, dir_fd=dir_fd)

    def _set_opaque(self, path: bytes) -> None:
        ns = self.u.ns
        assert ns is not None
        ondisk.mark_opaque(path, ns)

    # ---- removing ------------------------------------------------------------------------

    def unlink(self, parent: Node, name: bytes) -> None:
        self.u.require_upper()
        entry = self.u.merged(parent).get(name)
        _refuse(unlink_errno(entry), name)
        assert entry is not None
        self._remove(parent, name, entry)

    def rmdir(self, parent: Node, name: bytes) -> None:
        u = self.u
        u.require_upper()
        entry = u.merged(parent).get(name)
        child = u.view_of(parent, name) if entry is not None and entry.is_dir else None
        _refuse(rmdir_errno(entry, child is None or not u.merged(child)), name)
        assert entry is not None and child is not None
        self._remove(parent, name, entry)
        self.u.layers[0].forget_dirs(join(parent.path(), name))
        child.merged = None
        child.layers = None
        child.sgid_gid = None

    def _remove(self, parent: Node, name: bytes, entry: Entry) -> None:
        """Take ``name`` out of the union: delete it from the upper, whiteout what is below."""
        u = self.u
        copier = u.require_upper()
        child = parent.children.get(name)
        last_stat = u.stat(child) if child is not None else None
        u.copy_up(parent)
        pfd = u.layers[0].dir_fd(parent.path())
        plan = plan_delete(entry, name in parent.covered)
        if child is not None and entry.layer == 0:
            _keep_orphan(child, last_stat, pfd, name)
        run_steps(plan.steps, copier.work, pfd, name)
        if plan.leaves_whiteout:
            parent.whiteouts.add(name)
        del u.merged(parent)[name]
        if child is not None:
            self._forget_name(child, parent, name, last_stat)

    def _forget_name(self, node: Node, parent: Node, name: bytes,
                     last_stat: os.stat_result | None) -> None:
        """``parent/name`` is gone. A file with other names (hard links: one node) stays
        reachable under one the kernel knows; otherwise it is detached (alive while open)."""
        if parent.children.get(name) is node:
            del parent.children[name]
        alias = None
        if not node.is_dir and last_stat is not None and last_stat.st_nlink > 1:
            alias = self._alias(node)
        if alias is None:
            node.detach(last_stat)
        else:
            node.parent, node.name = alias

    def _alias(self, node: Node) -> tuple[Node, bytes] | None:
        """Another name of ``node`` that the kernel knows and the union still has."""
        for dnode in list(self.u.table.nodes.values()):
            for child_name, child in dnode.children.items():
                if child is node and dnode.merged is not None and child_name in dnode.merged:
                    return dnode, child_name
        return None

    # ---- rename --------------------------------------------------------------------------

    def rename(self, old_parent: Node, old: bytes, new_parent: Node, new: bytes,
               flags: int) -> None:
        """Rename as :mod:`unionfs.core.rename` plans it (the rules are there)."""
        u = self.u
        if not self.check_rename(old_parent, old, new_parent, new, flags):
            return
        src = u.merged(old_parent)[old]
        dst = u.merged(new_parent).get(new)
        exchange = bool(flags & rules.RENAME_EXCHANGE)
        src_node = u.view_of(old_parent, old)
        dst_node = u.view_of(new_parent, new) if dst is not None else None
        facts = RenameFacts(
            src, dst, exchange, self._how_to_move(src_node, src),
            self._how_to_move(dst_node, dst) if exchange and dst_node is not None and dst
            is not None else None,
            old in old_parent.covered, new in new_parent.covered, new in new_parent.whiteouts,
            same_dir=old_parent is new_parent,
            src_origin=u.numbered_by_origin(old_parent, src),
            dst_origin=dst is not None and u.numbered_by_origin(new_parent, dst))
        plan = rules.plan_rename(facts)
        _Renaming(self, plan, (old_parent, old, src_node), (new_parent, new, dst_node)).run()
        self._update_views(old_parent, old, new_parent, new, src_node, dst_node, exchange)

    def check_rename(self, old_parent: Node, old: bytes, new_parent: Node, new: bytes,
                     flags: int) -> bool:
        """The errors a rename fails with before it changes anything; False: nothing to do."""
        u = self.u
        u.require_upper()
        dst = u.merged(new_parent).get(new)
        src = u.merged(old_parent).get(old)
        _refuse(rules.rename_errno(src, dst, flags, new), new)
        if old_parent is new_parent and old == new:
            return False
        if rules.must_be_empty(dst, flags) and u.merged(u.view_of(new_parent, new)):
            raise fail(errno.ENOTEMPTY, new)
        return True

    def _how_to_move(self, node: Node, entry: Entry) -> Move:
        layers: tuple[int, ...] = ()
        if entry.is_dir:
            self.u.merged(node)
            layers = node.layers or ()
        return rules.how_to_move(entry.is_dir, layers, self.u.make_redirects)

    def set_redirect(self, node: Node, old_parent: Node, old: bytes,
                     new_parent: Node) -> None:
        """Before ``node`` (a directory in the upper at ``old_parent/old``) moves to
        ``new_parent``: record where its lower content is (:func:`rules.redirect_value`)."""
        u = self.u
        upper = u.layers[0]
        path = node.path()
        current = ondisk.redirect(functools.partial(upper.getxattr, path))
        lower_paths = {index: u.dir_path(node, index) for index in range(1, len(u.layers))}
        value = rules.redirect_value(current, old_parent is new_parent, old, lower_paths[1])
        if value is not None:
            ondisk.set_redirect(upper.xattr_path(path), value)
        node.lower_paths = lower_paths
        u.has_redirects = True

    def materialize(self, node: Node) -> None:
        """Copy a directory and everything below it into the upper, and make it opaque
        (``Move.COPY_TREE`` of :mod:`unionfs.core.rename`)."""
        u = self.u
        u.copy_up(node)
        merged = u.merged(node)
        if rules.how_to_move(True, node.layers or (), False) is Move.NONE:
            return
        for name in rules.tree_copy_children(merged):
            child = u.view_of(node, name)
            if merged[name].is_dir:
                self.materialize(child)
            else:
                u.copy_up(child)
        self.set_opaque_dir(node)
        self._drop_whiteouts(node)
        node.layers = (0,)
        u.stale.add(node.id)
        node.covered = set()
        entry_ = u.entry(node)
        entry_.dir_layers = (0,)

    def set_opaque_dir(self, node: Node) -> None:
        self._set_opaque(self.u.layers[0].xattr_path(node.path()))

    def _drop_whiteouts(self, node: Node) -> None:
        """Whiteouts in an opaque directory hide nothing: remove them (the kernel lists them)."""
        dir_fd = self.u.layers[0].dir_fd(node.path())
        if not node.whiteouts:
            return
        with keeping_times(dir_fd):  # housekeeping, not a change (mv keeps them too)
            for name in node.whiteouts:
                os.unlink(name, dir_fd=dir_fd)
        node.whiteouts = set()

    def _update_views(self, old_parent: Node, old: bytes, new_parent: Node, new: bytes,
                      src_node: Node, dst_node: Node | None, exchange: bool) -> None:
        u = self.u
        old_view = u.merged(old_parent)
        new_view = u.merged(new_parent)
        src_entry = old_view.pop(old)
        dst_entry = new_view.pop(new, None)
        new_view[new] = _in_upper(src_entry)
        if dst_node is not None and not exchange:
            # Replaced: as for unlink, a file with other names (hard links) lives on there.
            self._forget_name(dst_node, new_parent, new, dst_node.last_stat)
        elif dst_node is not None:
            _unbind(new_parent, new, dst_node)
        # Only the moved name: a hard-linked node may be known by (and named after) another.
        _unbind(old_parent, old, src_node)
        self._move_node(src_node, new_parent, new)
        if exchange and dst_entry is not None:
            old_view[old] = _in_upper(dst_entry)
            if dst_node is not None:
                self._move_node(dst_node, old_parent, old)
        new_parent.whiteouts.discard(new)

    def _move_node(self, node: Node, parent: Node, name: bytes) -> None:
        if node.lookups or node.handles:
            self.u.table.adopt(node, parent, name)
        else:
            node.parent, node.name = parent, name

    # ---- attributes and xattrs -----------------------------------------------------------

    def setattr(self, node: Node, *, size: int | None = None, mode: int | None = None,
                uid: int | None = None, gid: int | None = None,
                times: tuple[int | None, int | None] | None = None,
                fd: int | None = None) -> os.stat_result:
        """Change attributes (copying up first); returns the new stat."""
        u = self.u
        node.sgid_gid = None  # a directory's set-gid bit or group may change
        if node.parent is None and node.orphan_fd is not None and fd is None:
            return _setattr_orphan(node.orphan_fd, size, mode, uid, gid, times)
        if node.parent is None and node is not u.root and fd is None:
            # Unlinked, and not open in the upper (closed, or open only in a lower layer, which
            # must never change): the kernel flushing its times is a no-op, the rest ENOENT.
            if size is None and mode is None and uid is None and gid is None:
                return u.stat(node)
            raise fail(errno.ENOENT)
        if fd is None:
            u.copy_up(node)
        upper = u.layers[0]
        name = node.name
        if fd is not None:  # every change goes through the fd (it may run in a worker thread)
            parent_fd = -1
        elif node is u.root:
            parent_fd, name = upper.root_fd, b"."
        else:
            parent_fd = upper.dir_fd(node.parent.path()) if node.parent is not None else -1
        if uid is not None or gid is not None:
            owner = (-1 if uid is None else uid, -1 if gid is None else gid)
            if fd is not None:
                os.fchown(fd, *owner)
            else:
                os.chown(name, *owner, dir_fd=parent_fd, follow_symlinks=False)
        if mode is not None:
            if fd is not None:
                os.fchmod(fd, stat.S_IMODE(mode))
            else:
                os.chmod(name, stat.S_IMODE(mode), dir_fd=parent_fd)
        if size is not None:
            before = os.fstat(fd) if fd is not None else os.stat(
                name, dir_fd=parent_fd, follow_symlinks=False)
            self._truncate(fd, parent_fd, name, size)
            if times is None:
                # Under the writeback cache the kernel owns mtime: it sends one whenever a
                # truncate changes the size, and keeps its own otherwise. Keep the file's, or
                # the upper would disagree with what the mount showed (seen after a remount).
                times = (before.st_atime_ns, before.st_mtime_ns)
        if times is not None:
            self._utime(fd, parent_fd, name, times)
        if fd is not None:
            return os.fstat(fd)
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)  # now in the upper

    def _truncate(self, fd: int | None, parent_fd: int, name: bytes, size: int) -> None:
        if fd is not None:
            os.ftruncate(fd, size)
            return
        # truncate(2), not ftruncate(2): only ftruncate always sets mtime, and a truncate to
        # the same size must leave it alone (the kernel keeps its cached mtime either way).
        tfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            os.truncate(proc_path(tfd), size)
        finally:
            os.close(tfd)

    def _utime(self, fd: int | None, parent_fd: int, name: bytes,
               times: tuple[int | None, int | None]) -> None:
        atime, mtime = times
        if atime is None or mtime is None:
            st = os.fstat(fd) if fd is not None else os.stat(
                name, dir_fd=parent_fd, follow_symlinks=False)
            atime = st.st_atime_ns if atime is None else atime
            mtime = st.st_mtime_ns if mtime is None else mtime
        if fd is not None:
            os.utime(fd, ns=(atime, mtime))
        else:
            os.utime(name, ns=(atime, mtime), dir_fd=parent_fd, follow_symlinks=False)

    def setxattr(self, node: Node, name: bytes, value: bytes, fd: int | None = None) -> None:
        """Set an xattr (copying up first); ``fd``: the upper fd of an unlinked node."""
        if fd is None:
            self.u.copy_up(node)  # before the flags below: a copy-up may set no_xattrs
        node.no_xattrs = False
        if node.absent_xattrs:
            node.absent_xattrs.discard(name)
        name = escape_xattr(name)
        if fd is not None:
            os.setxattr(fd, name, value)
            return
        os.setxattr(self.u.layers[0].xattr_path(node.path()), name, value,
                    follow_symlinks=False)

    def removexattr(self, node: Node, name: bytes, fd: int | None = None) -> None:
        """Remove an xattr (copying up first); ``fd``: the upper fd of an unlinked node."""
        if self.u.getxattr(node, name) is None:
            raise fail(errno.ENODATA, name)
        name = escape_xattr(name)
        if fd is not None:
            os.removexattr(fd, name)
            return
        self.u.copy_up(node)
        os.removexattr(self.u.layers[0].xattr_path(node.path()), name, follow_symlinks=False)


class _Renaming:
    """Runs the steps of a :class:`RenamePlan` on the disk: ``old`` and ``new`` are
    (parent, name, node) of the source and of the target (node None: no target)."""

    def __init__(self, changes: Changes, plan: RenamePlan, old: tuple[Node, bytes, Node],
                 new: tuple[Node, bytes, Node | None]) -> None:
        self.changes, self.u, self.plan = changes, changes.u, plan
        self.old_parent, self.old, self.src_node = old
        self.new_parent, self.new, self.dst_node = new

    def run(self) -> None:
        for step in self.plan.steps:
            self._step(step)
        if self.plan.whiteout_at_old:
            self.old_parent.whiteouts.add(self.old)

    def _node(self, side: Side) -> Node:
        node = self.src_node if side is Side.SRC else self.dst_node
        assert node is not None
        return node

    def _step(self, step: rules.RenameStep) -> None:
        u, upper = self.u, self.u.layers[0]
        if isinstance(step, rules.PrepareMove):
            self._prepare(self._node(step.side), step.move)
        elif isinstance(step, rules.KeepTargetStat):
            target = self._node(Side.DST)
            target.last_stat = u.stat(target)
        elif isinstance(step, rules.CopyUpNewParent):
            u.copy_up(self.new_parent)
        elif isinstance(step, rules.EmptyTargetDir):
            self._empty_target_dir()
        elif isinstance(step, rules.KeepTargetInode):
            target = self._node(Side.DST)
            _keep_orphan(target, target.last_stat, upper.dir_fd(self.new_parent.path()),
                         self.new)
        elif isinstance(step, rules.DropTargetWhiteout):
            os.unlink(self.new, dir_fd=upper.dir_fd(self.new_parent.path()))
            self.new_parent.whiteouts.discard(self.new)
        elif isinstance(step, rules.SetRedirect):
            if step.side is Side.SRC:
                self.changes.set_redirect(self.src_node, self.old_parent, self.old,
                                          self.new_parent)
            else:
                self.changes.set_redirect(self._node(Side.DST), self.new_parent, self.new,
                                          self.old_parent)
        elif isinstance(step, rules.MarkOpaque):
            self.changes.set_opaque_dir(self._node(step.side))
        elif isinstance(step, rules.MarkImpure):
            u.mark_impure(self.new_parent if step.side is Side.SRC else self.old_parent)
        elif isinstance(step, rules.Rename):
            renameat2(upper.dir_fd(self.old_parent.path()), self.old,
                      upper.dir_fd(self.new_parent.path()), self.new, step.flags)
        elif isinstance(step, rules.RemoveOld):
            os.unlink(self.old, dir_fd=upper.dir_fd(self.old_parent.path()))
        elif isinstance(step, rules.ForgetDirFds):
            # only directories have cached fds (forgetting scans them all)
            upper.forget_dirs(join(self.old_parent.path(), self.old))
            upper.forget_dirs(join(self.new_parent.path(), self.new))

    def _prepare(self, node: Node, move: Move) -> None:
        if move is Move.COPY_UP or move is Move.REDIRECT:
            self.u.copy_up(node)
        elif move is Move.COPY_TREE:
            self.changes.materialize(node)

    def _empty_target_dir(self) -> None:
        # dir_fd() gives O_PATH fds, which cannot be listed: open one that can.
        upper = self.u.layers[0]
        dfd = upper.open(join(self.new_parent.path(), self.new), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for leftover in os.listdir(dfd):
                os.unlink(leftover, dir_fd=dfd)
        finally:
            os.close(dfd)


def _keep_orphan(node: Node, st: os.stat_result | None, dir_fd: int, name: bytes) -> None:
    """Before an upper entry the kernel still holds loses its last name: keep an O_PATH fd
    of it. What the kernel holds (an open directory or FIFO, which it opens without asking
    us; a file it looked up and is about to open) keeps its attributes, can still be opened
    and changed, as on the kernel's overlayfs; and the upper's inode number stays taken, so
    no new file gets the node's number while the kernel has the old inode (a reused number
    makes the kernel declare the old inode bad: EIO for whoever uses it)."""
    if st is None or (not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1):
        return
    if node.orphan_fd is None and (node.lookups > 0 or node.handles):
        try:
            node.orphan_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            log.warning("out of fds: removed %r is not kept for the kernel", name)


def _setattr_orphan(fd: int, size: int | None, mode: int | None, uid: int | None,
                    gid: int | None, times: tuple[int | None, int | None] | None,
                    ) -> os.stat_result:
    """setattr of a removed upper directory or special file, through its kept O_PATH fd
    (the /proc path reaches the inode itself; O_PATH fds take no fchmod)."""
    path = proc_path(fd)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.chmod(path, stat.S_IMODE(mode))
    if size is not None:
        os.truncate(path, size)
    if times is not None:
        st = os.fstat(fd)
        atime = st.st_atime_ns if times[0] is None else times[0]
        mtime = st.st_mtime_ns if times[1] is None else times[1]
        os.utime(path, ns=(atime, mtime))
    return os.fstat(fd)


def _unbind(parent: Node, name: bytes, node: Node) -> None:
    """``parent/name`` no longer leads to ``node`` (its other names, if any, still do)."""
    if parent.children.get(name) is node:
        del parent.children[name]


def _refuse(code: int | None, what: object = None) -> None:
    """Fail with the errno a core rule gave (None: allowed)."""
    if code is not None:
        raise fail(code, what)


def _in_upper(entry: Entry) -> Entry:
    """The entry after a move: wholly in the upper (a new entry stays one)."""
    return type(entry)(0, entry.kind, (0,) if entry.is_dir else ())
