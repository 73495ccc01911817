"""``unionfs mount`` and ``unionfs umount``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from unionfs import api
from unionfs.errors import UserError
from unionfs.mount.options import split_escaped
from unionfs.mount.spec import MountSpec, build_spec

LOG_LEVELS = ("debug", "info", "warning", "error")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "mount", help="mount a union of layers (or an image)",
        description="Mount LOWERS (colon-separated, first has precedence; '\\:' escapes a "
        "colon) with an optional writable UPPER at MOUNTPOINT, or an IMAGE of the layer "
        "store with a fresh upper. Returns once the mount is live; the server keeps running "
        "in the background until `unionfs umount MOUNTPOINT`.",
    )
    p.add_argument("source", metavar="LOWERS|IMAGE")
    p.add_argument("paths", nargs="+", metavar="[UPPER] MOUNTPOINT")
    p.add_argument("-o", dest="options", action="append", default=[],
                   help="comma-separated options: ro, allow_other, workdir=DIR, userxattr, "
                   "volatile, entry_timeout=S, attr_timeout=S, negative_timeout=S, "
                   "metrics, trace=FILE, fail=RULE[,RULE...]")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay attached and serve in this process")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    p.add_argument("--log-file", help="server log (default: stderr in the foreground)")
    p.add_argument("--store", help="layer store for IMAGE (default: $UNIONFS_STORE or "
                   "~/.local/share/unionfs)")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=mount_command)

    u = sub.add_parser("umount", aliases=["unmount"], help="unmount a union",
                       description="Unmount a union; its server then exits.")
    u.add_argument("mountpoint")
    u.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    u.set_defaults(func=umount_command)


def mount_command(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)
    if args.foreground or args.ready_fd is not None:
        return _serve(spec, args)
    options = spec.options()  # the same options, for the server in the background
    options.log_level, options.log_file = args.log_level, args.log_file
    handle = api.mount(spec.lowers, spec.mountpoint, spec.upper, options=options)
    print(f"mounted {spec.mountpoint} (server pid {handle.pid})")
    return 0


def _spec_from_args(args: argparse.Namespace) -> MountSpec:
    options = ",".join(args.options) or None
    if len(args.paths) > 2:
        raise UserError("too many arguments: expected LOWERS [UPPER] MOUNTPOINT")
    if len(args.paths) == 1 and _looks_like_image(args.source):
        return _image_spec(args, options)
    upper = args.paths[0] if len(args.paths) == 2 else None
    return build_spec(args.source, upper, args.paths[-1], options)


def _looks_like_image(source: str) -> bool:
    """An image reference rather than a list of layer directories: no element is a dir."""
    try:
        parts = split_escaped(source, ":")
    except UserError:
        return False
    return "/" not in source and not any(os.path.isdir(p) for p in parts if p)


IMAGE_DEFAULTS = "redirect_dir=off"


def _image_spec(args: argparse.Namespace, options: str | None) -> MountSpec:
    """``unionfs mount IMAGE MOUNTPOINT``: the image's layers and a fresh upper."""
    try:
        from unionfs.store import Store
    except ImportError:
        raise UserError(f"lower layer {args.source} does not exist") from None
    store = Store.open(args.store)
    image = store.image(args.source)
    upper, work = store.new_upper("mount", os.path.basename(os.path.abspath(args.paths[0])),
                                  image=image)
    lowers = ":".join(api.escape_layer(os.fspath(p)) for p in image.layer_dirs)
    extra = f"workdir={api.escape_option(os.fspath(work))}"
    # An image's upper becomes an OCI layer at commit, which cannot hold a redirect: its
    # renamed directories are copied up whole (unless the caller asks otherwise).
    return build_spec(lowers, os.fspath(upper), args.paths[0],
                      f"{IMAGE_DEFAULTS},{options},{extra}" if options
                      else f"{IMAGE_DEFAULTS},{extra}")


def _serve(spec: MountSpec, args: argparse.Namespace) -> int:
    from unionfs.mount.server import serve

    _setup_logging(args.log_level, args.log_file, background=args.ready_fd is not None)
    return serve(spec, args.ready_fd)


def _setup_logging(level: str, log_file: str | None, *, background: bool) -> None:
    fmt = "%(asctime)s unionfs[%(process)d] %(levelname)s %(name)s: %(message)s"
    if log_file:
        handler: logging.Handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if background and not log_file:
        # The caller reads our stderr only until the mount is live; after that, log to syslog-
        # less nowhere would lose errors, so keep a file in the state dir.
        from unionfs.mount.records import state_dir

        logs = state_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = logs / f"server-{os.getpid()}.log"
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(logging.Formatter(fmt))
        root.handlers.append(file_handler)


def umount_command(args: argparse.Namespace) -> int:
    api.unmount(args.mountpoint, lazy=args.lazy)
    return 0
