"""What watching requests costs: with the hook compiled out, present but idle, and in use
(``-o metrics``, ``-o trace``, ``-o fail`` with a rule that never fires).

``python -m unionfs.benchmarks.hooks`` measures two things, each variant interleaved with the others
in the same run so machine noise falls on all of them alike:

* **wrapper**: what the request wrapper itself costs: a handler that does nothing, wrapped by
  ``ops._errors``, awaited in a trio loop in this process, in batches; the minimum batch per
  variant is the time with the least interference from other processes ("compiled out
  again", a second copy of the same code, shows how far two identical variants differ);
* **round trip**: ``fstat`` of an open file on a mount with ``attr_timeout=0`` (one GETATTR
  request each): all five servers mounted at once, one client alternating batches between
  them; median and minimum per batch.

"compiled out" is ``unionfs/fuse/ops.py`` loaded from its source with the two lines of the
hook removed. The round trip needs root (FUSE mounts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

VARIANTS = ("compiled-out", "idle", "metrics", "trace", "fail")
HOOK_LINES = 2
BATCH = 2000
CLIENT = """
import json, os, sys, time
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[3:]]
batches, batch = int(sys.argv[1]), int(sys.argv[2])
times = [[] for _ in fds]
for fd in fds:
    for _ in range(batch):
        os.fstat(fd)
for b in range(batches):
    for i in [(b + k) % len(fds) for k in range(len(fds))]:
        fd = fds[i]
        start = time.perf_counter()
        for _ in range(batch):
            os.fstat(fd)
        times[i].append((time.perf_counter() - start) / batch)
print(json.dumps(times))
"""


def ops_without_hook(name: str = "unionfs.fuse.ops") -> types.ModuleType:
    """Load ``unionfs.fuse.ops`` (as module ``name``) with the hook's lines cut out."""
    import unionfs.fuse

    path = Path(unionfs.fuse.__file__).with_name("ops.py")
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "if ops.watch is not None" in line)
    cut = lines[start:start + HOOK_LINES]
    if "ops.watch.around" not in cut[-1]:
        raise SystemExit(f"unionfs.benchmarks.hooks: the hook in {path} changed; update HOOK_LINES")
    source = "".join(lines[:start] + lines[start + HOOK_LINES:])
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def serve(variant: str, argv: list[str]) -> int:
    """The server of one variant (``python -m unionfs.benchmarks.hooks serve VARIANT ...``)."""
    if variant == "compiled-out":
        ops_without_hook()
    from unionfs.cli import main

    return main(["mount", "--foreground", *argv])


def mount(variant: str, base: Path) -> tuple[subprocess.Popen[bytes], Path]:
    lower, upper, mnt = base / "lower", base / "upper", base / "mnt"
    for d in (lower, upper, mnt):
        d.mkdir(exist_ok=True)
    (lower / "f").write_text("x")
    opts = "attr_timeout=0,entry_timeout=0"
    opts += {"metrics": ",metrics", "trace": f",trace={base}/trace.log",
             "fail": ",fail=rename:EIO:path=never-such-a-name"}.get(variant, "")
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "unionfs.benchmarks.hooks", "serve", variant, "--ready-fd",
            str(write_fd), "-o", opts, str(lower), str(upper), str(mnt)]
    proc = subprocess.Popen(argv, pass_fds=(write_fd,), stderr=subprocess.DEVNULL,
                            start_new_session=True)
    os.close(write_fd)
    try:
        if os.read(read_fd, 1) != b"1":
            raise SystemExit(f"unionfs.benchmarks.hooks: the {variant} server did not mount")
    finally:
        os.close(read_fd)
    return proc, mnt


def round_trip(batches: int) -> dict[str, list[float]]:
    """Seconds per getattr round trip, per batch, of every variant (mounted side by side)."""
    from unionfs import api

    with tempfile.TemporaryDirectory(prefix="unionfs-hooks-") as tmp:
        servers = []
        try:
            for variant in VARIANTS:
                base = Path(tmp, variant)
                base.mkdir()
                servers.append(mount(variant, base))
            before = [api.server_stats(mnt)["requests"].get("getattr", 0) for _, mnt in servers]
            out = subprocess.run([sys.executable, "-c", CLIENT, str(batches), str(BATCH),
                                  *(str(mnt / "f") for _, mnt in servers)],
                                 capture_output=True, text=True, check=True)
            for (_, mnt), count in zip(servers, before, strict=True):
                sent = api.server_stats(mnt)["requests"].get("getattr", 0) - count
                if sent < batches * BATCH:  # answered from the kernel's cache: no round trip
                    raise SystemExit(f"benchmarks.hooks: only {sent} getattrs reached {mnt}")
        finally:
            for proc, mnt in servers:
                api.unmount(mnt)
                proc.wait(30)
    return dict(zip(VARIANTS, json.loads(out.stdout), strict=True))


def wrapper(batches: int, batch: int = 20000) -> dict[str, list[float]]:
    """Seconds per call of a request that does nothing, through the request wrapper, in this
    process, per batch, of every variant: what the wrapper itself costs a request."""
    import trio

    from unionfs.engine.union import StackConfig, Union
    from unionfs.fuse import ops as real
    from unionfs.fuse import watch

    bare = ops_without_hook("unionfs.benchmarks._ops_without_hook")
    with tempfile.TemporaryDirectory(prefix="unionfs-hooks-") as tmp:
        union = Union(StackConfig(lowers=[tmp]))
        handlers = {"compiled-out": _with_nop(bare)(union),
                    "compiled-out again":
                        _with_nop(ops_without_hook("unionfs.benchmarks._again"))(union)}
        for variant in VARIANTS[1:]:
            handlers[variant] = ops = _with_nop(real)(union)
            watch.install(ops, metrics=variant == "metrics",
                          trace=f"{tmp}/trace.log" if variant == "trace" else None,
                          fail=["rename:EIO:path=never"] if variant == "fail" else [],
                          mountpoint="/bench")
        names = list(handlers)
        times: dict[str, list[float]] = {v: [] for v in names}

        async def loop() -> None:
            for b in range(batches):
                for k in range(len(names)):
                    variant = names[(b + k) % len(names)]
                    ops = handlers[variant]
                    request = ops.getattr
                    start = time.perf_counter()
                    for _ in range(batch):
                        await request(1, None)
                    if ops.watch is not None and ops.watch.trace is not None:
                        ops.watch.trace.flush()  # its thread's work, charged to the trace
                    times[variant].append((time.perf_counter() - start) / batch)

        trio.run(loop)
        for ops in handlers.values():
            watch.close(ops)
        union.close()
    return times


def _with_nop(module: types.ModuleType) -> Any:
    """The module's UnionOperations with a getattr that does nothing (the wrapper's own cost)."""

    async def getattr(self: Any, inode: int, ctx: object) -> None:
        return None

    return type("NopOperations", (module.UnionOperations,),
                {"getattr": module._errors(getattr)})


def report(title: str, results: dict[str, list[float]]) -> str:
    base_min = min(results["compiled-out"])
    base_med = statistics.median(results["compiled-out"])
    lines = [title, "", "| variant | µs, min | vs compiled out | µs, median | vs compiled out |",
             "|---|---:|---:|---:|---:|"]
    for variant, times in results.items():
        low, med = min(times), statistics.median(times)
        lines.append(f"| {variant} | {low * 1e6:.2f} | {100 * (low / base_min - 1):+.1f}% | "
                     f"{med * 1e6:.2f} | {100 * (med / base_med - 1):+.1f}% |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="python -m unionfs.benchmarks.hooks")
    parser.add_argument("--batches", type=int, default=30, help="batches per variant")
    parser.add_argument("--only", choices=("wrapper", "round-trip"))
    parser.add_argument("--json", action="store_true", help="print every batch as JSON too")
    args = parser.parse_args(argv)
    results = {}
    if args.only != "round-trip":
        results["wrapper"] = times = wrapper(args.batches)
        print(report(f"wrapper: a request that does nothing, in-process, {args.batches} "
                     "batches of 20000", times) + "\n")
    if args.only != "wrapper":
        results["round_trip"] = times = round_trip(args.batches)
        print(report(f"round trip: fstat on the mount (one GETATTR each), {args.batches} "
                     f"batches of {BATCH}", times))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
