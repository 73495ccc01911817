"""The ``unionfs`` command: parses arguments, dispatches, prints one-line errors.

Each command family lives in its own module with a ``register(subparsers)`` function that adds
its subcommands; a subcommand stores its handler as ``func`` (``args -> int`` exit status).
Modules are imported lazily per family so ``unionfs mount`` does not pay for the runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from unionfs import __version__
from unionfs.errors import UserError

COMMAND_MODULES = (
    "unionfs.cli.mount_cmd",
    "unionfs.cli.store_cmd",
    "unionfs.cli.registry_cmd",
    "unionfs.cli.watch_cmd",
    "unionfs.cli.build_cmd",
    "unionfs.runtime.cli",
    "unionfs.cli.demo_cmd",
)
# The module that registers each command, so a command imports only its own family (a cold
# ``unionfs commit`` started 0.6 s later importing the runtime's and the mount API's modules
# too). tests/unit/test_cli_families.py checks it against what the modules register; a
# command missing here still works (every family is loaded).
COMMAND_FAMILY = {
    **dict.fromkeys(("mount", "umount", "unmount"), "unionfs.cli.mount_cmd"),
    **dict.fromkeys(("commit", "diff", "history", "images", "import", "inspect", "load", "rmi",
                     "save", "squash", "tag"), "unionfs.cli.store_cmd"),
    **dict.fromkeys(("login", "logout", "pull", "push"), "unionfs.cli.registry_cmd"),
    **dict.fromkeys(("fail", "watch"), "unionfs.cli.watch_cmd"),
    "build": "unionfs.cli.build_cmd",
    **dict.fromkeys(("attach", "container", "cp", "exec", "export", "image", "kill", "logs",
                     "pause", "ps", "rename", "restart", "rm", "run", "start", "stats", "stop",
                     "top", "unpause", "volume", "wait"), "unionfs.runtime.cli"),
    "demo": "unionfs.cli.demo_cmd",
}

log = logging.getLogger("unionfs")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"unionfs: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of ``command``'s family when it is known."""
    family = COMMAND_FAMILY.get(command or "")
    parser = ArgumentParser(prog="unionfs", description="A union filesystem, layer store and "
                            "container runtime in user-space Python.")
    parser.add_argument("--version", action="version", version=f"unionfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in (family,) if family else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = _in_user_namespace(sys.argv[1:] if argv is None else argv, args)
        if code is None:
            code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except UserError as exc:
        print(f"unionfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"unionfs: error: {_describe_oserror(exc)}", file=sys.stderr)
        log.debug("details", exc_info=True)
        return 1


def _in_user_namespace(argv: list[str], args: argparse.Namespace) -> int | None:
    """A rootless user's store command runs again inside its user namespace (the layers keep
    their owners shifted into the subordinate range); None: run it here."""
    if os.geteuid() == 0:  # root's commands run where they are (and skip the runtime imports)
        return None
    try:
        from unionfs.runtime.idmap import reexec_in_userns
        from unionfs.runtime.state import running_server
    except ModuleNotFoundError:
        return None
    command = next((a for a in argv if not a.startswith("-")), None)
    server = None
    targets = getattr(args, "targets", None)
    if (command == "commit" and targets and len(targets) == 2 and not args.upper
            and os.geteuid() != 0):
        from unionfs.store.store import default_root

        store = getattr(args, "store", None) or str(default_root())
        server = running_server(store, targets[0])
    return reexec_in_userns(command, argv, server)


def _describe_oserror(exc: OSError) -> str:
    """``strerror: path`` with paths as text (a bytes path is decoded, never shown as b'')."""
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n]
    where = "".join(f": {n}" for n in names)
    return f"{exc.strerror or exc}{where}"


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``unionfs images | head``): end quietly, as a
    program killed by SIGPIPE would, without a message or a second error at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141
