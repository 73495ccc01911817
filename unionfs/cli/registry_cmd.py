"""``unionfs pull|push|login|logout``: the registry commands (work in unionfs.store.registry)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from unionfs.errors import UserError


def _store(args: argparse.Namespace) -> Any:
    from unionfs.store import Store

    return Store.open(args.store)


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """``--max-layer-size``, ``--max-ratio``, ``--max-entries`` (untrusted archive bounds)."""
    p.add_argument("--max-layer-size", metavar="SIZE", default=None,
                   help="most bytes one layer may expand to (default 16G)")
    p.add_argument("--max-ratio", metavar="N", type=int, default=None,
                   help="most a layer may expand relative to its compressed size (default 100)")
    p.add_argument("--max-entries", metavar="N", type=int, default=None,
                   help="most entries one layer may have (default 1000000)")


def limits_of(args: argparse.Namespace) -> Any:
    from unionfs.store.limits import DEFAULT, Limits, parse_size

    size = parse_size(args.max_layer_size) if args.max_layer_size else DEFAULT.max_size
    for name in ("max_ratio", "max_entries"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    return Limits(size, args.max_ratio or DEFAULT.max_ratio,
                  args.max_entries or DEFAULT.max_entries)


def _common(p: argparse.ArgumentParser, *, store: bool = True) -> None:
    if store:
        p.add_argument("--store", metavar="DIR", default=None,
                       help="layer store (default: $UNIONFS_STORE or ~/.local/share/unionfs)")
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=None,
                   metavar="BOOL", help="verify the registry's TLS certificate (default true; "
                   "false also allows plain HTTP; loopback registries are always allowed it)")
    p.add_argument("--authfile", metavar="FILE", default=None,
                   help="credentials file (default: $REGISTRY_AUTH_FILE, "
                   "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")


def cmd_pull(args: argparse.Namespace) -> int:
    from unionfs.store.progress import transfers
    from unionfs.store.registry import PullOptions, pull

    store = _store(args)
    opts = PullOptions(platform=args.platform, tls_verify=args.tls_verify,
                       authfile=args.authfile, limits=limits_of(args))
    quiet = args.quiet
    with transfers(enabled=False if quiet else None) as tasks:
        pulled = pull(store, args.reference, opts, all_tags=args.all_tags, tasks=tasks)
    for p in pulled:
        if not quiet:
            print(f"{p.reference}: {p.fetched} layer(s) fetched, "
                  f"{len(p.image.layer_ids) - p.fetched} already present", file=sys.stderr)
            print(f"Digest: {p.manifest_digest}", file=sys.stderr)
        print(p.reference if not quiet else p.image.id)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from unionfs.store.limits import parse_size
    from unionfs.store.progress import transfers
    from unionfs.store.registry import PushOptions, push

    store = _store(args)
    chunk = 0 if args.chunk_size.strip() in ("0", "") else parse_size(args.chunk_size)
    opts = PushOptions(compression=args.compression, tls_verify=args.tls_verify,
                       authfile=args.authfile, chunk_size=chunk)
    with transfers(enabled=False if args.quiet else None) as tasks:
        done = push(store, args.image, args.destination, opts, tasks=tasks)
    if not args.quiet:
        print(f"{done.reference}: {done.uploaded} layer(s) uploaded, {done.mounted} mounted",
              file=sys.stderr)
    print(f"{done.reference}@{done.manifest_digest}" if not args.quiet
          else done.manifest_digest)
    if args.digestfile:
        with open(args.digestfile, "w") as f:
            f.write(done.manifest_digest)
    return 0


def _domain(text: str) -> str:
    from unionfs.store.registry.reference import DOCKER_HUB

    host = text.removeprefix("https://").removeprefix("http://").split("/")[0]
    return DOCKER_HUB if host in ("", "docker.io", "index.docker.io",
                                  "registry-1.docker.io") else host


def cmd_login(args: argparse.Namespace) -> int:
    from unionfs.store.registry import auth
    from unionfs.store.registry.client import Registry
    from unionfs.store.registry.reference import DOCKER_HUB, DOCKER_HUB_API

    domain = _domain(args.registry or "docker.io")
    user = args.username
    if user is None:
        if not sys.stdin.isatty():
            raise UserError("give --username (no terminal to ask on)")
        user = input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise UserError("give --password-stdin (no terminal to ask on)")
    if not user or not password:
        raise UserError("a username and a password are needed")
    creds = auth.Credentials(user, password)
    host = DOCKER_HUB_API if domain == DOCKER_HUB else domain
    with Registry(host, tls_verify=args.tls_verify, credentials=creds) as reg:
        reg.check_login()
    path = auth.store(domain, creds, args.authfile)
    print(f"Login Succeeded (credentials in {path})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from unionfs.store.registry import auth

    domain = _domain(args.registry or "docker.io")
    changed = auth.remove(domain, args.authfile)
    if not changed:
        raise UserError(f"not logged in to {domain}")
    print(f"Removed login credentials for {domain}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="Fetch an image from a registry.",
                       description="Fetch an image (layers in parallel, every blob checked "
                       "against its digest before it is stored) from a registry.")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", default=None,
                   help="image to take from a multi-platform index (default: this machine)")
    p.add_argument("--all-tags", "-a", action="store_true", help="every tag of the repository")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the image id")
    _common(p)
    add_limit_options(p)
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("push", help="Send an image to a registry.",
                       description="Send an image to a registry (blobs already there are "
                       "skipped, blobs of other repositories mounted).")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("destination", nargs="?", metavar="REGISTRY/NAME[:TAG]",
                   help="where to push (default: IMAGE's own name)")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip",
                   help="layer compression (default gzip)")
    p.add_argument("--digestfile", metavar="FILE", help="write the manifest digest here")
    p.add_argument("--chunk-size", metavar="SIZE", default="32M",
                   help="send larger layers in chunks of SIZE, resumed after a broken one "
                   "(default 32M; 0: each in one request)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the digest")
    _common(p)
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("login", help="Save credentials for a registry.",
                       description="Check credentials against a registry and save them.")
    p.add_argument("registry", nargs="?", metavar="REGISTRY")
    p.add_argument("--username", "-u", default=None)
    p.add_argument("--password", "-p", default=None, help="(prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password on stdin")
    _common(p, store=False)
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="Forget a registry's credentials.",
                       description="Remove saved credentials for a registry.")
    p.add_argument("registry", nargs="?", metavar="REGISTRY")
    p.add_argument("--authfile", metavar="FILE", default=None)
    p.set_defaults(func=cmd_logout)
