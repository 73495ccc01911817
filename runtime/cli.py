"""The container commands: run, ps, stop, start, restart, rm, exec, top, logs, stats.

Parses, calls the runtime, prints. ``commit`` and ``inspect`` belong to the store's CLI,
which asks :mod:`runtime.state` about containers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from unionfs.errors import UserError
from unionfs.runtime import idmap, lifecycle, network, state, supervisor
from unionfs.runtime.enter import exec_in
from unionfs.runtime.imageconfig import apply_image_config
from unionfs.runtime.spec import (
    Limits,
    Spec,
    check_name,
    check_network,
    make_missing_sources,
    parse_cpu_shares,
    parse_cpus,
    parse_memory,
    parse_volume,
)


def open_store(args: argparse.Namespace) -> Any:
    """The layer store named by ``--store`` (or the default one)."""
    from unionfs.store import Store

    return Store.open(getattr(args, "store", None))


def register(sub: Any) -> None:
    """Add the container subcommands to the ``unionfs`` parser."""
    _add_run(sub)
    p = _parser(sub, "ps", "list containers, newest first")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    _add_ps_options(p)
    p.set_defaults(func=cmd_ps)
    for name, help_ in (("stop", "stop containers (SIGTERM, then SIGKILL)"),
                        ("restart", "stop and start containers again")):
        p = _parser(sub, name, help_)
        p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                       help="seconds to wait before SIGKILL (default 10)")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_stop if name == "stop" else cmd_restart)
    p = _parser(sub, "start", "start stopped containers (detached)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_start)
    p = _parser(sub, "rm", "remove containers and their uppers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_rm)
    _add_exec(sub)
    p = _parser(sub, "kill", "send a signal to containers (default SIGKILL)")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIG")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_kill)
    p = _parser(sub, "wait", "wait for containers to stop; print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_wait)
    p = _parser(sub, "rename", "rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(func=cmd_rename)
    p = _parser(sub, "top", "list a container's processes (ps -ef, or the ps options given)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS")
    p.set_defaults(func=cmd_top)
    p = _parser(sub, "stats", "cpu, memory and pids of running containers (streams)")
    p.add_argument("--no-stream", action="store_true", help="one sample, then exit")
    p.add_argument("containers", nargs="*", metavar="CONTAINER",
                   help="default: every running container")
    p.set_defaults(func=cmd_stats)
    p = _parser(sub, "logs", "print a container's output (stdout and stderr apart)")
    p.add_argument("-f", "--follow", action="store_true", help="keep following")
    p.add_argument("-n", "--tail", metavar="N", default="all",
                   help="only the last N lines (default all)")
    p.add_argument("--since", metavar="WHEN", help="only lines since a time or a duration "
                   "(2026-12-01T10:00:00Z, 10m, 30s)")
    p.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_logs)
    _add_more(sub)
    from unionfs.runtime import attach_cli

    attach_cli.register(sub, _parser)
    from unionfs.runtime import volumes

    volumes.register(sub, _parser)


def _parser(sub: Any, name: str, help_: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_, **kw)
    p.add_argument("--store", default=argparse.SUPPRESS, metavar="PATH",
                   help="the layer store (default $UNIONFS_STORE or ~/.local/share/unionfs)")
    return p


def _add_run(sub: Any) -> None:
    p = _parser(sub, "run", "run a command in a new container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--name", help="the container's name")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set (or pass on) an environment variable")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read environment variables from a file (K=V lines)")
    p.add_argument("--entrypoint", default=None, metavar="CMD",
                   help="replace the image's Entrypoint ('' clears it)")
    p.add_argument("-w", "--workdir", default="", metavar="DIR",
                   help="working directory (default: the image's, else /)")
    p.add_argument("-u", "--user", default="", metavar="UID[:GID]",
                   help="user (and group) to run as: numbers or names in the image")
    p.add_argument("-h", "--hostname", default="", metavar="NAME",
                   help="hostname (default: the short id)")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="HOST|NAME:CTR[:ro]",
                   help="bind-mount a host path (made if missing) or a named volume")
    p.add_argument("-m", "--memory", metavar="SIZE", help="memory limit, e.g. 64m, 2g")
    p.add_argument("-c", "--cpu-shares", type=int, metavar="N", help="relative cpu weight")
    p.add_argument("--cpus", metavar="N", help="cpu quota in cpus, e.g. 1.5")
    p.add_argument("--pids-limit", type=int, metavar="N", help="maximum number of processes")
    p.add_argument("--read-only", action="store_true", help="no upper: a read-only root")
    p.add_argument("--network", "--net", default="private", metavar="MODE",
                   help="private (default: own namespace through pasta), none or host")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOST:CTR[/PROTO]", help="publish a container port on the host")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish the image's exposed ports on free host ports")
    p.add_argument("--userns", action="store_true", help="a user namespace even as root")
    p.add_argument("--uidmap", action="append", default=[], metavar="CTR:HOST:COUNT",
                   help="uid map of the container's own user namespace (implies --userns)")
    p.add_argument("--gidmap", action="append", default=[], metavar="CTR:HOST:COUNT",
                   help="gid map of the container's own user namespace (implies --userns)")
    p.add_argument("--init", action="store_true", help="run a reaping init as PID 1")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q", metavar="KEYS",
                   help="the keys that detach from a -t container (default ctrl-p,ctrl-q)")
    _add_security(p)
    p.add_argument("image", metavar="IMAGE", help="image name[:tag] or id")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                   help="command and arguments (default: the image's Cmd)")
    p.set_defaults(func=cmd_run)


def _add_security(p: argparse.ArgumentParser) -> None:
    p.add_argument("--privileged", action="store_true",
                   help="all capabilities, no seccomp filter, device nodes may be made")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability (e.g. NET_ADMIN, or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability (e.g. CHOWN, or ALL)")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined or seccomp=PROFILE.json (docker's format)")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CTR]",
                   help="pass a host device node in")


def _security_fields(args: argparse.Namespace) -> dict[str, Any]:
    from unionfs.runtime import security

    return {"cap_add": security.check_caps(args.cap_add),
            "cap_drop": security.check_caps(args.cap_drop), "privileged": args.privileged,
            "seccomp": security.parse_security_opts(args.security_opt),
            "devices": [security.parse_device(d) for d in args.device]}


def _add_exec(sub: Any) -> None:
    p = _parser(sub, "exec", "run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-u", "--user", metavar="UID[:GID]")
    p.add_argument("-w", "--workdir", metavar="DIR")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=cmd_exec)


def spec_from_args(args: argparse.Namespace) -> Spec:
    """Check the options and build the container's spec (no side effects)."""
    limits = Limits(
        memory=parse_memory(args.memory) if args.memory is not None else None,
        cpu_shares=parse_cpu_shares(args.cpu_shares) if args.cpu_shares is not None else None,
        cpus=parse_cpus(args.cpus) if args.cpus is not None else None,
        pids=args.pids_limit,
    )
    if limits.pids is not None and limits.pids < 1:
        raise UserError(f"invalid --pids-limit {limits.pids}: must be at least 1")
    if (args.uidmap or args.gidmap) and os.geteuid() != 0:
        raise UserError("--uidmap/--gidmap need root: a rootless container maps you and your "
                        "subordinate range (/etc/subuid, /etc/subgid)")
    return Spec(
        image=args.image, command=list(args.command), name=check_name(args.name) if args.name
        else "", interactive=args.interactive, tty=args.tty, detach=args.detach,
        remove=args.rm, env=list(args.env), workdir=args.workdir, user=args.user,
        hostname=args.hostname, volumes=[parse_volume(v) for v in args.volume], limits=limits,
        read_only=args.read_only, network=check_network(args.network),
        userns=args.userns or bool(args.uidmap or args.gidmap), init=args.init,
        **_security_fields(args),
        ports=[network.parse_port(p) for p in args.publish],
        uidmap=idmap.check_root_maps([m for t in args.uidmap
                                      for m in idmap.parse_map(t, "--uidmap")], "--uidmap"),
        gidmap=idmap.check_root_maps([m for t in args.gidmap
                                      for m in idmap.parse_map(t, "--gidmap")], "--gidmap"),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``run``, with docker's exit codes: 125 when unionfs fails, 126 when the command cannot
    be invoked, 127 when it is not found, otherwise the container's status."""
    try:
        return _run(args)
    except UserError as exc:
        if exc.exit_code not in (126, 127) and exc.exit_code < 128:
            exc.exit_code = 125
        raise


def _run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if spec.tty and not sys.stdin.isatty() and not spec.detach and spec.interactive:
        raise UserError("the input device is not a TTY")
    store = open_store(args)
    from unionfs.store.registry import ensure_image  # pulls an image it does not have

    image = ensure_image(store, spec.image)
    spec = apply_image_config(spec, image.config, entrypoint=args.entrypoint,
                              env_files=args.env_file)
    _prepare_network(spec, args, image)
    if os.geteuid() != 0 and not idmap.rootless_maps().full:
        print(idmap.one_id_warning(), file=sys.stderr)
    from unionfs.runtime import attach, attach_cli

    keys = attach.parse_detach_keys(args.detach_keys)
    make_missing_sources(spec.volumes)
    from unionfs.runtime import volumes

    volumes.resolve(store, spec.volumes)  # named volumes: created when missing
    container = state.create(store, spec, image)
    try:
        if spec.tty and not spec.detach:
            return attach_cli.run_in_terminal(container, keys)
        if spec.detach:
            supervisor.run_detached(container)
            print(container.id)
            return 0
        return supervisor.run_attached(container)
    except supervisor.StartFailed:
        supervisor.discard(container)
        raise
    except BaseException:
        if container.state().get("status") == "created":
            supervisor.discard(container)
        raise


def _prepare_network(spec: Spec, args: argparse.Namespace, image: Any) -> None:
    """Check -p/-P against the network mode and pick the host ports now (ps shows them)."""
    if args.publish_all:
        spec.ports += network.exposed_ports(image.config)
    if spec.ports and spec.network != "private":
        raise UserError(f"published ports need the private network, not --network "
                        f"{spec.network}")
    spec.ports = network.claim_ports(spec.ports)


def _add_ps_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--last", type=int, default=-1, metavar="N",
                   help="the N last created containers (any state)")
    p.add_argument("-l", "--latest", action="store_true",
                   help="the last created container (any state)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="status=, name=, id=, label=, ancestor=, exited=, before=, since=, "
                   "network=")
    p.add_argument("--format", metavar="TEMPLATE",
                   help="'table TEMPLATE', 'json' or a Go template ({{.ID}} {{.Names}} ...)")
    p.add_argument("--no-trunc", action="store_true", help="full ids and commands")


def cmd_ps(args: argparse.Namespace) -> int:
    from unionfs.runtime import ps_format

    store = open_store(args)
    filters = ps_format.parse_filters(args.filter)
    for c in state.all_containers(store):
        if c.broken:
            print(f"unionfs: warning: container {c.id[:12]} is broken ({c.broken}); "
                  f"remove it with: unionfs rm -f {c.id[:12]}", file=sys.stderr)
    rows = ps_format.select(store, show_all=args.all, last=1 if args.latest else args.last,
                            filters=filters, trunc=not args.no_trunc)
    for line in ps_format.format_rows(rows, args.format, args.quiet):
        print(line)
    return 0


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _each(args: argparse.Namespace, action: Any) -> int:
    store = open_store(args)
    failed = 0
    for ref in args.containers:
        try:
            action(state.get(store, ref))
            print(ref)
        except UserError as exc:
            print(f"unionfs: error: {exc}", file=sys.stderr)
            failed = exc.exit_code
    return failed


def cmd_stop(args: argparse.Namespace) -> int:
    return _each(args, lambda c: lifecycle.stop(c, args.time))


def cmd_start(args: argparse.Namespace) -> int:
    return _each(args, lifecycle.start)


def cmd_restart(args: argparse.Namespace) -> int:
    def restart(c: state.Container) -> None:
        lifecycle.stop(c, args.time)
        lifecycle.start(c)
    return _each(args, restart)


def cmd_rm(args: argparse.Namespace) -> int:
    return _each(args, lambda c: lifecycle.remove(c, args.force))


def cmd_kill(args: argparse.Namespace) -> int:
    signum = lifecycle.parse_signal(args.signal)
    return _each(args, lambda c: lifecycle.kill(c, signum))


def cmd_wait(args: argparse.Namespace) -> int:
    store = open_store(args)
    for ref in args.containers:
        print(lifecycle.wait(state.get(store, ref)), flush=True)
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    store = open_store(args)
    lifecycle.rename(store, state.get(store, args.container), args.new_name)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise UserError("exec needs a command to run")
    container = state.get(open_store(args), args.container)
    _refuse_paused(container)
    return exec_in(container, list(args.command), interactive=args.interactive, tty=args.tty,
                   user=args.user, workdir=args.workdir, env=list(args.env))


def cmd_top(args: argparse.Namespace) -> int:
    from unionfs.runtime.ps_format import align
    from unionfs.runtime.top import top

    titles, rows = top(state.get(open_store(args), args.container), list(args.ps_args))
    for line in align(["\t".join(r) for r in [titles, *rows]], minwidth=20):
        print(line)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from unionfs.runtime import statsview

    store = open_store(args)
    named = [state.get(store, ref) for ref in args.containers]
    for c in named:
        lifecycle.stats(c)  # a one-line error now for a stopped or cgroup-less container

    def pick() -> list[state.Container]:
        return named or [c for c in state.all_containers(store) if c.running()]

    try:
        statsview.show(pick, _table, _size, stream=not args.no_stream)
    except KeyboardInterrupt:
        return 0
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{n}B"
        value /= 1024
    return f"{n}B"


def cmd_logs(args: argparse.Namespace) -> int:
    if args.tail != "all" and not args.tail.isdigit():
        raise UserError(f"invalid value for --tail: {args.tail!r} (a number or all)")
    lifecycle.logs(state.get(open_store(args), args.container), follow=args.follow,
                   tail=None if args.tail == "all" else int(args.tail), since=args.since,
                   timestamps=args.timestamps)
    return 0


def _refuse_paused(container: state.Container) -> None:
    """exec would hang in a frozen cgroup: docker's error instead."""
    from unionfs.errors import OperationFailed
    from unionfs.runtime.pause import is_paused

    if is_paused(container):
        raise OperationFailed(f"Container {container.name} is paused, unpause the container "
                              "before exec")


def _add_more(sub: Any) -> None:
    """pause, unpause, cp, export, container prune, image prune (each in its own module)."""
    from unionfs.runtime import cp, export, pause, prune

    for name, action, help_ in (("pause", pause.pause, "freeze every process of containers"),
                                ("unpause", pause.unpause, "thaw paused containers")):
        p = _parser(sub, name, help_)
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=lambda args, act=action: _each(args, act))
    for module in (cp, export, prune):
        module.register(sub, _parser)
