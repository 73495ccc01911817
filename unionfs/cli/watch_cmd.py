"""``unionfs watch`` (a live union's requests, like top) and ``unionfs fail`` (faults on purpose).

(``top`` and ``stats`` are the container commands, as in docker.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from unionfs import api
from unionfs.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser(
        "watch", help="watch the requests of a live union (top for a mount)",
        description="Requests by type (counts, rates, latency percentiles, errors), bytes "
        "read and written, copy-ups, cache hits, threads and the slowest recent requests of "
        "the union at MOUNT, refreshed every INTERVAL seconds. The first look attaches the "
        "server's accounting: latencies and bytes count from then on (from the mount with "
        "-o metrics); request counts count from the mount.",
    )
    t.add_argument("mountpoint")
    t.add_argument("--json", action="store_true",
                   help="print samples as JSON lines (one sample unless --interval/--count)")
    t.add_argument("-n", "--interval", type=_positive, help="seconds between samples "
                   "(default 1)")
    t.add_argument("-c", "--count", type=int, help="stop after COUNT samples")
    t.set_defaults(func=watch_command)

    f = sub.add_parser(
        "fail", help="make chosen requests of a live union fail or wait",
        description="Fault rules REQUEST:ERRNO[:KEY=VALUE...] on a live union, e.g. "
        "write:EIO:path=*.db:after=3, create:ENOSPC:after_bytes=10M, fsync:EIO:every=5, "
        "read:EIO:path=data/*:probability=0.01:seed=1, lookup:delay=50ms. Keys: path=GLOB, "
        "after=N, every=N, probability=P, seed=N, after_bytes=SIZE, times=N, delay=TIME. "
        "`clear` removes rules (all, or the IDs given) and releases requests in a delay.",
    )
    f.add_argument("mountpoint")
    f.add_argument("action", choices=("add", "list", "clear"))
    f.add_argument("items", nargs="*", metavar="RULE|ID")
    f.add_argument("--json", action="store_true", help="print the reply as JSON")
    f.set_defaults(func=fail_command)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


# ---- watch --------------------------------------------------------------------------------

def watch_command(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    if args.json:
        return _watch_json(args)
    return _watch_live(args)


def _watch_json(args: argparse.Namespace) -> int:
    sample = api.server_metrics(args.mountpoint)
    if args.interval is None and args.count is None:
        print(json.dumps(sample))
        return 0
    interval = args.interval or 1.0
    remaining = args.count
    while remaining is None or remaining > 0:
        time.sleep(interval)
        previous, sample = sample, api.server_metrics(args.mountpoint)
        print(json.dumps({**sample, "rates": rates(previous, sample)}), flush=True)
        if remaining is not None:
            remaining -= 1
    return 0


def rates(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Per-second rates between two samples: requests by type, bytes, copy-ups."""
    seconds = max(current["time"] - previous["time"], 1e-9)
    before = previous["requests_since_mount"]
    by_type = {name: (count - before.get(name, 0)) / seconds
               for name, count in current["requests_since_mount"].items()}
    return {
        "seconds": seconds,
        "requests": {k: round(v, 1) for k, v in sorted(by_type.items()) if v},
        "requests_total": round(sum(by_type.values()), 1),
        "bytes_read": (current["bytes"]["read"] - previous["bytes"]["read"]) / seconds,
        "bytes_written": (current["bytes"]["written"] - previous["bytes"]["written"]) / seconds,
        "copy_ups": (current["copy_ups"]["count"] - previous["copy_ups"]["count"]) / seconds,
    }


def _watch_live(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    interval = args.interval or 1.0
    console = Console()
    sample = api.server_metrics(args.mountpoint)
    shown = 0
    with Live(render(args.mountpoint, sample, None), console=console, screen=console.is_terminal,
              auto_refresh=False) as live:
        while args.count is None or shown < args.count:
            time.sleep(interval)
            previous, sample = sample, api.server_metrics(args.mountpoint)
            live.update(render(args.mountpoint, sample, rates(previous, sample)), refresh=True)
            shown += 1
    return 0


def render(mountpoint: str, sample: dict[str, Any], rate: dict[str, Any] | None) -> Any:
    """One screen of ``unionfs watch``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    per_second = rate["requests"] if rate else {}
    head = Text()
    head.append(f"unionfs watch {mountpoint}", style="bold")
    head.append(f"   accounting for {_since(sample)}\n")
    head.append(_summary(sample, rate))
    table = Table(title="requests", title_justify="left", expand=False)
    for column in ("request", "count", "/s", "errors", "p50 µs", "p90 µs", "p99 µs", "max µs"):
        table.add_column(column, justify="left" if column == "request" else "right")
    timed = sample["requests"]
    counts = sample["requests_since_mount"]
    for name in sorted(counts, key=lambda n: -counts[n]):
        t = timed.get(name, {})
        table.add_row(name, str(counts[name]), _num(per_second.get(name, 0)),
                      str(t.get("errors", "")), *(_num(t.get(k)) for k in (
                          "p50_us", "p90_us", "p99_us", "max_us")))
    slow = Table(title="slowest recent requests", title_justify="left")
    for column in ("request", "µs", "result", "node and path"):
        slow.add_column(column, justify="right" if column == "µs" else "left")
    for item in sample["slowest"]:
        slow.add_row(item["request"], _num(item["us"]), _errname(item["result"]),
                     item["target"])
    return Group(head, table, slow)


def _summary(sample: dict[str, Any], rate: dict[str, Any] | None) -> str:
    b, cache, threads = sample["bytes"], sample["cache"], sample["threads"]
    copy = sample["copy_ups"]
    lines = [f"read {_bytes(b['read'])}  written {_bytes(b['written'])}  "
             f"copy-ups {copy['count']} ({_bytes(copy['bytes'])})"]
    if rate:
        lines.append(f"now: {rate['requests_total']:.0f} req/s  read "
                     f"{_bytes(rate['bytes_read'])}/s  written {_bytes(rate['bytes_written'])}/s"
                     f"  copy-ups {rate['copy_ups']:.1f}/s")
    lines.append(f"lookups {cache['lookups']} ({_pct(cache['lookups_from_view'], cache['lookups'])}"
                 f" from the merged view, {cache['negative_entries']} negative)  readdirs "
                 f"{cache['readdirs']} ({_pct(cache['readdirs_from_view'], cache['readdirs'])} "
                 f"from the view)  views built {cache['views_built']}")
    lines.append(f"threads: {threads['workers']} workers, {threads['busy']} busy, "
                 f"{threads['queued']} queued; requests in flight {threads['requests_in_flight']}")
    return "\n".join(lines) + "\n"


def _since(sample: dict[str, Any]) -> str:
    seconds = max(0, int(sample["time"] - sample["since"]))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _errname(code: int) -> str:
    import errno

    return "OK" if code == 0 else errno.errorcode.get(code, str(code))


# ---- fail -------------------------------------------------------------------------------

def fail_command(args: argparse.Namespace) -> int:
    if args.action == "add":
        if not args.items:
            raise UserError("fail add: give at least one RULE")
        reply: Any = api.add_fault_rules(args.mountpoint, args.items)
        lines = [f"added rule {r['id']}: {r['rule']}" for r in reply]
    elif args.action == "list":
        if args.items:
            raise UserError("fail list takes no arguments")
        reply = api.fault_rules(args.mountpoint)
        lines = [f"{r['id']:>3}  {r['rule']}  (matched {r['matched']}, injected "
                 f"{r['injected']})" for r in reply["rules"]] or ["no fault rules"]
        if reply["delayed"]:
            lines.append(f"{reply['delayed']} request(s) waiting in a delay")
    else:
        try:
            ids = [int(i) for i in args.items] if args.items else None
        except ValueError:
            raise UserError("fail clear: rule IDs are numbers (see `unionfs fail MOUNT "
                            "list`)") from None
        reply = {"removed": api.clear_fault_rules(args.mountpoint, ids)}
        lines = [f"removed {reply['removed']} rule(s)"]
    print(json.dumps(reply) if args.json else "\n".join(lines), file=sys.stdout)
    return 0
