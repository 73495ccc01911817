"""``unionfs build``: parses the options, runs :func:`unionfs.build.build`, prints its steps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from unionfs.errors import UserError


def register(sub: Any) -> None:
    """Add ``build`` to the ``unionfs`` parser."""
    p = sub.add_parser("build", help="build an image from a Containerfile",
                       description="Build an image from a Containerfile (or Dockerfile).")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="layer store (default: $UNIONFS_STORE or ~/.local/share/unionfs)")
    p.add_argument("-t", "--tag", metavar="NAME[:TAG]", help="name of the new image")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="the Containerfile (default: CONTEXT/Containerfile or Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a value for an ARG (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="run every step again")
    p.add_argument("--target", metavar="STAGE", help="build up to this stage")
    p.add_argument("--network", default="host", choices=("host", "none"),
                   help="network of RUN steps (default: host)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CTR[:ro]",
                   help="bind-mount a host path into RUN steps (not part of the image, not "
                   "part of the cache key)")
    p.add_argument("context", metavar="CONTEXT", help="the build context directory")
    p.set_defaults(func=cmd_build)


def parse_build_args(items: list[str]) -> dict[str, str]:
    """``K=V`` items (a bare ``K`` takes the value from the environment, as docker)."""
    import os

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UserError(f"invalid --build-arg {item!r} (expected KEY=VALUE)")
        if sep:
            out[key] = value
        elif key in os.environ:
            out[key] = os.environ[key]
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from unionfs.build import BuildOptions, build
    from unionfs.store import Store

    opts = BuildOptions(context=Path(args.context), file=Path(args.file) if args.file else None,
                        tag=args.tag, build_args=parse_build_args(args.build_arg),
                        no_cache=args.no_cache, target=args.target, network=args.network,
                        volumes=list(args.volume))
    build(Store.open(args.store), opts, sys.stdout)
    return 0
