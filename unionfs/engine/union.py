"""The union of a stack of layers: lookup, merged views, attributes, and copy-up.

Knows nothing of FUSE: failures are ``OSError`` with the errno the caller should see. Layer 0 is
the upper when the union is writable; the merged view of a directory is computed once, from one
``scandir`` per contributing layer, and then kept up to date by every change made through the
union (the layers never change behind its back: that is the contract of a mount).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from unionfs.core.linkcount import dir_nlink
from unionfs.core.merge import Entry, LayerListing, covered_and_whiteouts, merge
from unionfs.core.names import NAME_MAX
from unionfs.core.paths import join
from unionfs.core.whiteout import (
    XattrNamespace,
    escape_xattr,
    is_private_xattr,
    redirect_target,
    unescape_xattr,
)
from unionfs.engine.aliases import link_aliases
from unionfs.engine.counters import EngineCounters
from unionfs.engine.nodes import ROOT_ID, InodeNumbers, Node, NodeTable
from unionfs.layers import ondisk
from unionfs.layers.copyup import CopyUp, WorkDir
from unionfs.layers.layer import Layer
from unionfs.layers.syscalls import syncfs
from unionfs.layers.upgrade import mark_impure_dirs

log = logging.getLogger(__name__)

ABSENT_XATTRS_KEPT = 8  # per node: enough for the names the kernel itself asks for
# File capabilities: the kernel asks for them before every write and chown of a file.
CAPABILITY = b"security.capability"
UPGRADE_SECONDS = 10.0  # the walk of an upper without a format record, at most (mounts wait)


class NewEntry(Entry):
    """An entry this mount made in the upper (not a copy-up): it has no origin xattr."""

    __slots__ = ()


def fail(code: int, what: object = None) -> OSError:
    """An OSError carrying ``code`` for the caller."""
    return OSError(code, os.strerror(code), what)


@dataclass
class StackConfig:
    """The directories of a union and how to treat them."""

    lowers: list[str]
    upper: str | None = None
    workdir: str | None = None
    xattr_ns: XattrNamespace | None = None  # for writing markers; needed with an upper
    sync: bool = True  # fsync copied-up data before it becomes visible (off: -o volatile)
    # Rename lower directories in O(1) with trusted.overlay.redirect, and follow redirects
    # (trusted mode only; off: -o redirect_dir=off, rename copies the tree up).
    redirect_dir: bool = True


class Union:
    """A stack of layers seen as one tree."""

    def __init__(self, config: StackConfig) -> None:
        self.layers: list[Layer] = []
        if config.upper is not None:
            self.layers.append(Layer(config.upper, 0, writable=True))
        for path in config.lowers:
            self.layers.append(Layer(path, len(self.layers)))
        self.writable = config.upper is not None
        self.ns = config.xattr_ns
        trusted = config.xattr_ns is None or not config.xattr_ns.is_user
        self.follow_redirects = trusted  # the kernel follows them in trusted mode only
        self.make_redirects = trusted and config.redirect_dir and config.upper is not None
        self.has_redirects = False  # set once one is seen or made: paths may then differ
        self.work: WorkDir | None = None
        self.copier: CopyUp | None = None
        if self.writable:
            assert config.workdir is not None and config.xattr_ns is not None
            self.work = WorkDir(config.workdir)
            self.copier = CopyUp(self.layers[0], self.work, config.xattr_ns, sync=config.sync)
        self.numbers = InodeNumbers()
        for layer in self.layers:  # tags in stack order, so numbers repeat across mounts
            self.numbers.tags.setdefault(layer.dev, len(self.numbers.tags))
        root = Node(ROOT_ID, None, b"", True)
        root.lookups = 1
        # Nodes whose attributes changed without a request about them (a directory gains or
        # loses layers, so its nlink changes): the adapter tells the kernel to drop them.
        self.stale: set[int] = set()
        self.table = NodeTable(root)
        self.root = root
        self.counters = EngineCounters()  # for `unionfs watch` (read by the FUSE adapter)
        # Directories read ahead of their lookup, by (parent node id, name): entries of
        # unionfs.engine.ahead, dropped when the directory's view is built by any path.
        self.read_ahead: dict[tuple[int, bytes], object] = {}
        # True: every upper directory holding an entry with an origin is marked impure
        # (layers/ondisk.py), so an unmarked one needs no origin read per entry.
        self.impure_kept = self._keep_impure_markers() if self.writable else False

    # ---- impure markers -------------------------------------------------------------------

    def _keep_impure_markers(self) -> bool:
        """Check the upper's format record; without one (an upper from before the markers,
        or written by an older unionfs), walk the upper once and mark it. False: the markers
        cannot be trusted for this mount (every upper entry's origin is read)."""
        upper, work, ns = self.layers[0], self.work, self.ns
        assert work is not None and ns is not None
        record = ondisk.format_record(os.fstat(upper.root_fd), ns)
        try:
            if ondisk.read_format_record(work.fd) == record:
                return True
            start = time.monotonic()
            marked = mark_impure_dirs(upper, ns, UPGRADE_SECONDS)
            if marked:  # the marks are on disk before the record that vouches for them
                fd = upper.open(b"", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    syncfs(fd)
                finally:
                    os.close(fd)
            ondisk.write_format_record(work.fd, work.new_name(), record)
        except OSError as exc:
            log.warning("upper %s: impure markers not kept (%s); listings read the origin "
                        "of every upper entry", upper.path, exc)
            return False
        log.info("upper %s: marked %d directories impure (%.2f s)", upper.path, marked,
                 time.monotonic() - start)
        return True

    def may_hold_origins(self, node: Node) -> bool:
        """True when upper directory ``node`` may hold entries with an origin xattr."""
        return not self.impure_kept or node.impure is not False

    def numbered_by_origin(self, parent: Node, entry: Entry) -> bool:
        """True when ``parent``'s ``entry`` has (or gets, being copied up) an origin: it is
        in a lower layer, or in the upper, not made by this mount, where one may be."""
        if entry.layer != 0:
            return True
        return type(entry) is not NewEntry and self.may_hold_origins(parent)

    def mark_impure(self, node: Node) -> None:
        """Before an entry with an origin appears in upper directory ``node`` (a copy-up, a
        rename or link from another directory): mark the directory, once."""
        if not self.impure_kept or node.impure:
            return
        ns, work = self.ns, self.work
        assert ns is not None and work is not None
        try:
            ondisk.mark_impure(self.layers[0].xattr_path(node.path()), ns)
        except OSError as exc:
            if exc.errno != errno.ENOTSUP:  # no xattrs at all: no origins either
                # Cannot mark: trust no marker for this mount, and walk at the next.
                log.warning("cannot mark %r impure (%s); listings read every origin",
                            node.path(), exc)
                self.impure_kept = False
                ondisk.drop_format_record(work.fd)
                return
        node.impure = True

    def close(self) -> None:
        for layer in self.layers:
            layer.close()
        if self.work is not None:
            self.work.close()

    # ---- the merged view of a directory -------------------------------------------------

    def merged(self, node: Node) -> dict[bytes, Entry]:
        """The merged entries of directory ``node``, computed on first use."""
        merged = node.merged
        if merged is None:
            if node.parent is None and node is not self.root:
                return {}  # removed while open: an empty directory, as on any filesystem
            merged = self._build_view(node)
        return merged

    def _candidate_layers(self, node: Node) -> tuple[int, ...]:
        if node.parent is None:
            return tuple(range(len(self.layers)))
        entry = self.entry(node)
        return entry.dir_layers

    def _build_view(self, node: Node) -> dict[bytes, Entry]:
        listings, lower_paths = self.read_listings(node, self._candidate_layers(node))
        return self.install_view(node, listings, lower_paths)

    def read_listings(self, node: Node, candidates: tuple[int, ...]
                      ) -> tuple[list[tuple[int, LayerListing]], dict[int, bytes]]:
        """The listings of directory ``node`` in the ``candidates`` layers, down to the first
        opaque one, following redirects; and the layers' paths that a redirect chose. Only
        reads the layers while no redirect is known (then a worker thread may call it)."""
        listings: list[tuple[int, LayerListing]] = []
        layers = list(candidates)
        redirect: tuple[bytes, int] | None = None  # (value, layer it was found in)
        lower_paths: dict[int, bytes] = {}
        pos = 0
        while pos < len(layers):
            index = layers[pos]
            pos += 1
            path = self._candidate_path(node, index, redirect)
            if redirect is not None and path is not None:
                lower_paths[index] = path
            if path is None:
                continue
            impure = self.ns if index == 0 and self.writable else None
            try:
                listing = self.layers[index].listing(path, redirects=self.follow_redirects,
                                                     impure=impure)
            except (FileNotFoundError, NotADirectoryError):
                continue
            listings.append((index, listing))
            if listing.opaque:
                break
            if listing.redirect is not None and node.parent is not None:
                # Below this layer the content is where the redirect says, in any layer.
                redirect = (listing.redirect, index)
                self.has_redirects = True
                layers[pos:] = range(index + 1, len(self.layers))
        return listings, lower_paths

    def install_view(self, node: Node, listings: list[tuple[int, LayerListing]],
                     lower_paths: dict[int, bytes]) -> dict[bytes, Entry]:
        """Make ``listings`` (from :meth:`read_listings`) the merged view of ``node``."""
        if node.parent is not None and self.read_ahead:
            self.read_ahead.pop((node.parent.id, node.name), None)
        node.lower_paths = lower_paths or None
        node.layers = tuple(index for index, _ in listings)
        node.impure = next((listing.impure for index, listing in listings if index == 0), None)
        self.counters.views_built += 1
        node.merged = merge(listings)
        node.covered, node.whiteouts = covered_and_whiteouts(listings)
        return node.merged

    def _candidate_path(self, node: Node, index: int,
                        redirect: tuple[bytes, int] | None) -> bytes | None:
        """``node``'s path in layer ``index`` while its view is built (None: nowhere)."""
        parent = node.parent
        if parent is None:
            return node.path()
        if redirect is None:
            return self.dir_path(node, index, built=False)
        return redirect_target(redirect[0], self.dir_path(parent, index))

    def dir_path(self, node: Node, index: int, *, built: bool = True) -> bytes:
        """Where directory ``node``'s content is in layer ``index``: its path in the union,
        unless a redirect (of it or of a directory above it) sends that layer elsewhere."""
        if not self.has_redirects or index == 0:
            return node.path()
        parent = node.parent
        if parent is None:
            return node.path()
        if built and node.merged is None:
            self._build_view(node)  # reads the node's own redirect, if any
        paths = node.lower_paths
        if paths is not None and index in paths:
            return paths[index]
        return join(self.dir_path(parent, index), node.name)

    def path_in(self, node: Node, index: int) -> bytes:
        """Where ``node`` (a file or a directory) is in layer ``index``."""
        if node.is_dir:
            return self.dir_path(node, index)
        parent = node.parent
        if parent is None or not self.has_redirects:
            return node.path()
        return join(self.dir_path(parent, index), node.name)

    def entry(self, node: Node) -> Entry:
        """``node``'s entry in its parent's merged view; ENOENT for an unlinked node."""
        parent = node.parent
        if parent is None:
            raise fail(errno.ENOENT)
        entry = self.merged(parent).get(node.name)
        if entry is None:
            raise fail(errno.ENOENT)
        return entry

    def top_layer(self, node: Node) -> Layer:
        """The layer that holds ``node``'s data and metadata."""
        if node.parent is None:
            if node is self.root:
                return self.layers[self.root_layers()[0]]
            raise fail(errno.ENOENT)
        return self.layers[self.entry(node).layer]

    def root_layers(self) -> tuple[int, ...]:
        if self.root.layers is None:
            self._build_view(self.root)
        assert self.root.layers is not None
        return self.root.layers

    # ---- lookup and attributes ----------------------------------------------------------

    def lookup(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result] | None:
        """The node and stat of ``parent/name``, or None; does not count a kernel lookup."""
        if len(name) > NAME_MAX:
            raise fail(errno.ENAMETOOLONG, name)
        entry = self.merged(parent).get(name)
        if entry is None:
            return None
        return self._child(parent, name, entry)

    def _child(self, parent: Node, name: bytes, entry: Entry) -> tuple[Node, os.stat_result]:
        layer = self.layers[entry.layer]
        st = layer.lstat(self.dir_path(parent, entry.layer), name)
        node = self._known_child(parent, name)
        if node is not None and (node.parent is parent or self._same_file(node, st)):
            return node, st
        if type(entry) is NewEntry:
            node_id = self.numbers.of(st)
        else:
            node_id = self._number(layer, parent, name, st)
        return self._adopt(parent, name, node_id, st), st

    def new_child(self, parent: Node, name: bytes, st: os.stat_result) -> Node:
        """The node of ``parent/name``, just created in the upper with stat ``st``.

        Like :meth:`lookup`, without reading an origin xattr: a new file has none.
        """
        node = self._known_child(parent, name)
        if node is not None and node.parent is parent:
            return node
        return self._adopt(parent, name, self.numbers.of(st), st)

    def _same_file(self, node: Node, st: os.stat_result) -> bool:
        """``node``, known under another name now (a hard link made through the union took
        it there), is the file ``st`` describes. Its number stays: where no origin could be
        recorded at copy-up (a symlink takes no ``user.`` xattr), a fresh number would make
        the kernel hold two inodes for one file, and a link count changed through one name
        would stay stale under the other."""
        if node.is_dir or node.parent is None:
            return False
        try:
            known = self.stat(node)
        except OSError:
            return False
        return (known.st_dev, known.st_ino) == (st.st_dev, st.st_ino)

    def _known_child(self, parent: Node, name: bytes) -> Node | None:
        """The node the kernel holds as ``parent/name``, if it still holds it. A node with
        several names (hard links) leaves the table under one of them only, so another name
        may still point at a forgotten node: handing that one out again gives ESTALE."""
        node = parent.children.get(name)
        if node is not None and self.table.nodes.get(node.id) is not node:
            del parent.children[name]
            return None
        return node

    def _adopt(self, parent: Node, name: bytes, node_id: int, st: os.stat_result) -> Node:
        node = self.table.get(node_id)
        if node is None:
            node = Node(node_id, parent, name, stat.S_ISDIR(st.st_mode))
        elif node.parent is None:
            node.generation += 1  # a number reused for another file: the kernel must know
            node.release_orphan()
            node.is_dir = stat.S_ISDIR(st.st_mode)
            node.sgid_gid = None
            node.absent_xattrs = None
            node.no_xattrs = False
        return self.table.adopt(node, parent, name)

    def _number(self, layer: Layer, parent: Node, name: bytes, st: os.stat_result) -> int:
        if layer.writable and self.ns is not None and self.may_hold_origins(parent):
            path = join(parent.path(), name)
            try:
                origin = ondisk.origin(functools.partial(layer.getxattr, path), self.ns)
            except ValueError:
                log.warning("ignoring a malformed origin xattr on %r", name)
            else:
                if origin is not None:
                    return origin
        return self.numbers.of(st)

    def stat(self, node: Node) -> os.stat_result:
        """lstat of the file behind ``node`` (through an open fd once it is unlinked)."""
        if node.parent is None and node is not self.root:
            if node.handles:
                return os.fstat(node.handles[-1])
            if node.orphan_fd is not None:
                return os.fstat(node.orphan_fd)
            if node.last_stat is not None:
                return node.last_stat
            raise fail(errno.ENOENT)
        parent = node.parent
        if parent is None:
            return self.top_layer(node).stat_path(b"")
        index = self.entry(node).layer
        return self.layers[index].lstat(self.dir_path(parent, index), node.name)

    def dir_nlink(self, node: Node, st: os.stat_result) -> int:
        """Link count of a directory: overlayfs's 1 ("unknown") when merged from layers."""
        if node.parent is None and node is not self.root:
            return 0  # removed while open
        layers = node.layers
        if layers is None:
            layers = self.root_layers() if node is self.root else self.entry(node).dir_layers
            if len(layers) > 1 or self._redirected(node, layers):
                # dir_layers are not yet cut at an opaque layer: the view knows where to cut.
                self.merged(node)
                layers = node.layers or ()
        return dir_nlink(len(layers), st.st_nlink)

    def _redirected(self, node: Node, layers: tuple[int, ...]) -> bool:
        """True when directory ``node``, found in one layer only, has a redirect there to
        content in the layers below (its merged view then tells its layers)."""
        if not self.follow_redirects or node.parent is None or len(layers) != 1:
            return False
        index = layers[0]
        if index == len(self.layers) - 1:
            return False
        path = self.dir_path(node, index, built=False)
        return ondisk.redirect(functools.partial(self.layers[index].getxattr, path)) is not None

    def readlink(self, node: Node) -> bytes:
        parent = node.parent
        if parent is None:
            raise fail(errno.ENOENT)
        layer = self.top_layer(node)
        return os.readlink(node.name, dir_fd=layer.dir_fd(self.dir_path(parent, layer.index)))

    def getxattr(self, node: Node, name: bytes) -> bytes | None:
        """An xattr of ``node`` as the union shows it (never the overlay's own; nested
        ``overlay.*`` ones are stored escaped)."""
        if self.knows_absent(node, name):
            return None
        value = self._read_xattr(node, escape_xattr(name))
        if value is None:
            absent = node.absent_xattrs
            if absent is None:  # the first one missing: has the file any xattr at all?
                absent = node.absent_xattrs = set()
                with contextlib.suppress(OSError):  # not known: each name is asked
                    node.no_xattrs = not self.listxattr(node)
            if len(absent) < ABSENT_XATTRS_KEPT:
                absent.add(name)
        return value

    def knows_absent(self, node: Node, name: bytes) -> bool:
        """True when ``node`` is known to have no xattr ``name`` (no system call needed)."""
        if node.no_xattrs:
            return True
        absent = node.absent_xattrs
        return absent is not None and name in absent

    def _read_xattr(self, node: Node, name: bytes) -> bytes | None:
        fd = self._unlinked_fd(node)
        if fd is not None:
            try:
                return os.getxattr(fd, name)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.ENOTSUP):
                    return None
                raise
        layer = self.top_layer(node)
        return layer.getxattr(self.path_in(node, layer.index), name)

    def listxattr(self, node: Node) -> list[bytes]:
        fd = self._unlinked_fd(node)
        if fd is not None:
            listed = os.listxattr(fd)
        else:
            layer = self.top_layer(node)
            path = layer.xattr_path(self.path_in(node, layer.index))
            listed = os.listxattr(path, follow_symlinks=False)
        names = (unescape_xattr(os.fsencode(n)) for n in listed)
        return [n for n in names if n is not None]

    def _unlinked_fd(self, node: Node) -> int | None:
        """An open fd of an unlinked ``node`` (it has no path any more), for reading."""
        if node.parent is None and node is not self.root and node.handles:
            return node.handles[-1]
        return None

    def listing(self, node: Node) -> Iterator[tuple[bytes, Entry]]:
        """The merged directory, in a stable order."""
        return iter(list(self.merged(node).items()))

    # ---- commit: a fresh upper -----------------------------------------------------------

    def switch_upper(self) -> str:
        """Freeze the upper as the top lower layer and go on with a fresh, empty upper.

        The upper directory is renamed to ``<upper>.frozen-<ns>`` (the server keeps using it
        through its open fds, now read-only) and an empty directory with the same metadata
        takes its place. The merged tree is unchanged; returns the frozen directory.
        """
        copier = self.require_upper()
        old = self.layers[0]
        frozen = f"{old.path}.frozen-{time.time_ns()}"
        os.rename(old.path, frozen)
        try:
            os.mkdir(old.path, 0o700)
            copy_dir_metadata(frozen, old.path)
            new = Layer(old.path, 0, writable=True)
        except BaseException:
            shutil.rmtree(old.path, ignore_errors=True)
            os.rename(frozen, old.path)
            raise
        old.path, old.writable = frozen, False
        self.layers.insert(0, new)
        for index, layer in enumerate(self.layers):
            layer.index = index
        copier.upper = new
        self.read_ahead.clear()  # read with the old layer numbers
        for node in self.table.nodes.values():
            node.merged = None
            node.layers = None
            node.covered = set()
            node.whiteouts = set()
            node.sgid_gid = None
            node.lower_paths = None  # re-read with the views (the layers moved down one)
            node.impure = None
        self.impure_kept = self._keep_impure_markers()  # a record for the fresh upper
        return frozen

    # ---- copy-up ------------------------------------------------------------------------

    def require_upper(self) -> CopyUp:
        if self.copier is None:
            raise fail(errno.EROFS)
        return self.copier

    def copy_up(self, node: Node) -> None:
        """Make sure ``node`` lives in the upper (its parents first)."""
        copier = self.require_upper()
        if node is self.root:
            return
        entry = self.entry(node)
        if entry.layer == 0:
            return
        parent = node.parent
        assert parent is not None
        self.copy_up(parent)
        self.mark_impure(parent)
        source = entry.layer
        st, copied = copier.copy(self.layers[source], parent.path(), node.name, node.id,
                                 src_parent=self.dir_path(parent, source))
        self.copied_up(node, entry, source, st, copied)

    def copied_up(self, node: Node, entry: Entry, source: int, st: os.stat_result,
                  copied_xattrs: list[bytes] | None = None) -> None:
        """``node`` (whose ``entry`` was in layer ``source``, with stat ``st``) is now in the
        upper: update the views (and link its lower hard links to the copy).
        ``copied_xattrs``: the xattrs the copy-up copied (None: not known). Without file
        capabilities among them the copy has none (only a setxattr makes them, never an
        LSM or an inherited ACL), and the kernel's getxattr of them before every write is
        answered without a system call."""
        entry.layer = 0
        if copied_xattrs is not None and CAPABILITY not in copied_xattrs:
            if node.absent_xattrs is None:
                node.absent_xattrs = set()
            node.absent_xattrs.add(CAPABILITY)
        self.counters.copied_up(st)
        if not entry.is_dir and st.st_nlink > 1:
            link_aliases(self, node, source, st.st_ino)
        if entry.is_dir:
            node.impure = False  # a fresh upper directory
            entry.dir_layers = (0, *entry.dir_layers)
            if node.layers is not None:
                node.layers = (0, *node.layers)
            self.stale.add(node.id)

    def view_of(self, parent: Node, name: bytes) -> Node:
        """The node of ``parent/name``: the kernel's if it has one, else a transient one."""
        node = self._known_child(parent, name)
        if node is not None:
            return node
        found = self.lookup(parent, name)
        if found is None:
            raise fail(errno.ENOENT, name)
        node = found[0]
        if node.lookups == 0 and not node.handles:
            self.table.drop(node)
            node.parent = parent  # keep it usable as a transient view
        return node


def copy_dir_metadata(src: str, dst: str) -> None:
    """Give directory ``dst`` the owner, mode, times and xattrs of ``src`` (not the overlay's)."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(src):
        if not is_private_xattr(os.fsencode(name)):
            os.setxattr(dst, name, os.getxattr(src, name))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))

