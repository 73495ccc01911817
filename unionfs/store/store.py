"""The layer store: immutable content-addressed layers and named images, on one filesystem.

Layout (everything below ``root``)::

    lock                          flock held for every mutation
    tags.json                     {"name:tag": "sha256:<image id>"}
    images/sha256/<hex>.json      an image config (OCI form); the id is its sha256
    layers/sha256/<hex>/fs/       a layer, overlayfs format, never written after creation
    layers/sha256/<hex>/layer.json  size of its canonical tar, created time, origin
    uppers/<kind>/<name>/{upper,work}  writable uppers of mounts and containers
    committed.json                {old upper path: layer id} for uppers already committed
    tmp/                          staging; a layer or image appears by one rename

Expensive work (copying, hashing) happens in ``tmp/`` without the lock; publishing takes the
lock, re-checks, and renames. A failure at any point leaves only ``tmp/`` debris, which
:meth:`Store.open` clears when no one holds the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from unionfs.errors import UserError
from unionfs.layers.syscalls import syncfs_path
from unionfs.store import refs
from unionfs.store.fsutil import (
    canonical_json,
    flock,
    now_iso,
    read_json,
    rmtree,
    write_atomic,
)
from unionfs.store.layertar import TarDigest, layer_digest
from unionfs.store.limits import Limits
from unionfs.store.materialize import LayerWriter
from unionfs.store.tree import Node, readahead, scan

Progress = Callable[[int], None]
UPPER_RECORD = "image.json"  # next to an upper made for an image: what it sits on
# A commit's container config: an OCI ``config`` object, a function of the parent image's
# config giving one, or None (inherit the parent's).
ConfigArg = dict[str, Any] | Callable[[dict[str, Any] | None], dict[str, Any]] | None


def default_root() -> Path:
    """``$UNIONFS_STORE``, else ``$XDG_DATA_HOME/unionfs`` (``~/.local/share/unionfs``)."""
    env = os.environ.get("UNIONFS_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "unionfs"


@dataclass(frozen=True)
class StagedLayer:
    """A layer written in staging, with its digest, waiting to be published."""

    path: Path
    digest: str
    size: int
    origin: str


@dataclass(frozen=True)
class Layer:
    """One stored layer."""

    store: Store
    id: str  # sha256:<hex> of the canonical tar

    @property
    def hex(self) -> str:
        return self.id.removeprefix("sha256:")

    @property
    def path(self) -> Path:
        """The directory holding ``fs/`` and ``layer.json``."""
        return self.store.root / "layers" / "sha256" / self.hex

    @property
    def dir(self) -> Path:
        """The layer content, usable as a lower of unionfs or kernel overlayfs."""
        return self.path / "fs"

    @property
    def meta(self) -> dict[str, Any]:
        return read_json(self.path / "layer.json", {}) or {}

    @property
    def size(self) -> int:
        """Bytes of the layer's canonical tar."""
        return int(self.meta.get("size", 0))


@dataclass(frozen=True)
class Image:
    """A named, ordered list of layers plus a config."""

    store: Store
    id: str
    config: dict[str, Any]

    @property
    def layer_ids(self) -> list[str]:
        """Layer ids, bottom first (the OCI ``rootfs.diff_ids`` order)."""
        return list(self.config["rootfs"]["diff_ids"])

    @property
    def layers(self) -> list[Layer]:
        """Layers, top first."""
        return [Layer(self.store, d) for d in reversed(self.layer_ids)]

    @property
    def layer_dirs(self) -> list[Path]:
        """Layer directories, top first: ready to be unionfs (or overlayfs) lowers."""
        return [layer.dir for layer in self.layers]

    @property
    def tags(self) -> list[str]:
        return sorted(t for t, i in self.store.tags().items() if i == self.id)

    @property
    def name(self) -> str:
        """The first tag, or ``<none>``."""
        tags = self.tags
        return tags[0] if tags else "<none>"

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


class Store:
    """A layer store rooted at a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- opening and locking -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating if needed) the store at ``path`` or the default location."""
        root = Path(path) if path is not None else default_root()
        root = root.expanduser().absolute()
        try:
            for sub in ("layers/sha256", "images/sha256", "uppers", "tmp", "locks"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            _private_dirs(root)
        except OSError as exc:
            raise UserError(f"cannot use store {root}: {exc.strerror}") from None
        store = cls(root)
        store._clear_stale_tmp()
        return store

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide mutation lock."""
        with flock(self.root / "lock"):
            yield

    def _clear_stale_tmp(self) -> None:
        """Remove staging left by a crashed process (entries whose owner pid is gone)."""
        for entry in (self.root / "tmp").iterdir():
            pid = entry.name.split("-", 2)[1] if entry.name.count("-") >= 2 else ""
            if pid.isdigit() and not _pid_alive(int(pid)):
                rmtree(entry)

    @contextlib.contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """A fresh directory in ``tmp/``, removed afterwards whatever happens."""
        path = self.root / "tmp" / f"{label}-{os.getpid()}-{_token()}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            rmtree(path)

    # -- tags and images -----------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """All tags: ``name:tag`` -> image id."""
        return dict(read_json(self.root / "tags.json", {}) or {})

    def _write_tags(self, tags: dict[str, str]) -> None:
        write_atomic(self.root / "tags.json", canonical_json(dict(sorted(tags.items()))))

    def _config_path(self, image_id: str) -> Path:
        return self.root / "images" / "sha256" / (image_id.removeprefix("sha256:") + ".json")

    def image_ids(self) -> list[str]:
        """Every stored image id."""
        return sorted("sha256:" + p.stem for p in (self.root / "images" / "sha256").glob(
            "*.json"))

    def images(self) -> list[Image]:
        """Every stored image, newest first."""
        out = [self._load_image(i) for i in self.image_ids()]
        return sorted(out, key=lambda im: (im.config.get("created", ""), im.id), reverse=True)

    def _load_image(self, image_id: str) -> Image:
        data = read_json(self._config_path(image_id))
        if data is None:
            raise UserError(f"unknown image: {image_id}")
        return Image(self, image_id, data)

    def image(self, ref: str) -> Image:
        """The image called ``name[:tag]``, or with this (abbreviated) id."""
        tags = self.tags()
        name, tag = refs.split_ref(ref)
        image_id = tags.get(f"{name}:{tag}")
        if image_id is None:
            image_id = self._match_id(ref, self.image_ids(), "image")
        if image_id is None:
            raise UserError(f"unknown image: {ref}")
        return self._load_image(image_id)

    def find_image(self, ref: str) -> Image | None:
        """Like :meth:`image`, but None when there is no such image."""
        try:
            return self.image(ref)
        except UserError as exc:
            if str(exc).startswith("unknown image"):
                return None
            raise

    @staticmethod
    def _match_id(ref: str, ids: Iterable[str], what: str) -> str | None:
        hexpart = refs.hex_of(ref)
        if hexpart is None:
            return None
        found = [i for i in ids if i.removeprefix("sha256:").startswith(hexpart)]
        if len(found) > 1:
            raise UserError(f"ambiguous {what} id prefix: {ref}")
        return found[0] if found else None

    def layer(self, ref: str) -> Layer:
        """The layer with this (abbreviated) id."""
        found = self.find_layer(ref)
        if found is None:
            raise UserError(f"unknown layer: {ref}")
        return found

    def find_layer(self, ref: str) -> Layer | None:
        """The layer with this (abbreviated) id, or None."""
        ids = ["sha256:" + p.name for p in (self.root / "layers" / "sha256").iterdir()]
        found = self._match_id(ref, ids, "layer")
        return Layer(self, found) if found is not None else None

    def layer_ids(self) -> list[str]:
        return sorted("sha256:" + p.name for p in (self.root / "layers" / "sha256").iterdir())

    def publish_image(self, config: dict[str, Any], tag: str | None) -> Image:
        """Store ``config`` (its layers must exist) and point ``tag`` at it."""
        with self.lock():
            return self._publish_image_locked(config, tag)

    def _publish_image_locked(self, config: dict[str, Any], tag: str | None) -> Image:
        data = canonical_json(config)
        image_id = "sha256:" + hashlib.sha256(data).hexdigest()
        missing = [d for d in config["rootfs"]["diff_ids"] if not Layer(self, d).dir.is_dir()]
        if missing:
            raise UserError(f"layer {refs.short(missing[0])} was removed meanwhile")
        path = self._config_path(image_id)
        if not path.exists():
            write_atomic(path, data)
        if tag:
            tags = self.tags()
            tags[tag] = image_id
            self._write_tags(tags)
        return Image(self, image_id, config)

    def publish(self, layers: list[StagedLayer], images: list[tuple[dict[str, Any], str | None]]
                ) -> list[Image]:
        """Publish staged layers and then images, all under one hold of the lock."""
        with self.lock():
            for staged in layers:
                self._publish_layer_locked(staged)
            return [self._publish_image_locked(c, t) for c, t in images]

    def tag(self, ref: str, new: str) -> Image:
        """Give the image ``ref`` the additional name ``new``."""
        image = self.image(ref)
        new = refs.normalize_tag(new)
        with self.lock():
            tags = self.tags()
            tags[new] = image.id
            self._write_tags(tags)
        return image

    # -- layers --------------------------------------------------------------------------

    def _publish_layer_locked(self, staged: StagedLayer) -> Layer:
        """Rename a staged layer into place (or drop it if the layer exists); lock held."""
        layer = Layer(self, staged.digest)
        meta = {"id": staged.digest, "size": staged.size, "created": now_iso(),
                "origin": staged.origin}
        syncfs_path(staged.path)  # the layer's files are on disk before it is published
        write_atomic(staged.path / "layer.json", canonical_json(meta))
        if not layer.path.exists():
            os.rename(staged.path, layer.path)
            staged.path.mkdir()  # the staging context removes it
        return layer

    def _publish_layer(self, staged: StagedLayer) -> Layer:
        with self.lock():
            return self._publish_layer_locked(staged)

    def stage_nodes(self, path: Path, nodes: Iterable[Node], origin: str, *,
                    link: bool = False, progress: Progress | None = None) -> StagedLayer:
        """Write ``nodes`` as a layer in staging directory ``path`` (``path/fs``).

        The digest is taken while writing; the result is scanned again only when the writer
        cannot vouch that it is what it hashed (nodes out of order, an owner not kept...).
        """
        tar = None if link else TarDigest()
        writer = LayerWriter(path / "fs", link_sources=link, digest=tar)
        if link:  # linked files are not read: nothing to read ahead
            writer.add_all(nodes, progress)
        else:
            with contextlib.closing(readahead(nodes)) as ahead:
                writer.add_all(ahead, progress)
        writer.finish()
        if tar is not None and writer.exact:
            digest, size = tar.finish()
        else:
            digest, size = layer_digest(scan(path / "fs"))
        return StagedLayer(path, digest, size, origin)

    def stage_tar(self, path: Path, f: BinaryIO, origin: str, *,
                  expect_digest: str | None = None,
                  progress: Progress | None = None,
                  limits: Limits | None = None) -> StagedLayer:
        """Check and extract a layer tar stream into ``path/fs``.

        ``expect_digest`` is the sha256 the uncompressed tar must have (an OCI diff_id).
        The stream may be gzip, zstd, bzip2 or xz; ``limits`` bound what it expands to.
        """
        from unionfs.store.limits import DEFAULT, BoundedReader, CountReader
        from unionfs.store.progress import CountingReader
        from unionfs.store.untar import HashReader, extract, open_stream

        limits = limits or DEFAULT
        writer = LayerWriter(path / "fs", beneath=True)
        if progress is not None:  # progress in archive bytes read, as the total is given
            f = io.BufferedReader(CountingReader(f, progress))  # type: ignore[assignment]
        packed = CountReader(f)
        bounded = BoundedReader(_decompressed(io.BufferedReader(packed)),  # type: ignore[arg-type]
                                lambda: packed.count, limits)
        reader = HashReader(bounded)  # type: ignore[arg-type]
        try:
            with open_stream(reader) as tar:  # type: ignore[arg-type]
                data_end = extract(tar, writer, limits=limits)
            raw_digest = reader.drain()
        except _archive_errors() as exc:
            raise UserError(f"malformed archive: {exc}") from None
        finally:
            writer.close()
        if reader.count == 0:
            raise UserError("malformed archive: empty file")
        if data_end > reader.count:
            raise UserError("malformed archive: truncated inside a member")
        if expect_digest is not None and raw_digest != expect_digest:
            raise UserError(f"layer does not match its diff_id {refs.short(expect_digest)}"
                            f" (content is {refs.short(raw_digest)})")
        digest, size = layer_digest(scan(path / "fs"))
        return StagedLayer(path, digest, size, origin)

    def add_layer_nodes(self, nodes: Iterable[Node], origin: str, *, link: bool = False,
                        progress: Progress | None = None) -> Layer:
        """A layer holding ``nodes`` (from :func:`scan` or a merge), content-addressed."""
        with self.staging("layer") as staged:
            return self._publish_layer(self.stage_nodes(staged, nodes, origin, link=link,
                                                        progress=progress))

    def add_layer_dir(self, src: Path, origin: str = "", *, link: bool = False,
                      progress: Progress | None = None) -> Layer:
        """A layer with the content of directory ``src`` (any whiteout encoding)."""
        if not src.is_dir():
            raise UserError(f"not a directory: {src}")
        return self.add_layer_nodes(scan(src), origin or f"dir {src}", link=link,
                                    progress=progress)

    def adopt_dir(self, frozen: Path, origin: str,
                  progress: Progress | None = None) -> Layer:
        """Make a directory nothing writes anymore (a switched-out upper) a layer by moving it.

        The digest is taken in place; then, under the lock, the directory is renamed into the
        store (through ``tmp/``, so a layer appears whole). If the layer already exists, or
        ``frozen`` is on another filesystem, it is copied (or reused) and left where it is:
        a live mount may still read it.
        """
        if os.stat(frozen).st_dev != os.stat(self.root / "tmp").st_dev:
            return self.add_layer_dir(frozen, origin, progress=progress)
        private: list[tuple[bytes, tuple[bytes, ...]]] = []
        with contextlib.closing(readahead(_noting_private(scan(frozen), private))) as nodes:
            digest, size = layer_digest(nodes, progress=progress)
        _strip_xattrs(frozen, private)  # only the writable upper's are read by a live union
        layer = Layer(self, digest)
        meta = {"id": digest, "size": size, "created": now_iso(), "origin": origin}
        syncfs_path(frozen)  # written through a mount, never synced: on disk before it is a layer
        with self.lock():
            if layer.path.exists():
                return layer
            stage = self.root / "tmp" / f"adopt-{os.getpid()}-{_token()}"
            stage.mkdir(mode=0o755)
            write_atomic(stage / "layer.json", canonical_json(meta))
            os.rename(frozen, stage / "fs")
            try:
                os.rename(stage, layer.path)
            except OSError:
                os.rename(stage / "fs", frozen)
                rmtree(stage)
                raise
        return layer

    def add_layer_tar(self, f: BinaryIO, origin: str,
                      progress: Progress | None = None,
                      limits: Limits | None = None) -> Layer:
        """A layer from a tar stream (plain, gzip, zstd, bzip2 or xz)."""
        with self.staging("layer") as staged:
            return self._publish_layer(self.stage_tar(staged, f, origin, progress=progress,
                                                      limits=limits))

    # -- uppers --------------------------------------------------------------------------

    def new_upper(self, kind: str, name: str, image: Image | None = None
                  ) -> tuple[Path, Path]:
        """A fresh (upper, workdir) pair under ``uppers/<kind>/``; never reuses a directory.

        The directory is ``<name>`` or, if that exists, ``<name>.<n>``. With ``image``, the
        image it sits on is recorded next to it (``image.json``), so a later
        ``commit --upper`` knows the parent without being told.
        """
        for part in (kind, name):
            if not part or "/" in part or part in (".", ".."):
                raise UserError(f"invalid upper name: {kind}/{name}")
        base = self.root / "uppers" / kind
        base.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            path = base / (name if n == 0 else f"{name}.{n}")
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                continue
            (path / "upper").mkdir(mode=0o755)
            (path / "work").mkdir(mode=0o700)
            if image is not None:
                record = {"image": image.id, "lowers": [str(p) for p in image.layer_dirs]}
                write_atomic(path / UPPER_RECORD, canonical_json(record))
            return path / "upper", path / "work"
        raise UserError(f"too many uppers named {kind}/{name}")

    def committed_layer(self, upper: Path) -> str | None:
        """The layer an old (switched-out) upper was committed as, if any."""
        data = read_json(self.root / "committed.json", {}) or {}
        return data.get(os.path.realpath(upper))

    def record_committed(self, upper: Path, layer: str) -> None:
        with self.lock():
            data = read_json(self.root / "committed.json", {}) or {}
            data[os.path.realpath(upper)] = layer
            write_atomic(self.root / "committed.json", canonical_json(data))

    def layer_of_dir(self, path: Path) -> str | None:
        """The id of the stored layer whose directory is ``path``, else a committed upper's."""
        real = Path(os.path.realpath(path))
        base = Path(os.path.realpath(self.root / "layers" / "sha256"))
        if real.parent.parent == base and real.name == "fs":
            return "sha256:" + real.parent.name
        return self.committed_layer(real)

    # -- commit and import ---------------------------------------------------------------

    def commit(self, upper: Path, parent: str | None, tag: str, message: str = "",
               created_by: str = "", author: str | None = None, *, adopt: bool = False,
               progress: Progress | None = None, config: ConfigArg = None) -> Image:
        """Make ``upper`` a new layer on top of image ``parent`` and tag the result.

        ``upper`` is copied; with ``adopt`` (an upper nothing writes anymore) it is moved.
        ``config`` (an OCI ``config`` object, or a function of the parent's image config
        that returns one) replaces the parent's Cmd, Env...
        """
        base = self.image(parent) if parent else None
        tag = refs.normalize_tag(tag)
        if adopt:
            layer = self.adopt_dir(Path(upper), f"commit of {upper}", progress)
        else:
            layer = self.add_layer_dir(Path(upper), f"commit of {upper}", progress=progress)
        history = refs.history_entry(now_iso(), created_by, message, author)
        parent_config = base.config if base else None
        container = config(parent_config) if callable(config) else config
        image_config = refs.new_config(parent_config, layer.id, history, container)
        return self.publish_image(image_config, tag)

    def commit_on_layers(self, upper: Path, lower_ids: list[str], tag: str, message: str = "",
                         created_by: str = "", author: str | None = None, *,
                         adopt: bool = False, progress: Progress | None = None,
                         config: ConfigArg = None) -> Image:
        """Commit ``upper`` over the layers ``lower_ids`` (top first) of no named image.

        The parent is the stored image with exactly those layers when there is one;
        otherwise its history records the layers as added by ``unionfs commit``.
        """
        bottom_first = list(reversed(lower_ids))
        parent = next((im for im in self.images() if im.layer_ids == bottom_first), None)
        if parent is not None or not bottom_first:
            return self.commit(upper, parent.id if parent else None, tag, message, created_by,
                               author, adopt=adopt, progress=progress, config=config)
        lowers: dict[str, Any] | None = None
        for layer_id in bottom_first:
            lowers = refs.new_config(lowers, layer_id, refs.history_entry(
                now_iso(), "unionfs mount (lower layer)"))
        image = self.publish_image(lowers, None)  # type: ignore[arg-type]
        return self.commit(upper, image.id, tag, message, created_by, author, adopt=adopt,
                           progress=progress, config=config)

    def import_rootfs(self, src: Path, tag: str, message: str = "",
                      progress: Progress | None = None,
                      limits: Limits | None = None) -> Image:
        """A one-layer image from a root filesystem tarball (a regular file) or directory."""
        src = Path(src)
        tag = refs.normalize_tag(tag)
        if src.is_dir():
            layer = self.add_layer_dir(src, f"import {src}", progress=progress)
        else:
            with _open_regular(src) as f:
                layer = self.add_layer_tar(f, f"import {src}", progress, limits)
        history = refs.history_entry(now_iso(), f"unionfs import {src.name}", message)
        return self.publish_image(refs.new_config(None, layer.id, history), tag)

    # -- removal -------------------------------------------------------------------------

    def children(self, image: Image) -> list[Image]:
        """Images built on top of ``image`` (its layers are a strict prefix of theirs)."""
        mine = image.layer_ids
        return [im for im in self.images()
                if len(im.layer_ids) > len(mine) and im.layer_ids[: len(mine)] == mine]

    def remove(self, ref: str, *, in_use: Callable[[Image], str | None]) -> list[str]:
        """``rmi``: untag, or delete the image and the layers nothing else uses.

        Returns what was done, one line each. Refuses (UserError) to delete an image that
        another image is built on, or that ``in_use`` names a user of.
        """
        image = self.image(ref)
        name, tag = refs.split_ref(ref)
        tagname = f"{name}:{tag}"
        with self.lock():
            tags = self.tags()
            if tags.get(tagname) == image.id and len(image.tags) > 1:
                del tags[tagname]
                self._write_tags(tags)
                return [f"Untagged: {tagname}"]
            kids = self.children(image)
            if kids:
                raise UserError(f"image {ref} is used by image {kids[0].name} "
                                f"({refs.short(kids[0].id)}) built on it")
            user = in_use(image)
            if user:
                raise UserError(f"image {ref} is in use by {user}")
            done = [f"Untagged: {t}" for t in image.tags]
            self._write_tags({t: i for t, i in tags.items() if i != image.id})
            self._config_path(image.id).unlink()
            done.append(f"Deleted: {image.id}")
            done += self._gc_layers(image.layer_ids)
        return done

    def _gc_layers(self, candidates: list[str]) -> list[str]:
        """Delete the candidate layers no remaining image refers to (lock held)."""
        used = {d for im in self.images() for d in im.layer_ids}
        done = []
        for layer_id in dict.fromkeys(candidates):
            if layer_id not in used:
                layer = Layer(self, layer_id)
                with self.staging("rm") as trash:
                    os.rename(layer.path, trash / "layer")
                done.append(f"Deleted layer: {layer_id}")
        return done


def _noting_private(nodes: Iterable[Node], out: list[tuple[bytes, tuple[bytes, ...]]]
                    ) -> Iterator[Node]:
    """Pass nodes through, noting those that carry the union's bookkeeping xattrs."""
    for node in nodes:
        if node.private:
            out.append((node.path, node.private))
        yield node


def _strip_xattrs(root: Path, found: list[tuple[bytes, tuple[bytes, ...]]]) -> None:
    """Remove bookkeeping xattrs from a directory becoming a layer: not layer content."""
    base = os.fsencode(root)
    for path, names in found:
        for name in names:
            with contextlib.suppress(OSError):
                os.removexattr(os.path.join(base, path), name, follow_symlinks=False)


def _token() -> str:
    """12 random hex digits: a staging name nobody else picks."""
    return os.urandom(6).hex()


def _archive_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged (possibly compressed) tar raises; imported only when needed."""
    import tarfile

    from unionfs.store.compression import errors

    return (tarfile.TarError, ValueError, *errors())


def _decompressed(f: BinaryIO) -> io.BufferedIOBase:
    """``f`` uncompressed: gzip, zstd, bzip2 and xz are recognized by their magic bytes."""
    from unionfs.store.compression import decompressed

    return decompressed(f)


def _open_regular(src: Path) -> BinaryIO:
    """``src`` opened for reading, refused unless it is a regular file (opened without
    blocking, so a FIFO or a device is refused rather than waited on)."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise UserError(f"cannot read {src}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"not a regular file or directory: {src}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _private_dirs(root: Path) -> None:
    """Layers, uppers and staging reachable only by the store's owner (0700, as docker's
    /var/lib/docker): a setuid file made in a container must not be runnable by other users
    of the host, nor a container's files readable by them."""
    for sub in ("layers", "uppers", "tmp"):
        path = root / sub
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
