"""The ``attach`` command and ``run -t``'s client side (runtime.attach holds the protocol,
the supervisor's server and the terminal client)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from unionfs.errors import OperationFailed
from unionfs.runtime import lifecycle, logs, relay, state, supervisor
from unionfs.runtime.attach import DEFAULT_DETACH_KEYS, attach_terminal, connect, parse_detach_keys


def run_in_terminal(container: state.Container, keys: bytes) -> int:
    """``run -t`` (not detached): start the supervisor as a daemon that holds the terminal,
    then attach to it here; the container's exit code, or 0 when the user detaches."""
    with supervisor.deferred_signals() as received:  # a SIGTERM now still ends the container
        supervisor.run_detached(container, hold_output=True)
        sock = connect(container)
    pid1 = int(container.state().get("pid") or 0)
    for signum in received if pid1 > 0 else ():
        with contextlib.suppress(OSError):
            os.kill(pid1, signum)
    return attach_terminal(container, sock, keys=keys, interactive=container.spec.interactive)


def attach(container: state.Container, keys: bytes) -> int:
    """``attach``: to the terminal of a ``-t`` container, else to its output (stdout and
    stderr, from now on) until it stops; the container's exit code."""
    if container.broken or not container.running():
        raise OperationFailed("You cannot attach to a stopped container, start it first")
    spec = container.spec
    if spec.tty:
        return attach_terminal(container, connect(container), keys=keys,
                               interactive=spec.interactive)
    with relay.forwarding(int(container.state()["pid"])):
        logs.show(container.log_path, tail=0, since=None, timestamps=False, follow=True,
                  running=container.running)
        return lifecycle.wait(container) if container.dir.exists() else 0


def register(sub: Any, parser: Any) -> None:
    """Add ``attach`` to the ``unionfs`` subcommands; ``parser(sub, name, help)`` makes one."""
    p = parser(sub, "attach", "attach to a running container's terminal or output")
    p.add_argument("--detach-keys", default=DEFAULT_DETACH_KEYS, metavar="KEYS",
                   help="the keys that detach (default ctrl-p,ctrl-q)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_attach)


def cmd_attach(args: Any) -> int:
    """``unionfs attach [--detach-keys KEYS] CONTAINER``."""
    from unionfs.store import Store

    keys = parse_detach_keys(args.detach_keys)
    store = Store.open(getattr(args, "store", None))
    return attach(state.get(store, args.container), keys)
