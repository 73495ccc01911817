"""``unionfs import|commit|images|history|inspect|diff|rmi|tag|squash|save|load``.

Argument parsing and printing only; the work is in :mod:`unionfs.store`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unionfs.errors import NotFound, UserError

if TYPE_CHECKING:
    from unionfs.store import Image, Store

Handler = Callable[[argparse.Namespace], int]


# -- shared helpers ---------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Any:
    from unionfs.store import Store

    return Store.open(args.store)


def _add_common(p: argparse.ArgumentParser, *, fmt: bool = False) -> None:
    p.add_argument("--store", metavar="DIR", default=None,
                   help="layer store (default: $UNIONFS_STORE or ~/.local/share/unionfs)")
    if fmt:
        p.add_argument("--format", choices=("table", "json"), default="table",
                       help="output format (default: table)")


def _progress(label: str, total: int | None = None) -> Any:
    from unionfs.store.progress import progress

    return progress(label, total)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Left-aligned columns separated by three spaces, like ``docker images``."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        print("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def human_size(n: int) -> str:
    """Bytes as ``1.5MB`` (decimal units, as docker prints them)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{n}B"


def _short(digest: str) -> str:
    from unionfs.store.refs import short

    return short(digest)


def _limits(args: argparse.Namespace) -> Any:
    from unionfs.cli.registry_cmd import limits_of

    return limits_of(args)


def _add_limits(p: argparse.ArgumentParser) -> None:
    from unionfs.cli.registry_cmd import add_limit_options

    add_limit_options(p)


def _container(store: Any, name: str, what: str) -> Any:
    """``runtime.state.container_upper`` / ``container_info`` if the runtime provides it."""
    try:
        from unionfs.runtime import state  # type: ignore[import-not-found]
    except ImportError:
        return None
    func = getattr(state, what, None)
    return func(store, name) if func else None


# -- import, commit ---------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    store = _store(args)
    src = Path(args.source)
    if not src.exists():
        raise UserError(f"no such file or directory: {src}")
    total = src.stat().st_size if src.is_file() else None
    with _progress(f"importing {src.name}", total) as advance:
        image = store.import_rootfs(src, args.tag, args.message, progress=advance,
                                    limits=_limits(args))
    print(image.id)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    store = _store(args)
    created_by = args.created_by or "unionfs commit " + shlex.join(sys.argv[2:])
    opts = {"message": args.message, "created_by": created_by, "author": args.author}
    target = args.targets[0] if not args.upper and args.targets else None
    opts["config"] = _commit_config(store, target, args.change)
    if args.upper:
        if len(args.targets) != 1:
            raise UserError("with --upper give only the new image name")
        image = _commit_upper(store, Path(args.upper), args.targets[0], args.parent, opts)
    else:
        if len(args.targets) != 2:
            raise UserError("usage: unionfs commit MOUNTPOINT|CONTAINER NEW-IMAGE [-m MSG]")
        image = _commit_target(store, args.targets[0], args.targets[1], args.parent, opts)
    print(image.id)
    return 0


def _commit_config(store: Any, target: str | None, changes: list[str]) -> Any:
    """What the new image's config is made from: a container's command, env, working dir and
    user, then the ``--change`` lines; a function of the parent's config (None: inherit)."""
    found = _container_spec(store, target) if target else None
    if found is None and not changes:
        return None  # (and the builder's modules are not imported)
    from unionfs.build.instructions import apply_changes
    from unionfs.store.imageconfig import ContainerConfig

    apply_changes(ContainerConfig(), changes)  # bad --change: refused before any work

    def make(base: dict[str, Any] | None) -> dict[str, Any]:
        if found is not None:
            from unionfs.runtime.imageconfig import container_config  # type: ignore[import-not-found]

            spec, image = found  # the container's own image, not any with the same layers
            cfg = container_config(spec, image.config if image is not None else base)
        else:
            cfg = ContainerConfig.from_image(base)
        return apply_changes(cfg, changes).to_oci()
    return make


def _container_spec(store: Any, name: str) -> tuple[Any, Any] | None:
    """The run spec and image of container ``name`` (None: no such container, or no
    runtime)."""
    if os.path.isdir(name):
        return None
    try:
        from unionfs.runtime import state  # type: ignore[import-not-found]
    except ImportError:
        return None
    container = state.find(store, name)
    if container is None:
        return None
    return container.spec, store.find_image(container.config.get("image_id", ""))


def _commit_upper(store: Any, upper: Path, tag: str, parent: str | None,
                  opts: dict[str, Any]) -> Any:
    from unionfs.store.mounts import in_store_uppers, lower_layer_ids, upper_lowers

    if not upper.is_dir():
        raise UserError(f"not a directory: {upper}")
    if parent is None and upper_lowers(upper) is None and in_store_uppers(store, upper):
        raise UserError(f"the image under {upper} is not recorded: give --parent IMAGE")
    with _progress("committing") as advance:
        if parent is None and (lowers := upper_lowers(upper)) is not None:
            ids = lower_layer_ids(store, lowers, advance)
            return store.commit_on_layers(upper, ids, tag, progress=advance, **opts)
        return store.commit(upper, parent, tag, progress=advance, **opts)


def _commit_target(store: Any, target: str, tag: str, parent: str | None,
                   opts: dict[str, Any]) -> Any:
    from unionfs.store.mounts import commit_mounted, is_mounted, mount_info

    if os.path.isdir(target) and is_mounted(target):
        with _progress("committing") as advance:
            return commit_mounted(store, Path(target), tag, progress=advance, **opts)
    upper = _container(store, target, "container_upper")
    if upper is None:
        raise UserError(f"{target} is neither a mount point nor a container")
    info = _container(store, target, "container_info") or {}
    # A running container's root may be mounted only in a mount namespace of its own.
    _container(store, target, "enter_container_mounts")
    rootfs = info.get("RootFs")
    if rootfs and os.path.isdir(rootfs) and is_mounted(rootfs) and mount_info(store, rootfs):
        # A running container on a unionfs root: commit it live, like a mount point.
        with _progress("committing") as advance:
            return commit_mounted(store, Path(rootfs), tag, progress=advance, **opts)
    lowers = info.get("LowerDirs")
    if parent is None and isinstance(lowers, list):
        from unionfs.store.mounts import lower_layer_ids

        with _progress("committing") as advance:
            ids = lower_layer_ids(store, [str(p) for p in lowers], advance)
            return store.commit_on_layers(Path(upper), ids, tag, progress=advance, **opts)
    return _commit_upper(store, Path(upper), tag, parent or info.get("ImageId"), opts)


# -- images, history, inspect -----------------------------------------------------------------


def _image_row(image: Any) -> dict[str, Any]:
    from unionfs.store.refs import split_ref

    name, tag = split_ref(image.tags[0]) if image.tags else ("<none>", "<none>")
    return {"repository": name, "tag": tag, "id": image.id, "tags": image.tags,
            "created": image.config.get("created", ""), "size": image.size,
            "layers": image.layer_ids}


def cmd_images(args: argparse.Namespace) -> int:
    from unionfs.store.select import Selection, select

    store = _store(args)
    selection = Selection()
    for text in args.filter:
        selection.add(text)
    chosen = select(store, store.images(), args.repository, selection)
    images = [im for im, _tags in chosen]
    if args.quiet:
        for image_id in dict.fromkeys(im.id for im in images):
            print(_short(image_id))
    elif args.format == "json":
        _print_json([_image_row(im) for im in images])
    elif args.tree:
        from unionfs.store.report import image_tree

        for line in image_tree(images):
            print(line)
    else:
        rows = []
        for im, shown in chosen:
            r = _image_row(im)
            for tag in shown or ["<none>:<none>"]:
                name, _, t = tag.rpartition(":")
                rows.append([name, t, _short(r["id"]), r["created"], human_size(r["size"]),
                             str(len(r["layers"]))])
        _print_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "LAYERS"], rows)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from unionfs.store.report import history_rows

    image = _store(args).image(args.image)
    rows = history_rows(image)
    if args.format == "json":
        _print_json(rows)
        return 0
    def cut(s: str) -> str:
        return s if args.no_trunc or len(s) <= 45 else s[:44] + "…"
    _print_table(["LAYER", "CREATED", "SIZE", "COMMENT", "CREATED BY"], [
        [r["layer"] if args.no_trunc else _short(r["layer"]), r["created"],
         human_size(r["size"]), cut(r["comment"]), cut(r["created_by"])] for r in rows])
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from unionfs.store.report import inspect_image, inspect_layer

    store = _store(args)
    out = []
    for ref in args.refs:
        image = store.find_image(ref)
        if image is not None:
            out.append(inspect_image(image))
            continue
        info = _container(store, ref, "container_info")
        if info is None:
            layer = store.find_layer(ref)
            if layer is None:
                raise NotFound(f"No such object: {ref}")
            info = inspect_layer(layer)
        out.append(info)
    if args.format is not None:
        from unionfs.cli.template import render

        for item in out:
            print(render(args.format, item))
        return 0
    _print_json(out)
    return 0


# -- diff, squash -----------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    from unionfs.store.diff import changes

    store = _store(args)
    upper, lowers = _diff_sides(store, args)
    items = [(letter, os.fsdecode(path)) for letter, path in changes(upper, lowers)]
    if args.format == "json":
        _print_json([{"kind": k, "path": p} for k, p in items])
    else:
        for letter, path in items:
            print(f"{letter} {path}")
    return 0


def _diff_sides(store: Any, args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """(upper, lowers top first) for ``diff``'s argument."""
    from unionfs.store.mounts import is_mounted, mount_info, upper_lowers

    if args.upper:
        upper = Path(args.upper)
        if args.target:
            return upper, store.image(args.target).layer_dirs
        return upper, [Path(p) for p in upper_lowers(upper) or []]
    if not args.target:
        raise UserError("diff needs a MOUNTPOINT, IMAGE or --upper DIR")
    if os.path.isdir(args.target) and is_mounted(args.target):
        info = mount_info(store, args.target)
        if info is None or not info.get("upper"):
            raise UserError(f"{args.target} is not a unionfs mount with an upper")
        return Path(info["upper"]), [Path(p) for p in info.get("lowers", [])]
    image = store.find_image(args.target)
    if image is None:
        upper = _container(store, args.target, "container_upper")
        if upper is None:
            raise UserError(f"unknown image, mount or container: {args.target}")
        info = _container(store, args.target, "container_info") or {}
        return Path(upper), [Path(p) for p in info.get("LowerDirs") or []]
    dirs = image.layer_dirs
    return dirs[0], dirs[1:]


def cmd_squash(args: argparse.Namespace) -> int:
    from unionfs.store.squash import squash_image

    store = _store(args)
    with _progress("squashing") as advance:
        image = squash_image(store, args.image, args.into, args.message, progress=advance,
                             in_use=_image_user(store))
    print(image.id)
    return 0


# -- rmi, tag ---------------------------------------------------------------------------------


def _image_user(store: Store) -> Callable[[Image], str | None]:
    """What uses an image, for ``rmi`` and ``squash``: a live mount, else a container."""
    from unionfs.runtime.state import image_user as container_user
    from unionfs.store.mounts import mount_user

    return lambda image: mount_user(store, image) or container_user(store, image)


def cmd_rmi(args: argparse.Namespace) -> int:
    store = _store(args)
    in_use = _image_user(store)
    status = 0
    for ref in args.images:
        try:
            for line in store.remove(ref, in_use=in_use):
                print(line)
        except UserError as exc:
            print(f"unionfs: error: {exc}", file=sys.stderr)
            status = exc.exit_code
    return status


def cmd_tag(args: argparse.Namespace) -> int:
    image = _store(args).tag(args.source, args.target)
    print(image.id)
    return 0


# -- save, load -------------------------------------------------------------------------------


def cmd_save(args: argparse.Namespace) -> int:
    from unionfs.store import oci

    store = _store(args)
    image = store.image(args.image)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise UserError(f"no such directory: {out.parent}")
    with _progress(f"saving {args.image}", image.size) as advance:
        if args.format == "docker-archive":
            from unionfs.store import dockerarchive

            dockerarchive.save(store, args.image, out, progress=advance)
            return 0
        manifest = oci.save(store, args.image, out, progress=advance)
    if args.format == "json":
        _print_json({"image": image.id, "output": str(out), "manifest": manifest})
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from unionfs.store import oci

    store = _store(args)
    src = Path(args.input)
    total = src.stat().st_size if src.is_file() else None
    with _progress(f"loading {src.name}", total) as advance:
        done = oci.load_report(store, src, args.tag, progress=advance, limits=_limits(args))
    images = done.images
    if args.format == "json":
        _print_json([{"id": im.id, "tags": im.tags} for im in images])
        return 0
    for tag, old in done.replaced.items():
        print(f"The image {tag} already exists, renaming the old one with ID {old} "
              "to empty string")
    for im in images:
        if im.tags:
            print(f"Loaded image: {', '.join(im.tags)}")
        else:
            print(f"Loaded image ID: {im.id}")
    return 0


# -- registration -----------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the store commands to the ``unionfs`` parser."""
    _register_build(sub)
    _register_query(sub)
    _register_manage(sub)
    _register_transfer(sub)


def _parser(sub: Any, name: str, func: Handler, help_: str, *, fmt: bool = False) -> Any:
    p = sub.add_parser(name, help=help_, description=help_)
    _add_common(p, fmt=fmt)
    p.set_defaults(func=func)
    return p


def _register_build(sub: Any) -> None:
    p = _parser(sub, "import", cmd_import, "Make a base image from a root filesystem "
                "tarball (any compression) or directory.")
    p.add_argument("source", metavar="ROOTFS.tar|DIR")
    p.add_argument("--tag", "-t", required=True, help="name[:tag] of the new image")
    p.add_argument("--message", "-m", default="", help="comment recorded in the history")
    _add_limits(p)
    p = _parser(sub, "commit", cmd_commit, "Turn the upper of a live mount (or container, "
                "or --upper DIR) into a new read-only layer and image.")
    p.add_argument("targets", nargs="+", metavar="MOUNTPOINT|CONTAINER NEW-IMAGE")
    p.add_argument("--upper", metavar="DIR", help="commit this unmounted upper directory")
    p.add_argument("--parent", metavar="IMAGE", help="image the upper sits on (with --upper)")
    p.add_argument("--message", "-m", default="", help="commit message")
    p.add_argument("--author", "-a", default=None)
    p.add_argument("--created-by", default="", help="command recorded as creating the layer")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Containerfile instruction to the config: CMD, ENTRYPOINT, "
                   "ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL (repeatable)")
    p = _parser(sub, "squash", cmd_squash, "Merge an image's layers into one layer "
                "(whiteouts applied, opaque directories resolved).")
    p.add_argument("image")
    p.add_argument("--into", metavar="NEW", help="name of the squashed image (default: "
                   "replace IMAGE's tag)")
    p.add_argument("--message", "-m", default="")


def _register_query(sub: Any) -> None:
    p = _parser(sub, "images", cmd_images, "List images.", fmt=True)
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]",
                   help="only this repository (or tag); globs allowed")
    p.add_argument("--tree", action="store_true", help="show which images share layers")
    p.add_argument("--quiet", "-q", action="store_true", help="only image ids")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                   help="reference=GLOB, dangling=true|false, before=IMAGE, since=IMAGE, "
                   "label=KEY[=VALUE] (repeatable)")
    p = _parser(sub, "history", cmd_history, "Show the layers of an image.", fmt=True)
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true", help="full ids and texts")
    p = _parser(sub, "inspect", cmd_inspect, "Show an image, layer or container as JSON.")
    p.add_argument("refs", nargs="+", metavar="IMAGE|LAYER")
    p.add_argument("-f", "--format", default=None, metavar="TEMPLATE",
                   help="print one field per item, e.g. '{{.Config.Cmd}}' or '{{json .Config}}'")
    p = _parser(sub, "diff", cmd_diff, "List changes (A added, C changed, D deleted) of a "
                "mount's upper, a container, an image's top layer, or --upper DIR.", fmt=True)
    p.add_argument("target", nargs="?", metavar="MOUNTPOINT|IMAGE|CONTAINER")
    p.add_argument("--upper", metavar="DIR", help="diff this upper (against IMAGE if given)")


def _register_manage(sub: Any) -> None:
    p = _parser(sub, "rmi", cmd_rmi, "Remove images (refused while another image is built on "
                "one or a mount uses it).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p = _parser(sub, "tag", cmd_tag, "Give an image another name.")
    p.add_argument("source", metavar="IMAGE")
    p.add_argument("target", metavar="NEW[:TAG]")


def _register_transfer(sub: Any) -> None:
    p = _parser(sub, "save", cmd_save, "Write an image as an OCI image layout archive "
                "(or, with --format docker-archive, as docker save does).")
    p.add_argument("--format", choices=("oci-archive", "docker-archive", "json"),
                   default="oci-archive", help="archive format (json: an OCI archive, and "
                   "its manifest printed as JSON)")
    p.add_argument("image")
    p.add_argument("--output", "-o", required=True, metavar="FILE.tar")
    p = _parser(sub, "load", cmd_load, "Load images from an OCI image layout archive "
                "(or directory).", fmt=True)
    p.add_argument("--input", "-i", required=True, metavar="FILE.tar|DIR")
    p.add_argument("--tag", "-t", default=None, help="name the loaded image")
    _add_limits(p)
