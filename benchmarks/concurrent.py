"""Workloads of several processes at once, run as a child process in the mount.

``python concurrent.py latency MODE SIZE_MIB PROBE...`` starts one process doing slow work
(``copyup``: append a line to ``big.bin``, which copies the whole file up; ``fsync``: write
SIZE_MIB MiB to a new file and fsync it; ``idle``: nothing, for a second, the baseline) and,
while it runs, times probes on an unrelated
tree: an ``lstat`` of a file not looked up before, and every tenth probe an ``ls -l`` (list,
then lstat every entry) of a directory not listed before. Every probe is cold: a file whose
directory a listing already looked up is not probed (:func:`cold_probes`), so the probes
end after about 1000 on the full tree. Probes start every :data:`PROBE_INTERVAL` seconds (or
as soon as the previous one ends, if it took longer), so that they cover the whole of the
slow work on every target: back to back, a fast target ran out of probes after the first
third of a copy-up and never met its fsync. It prints
``{"seconds": p99, "p50": ..., "p99": ..., "probes": N, "work": seconds of the slow work,
"probed": seconds the probes covered}``.

``python concurrent.py parallel|serial N KIND ARGS...`` does N pieces of work (``read``: the
N parts of ``big.bin``, cold; ``find``: ``find`` over N groups of directories; ``cp``: ``cp -a``
of N groups of directories to ``cp-<i>`` in the mount) at once, or one after the other, and
prints ``{"seconds": ...}``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

PROBE_EVERY_LS = 10
# About 1000 cold probes (the full tree) 4 ms apart outlast the kernel's 1 GiB copy-up (3 s)
# or write + fsync (2.2 s). Until 2026-12-02 they were 1 ms apart and a file listed by an
# ``ls -l`` probe could be statted later, from the kernel's cache: a target that answered
# fast got thousands of such free probes (0.0 ms each), and they lowered its p99.
PROBE_INTERVAL = 0.004
BUF = 1 << 20


def slow_work(mode: str, size_mib: int, ready: int) -> None:
    """The process whose slow I/O must not delay the probes."""
    os.write(ready, b"1")
    if mode == "idle":  # the baseline: the same probes, nothing else going on
        time.sleep(1.0)
        return
    if mode == "copyup":
        fd = os.open("big.bin", os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"appended\n")
    else:
        fd = os.open("latency-written.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        block = b"\1" * BUF
        for _ in range(size_mib):
            os.write(fd, block)
        os.fsync(fd)
    os.close(fd)


def cold_probes(files: list[str]) -> Iterator[tuple[str, str]]:
    """``("ls", directory)`` every :data:`PROBE_EVERY_LS`-th probe (from the last directory
    down), else ``("stat", file)``: never a file in a directory listed before (the listing
    looked it up); they end when no cold file is left."""
    dirs = sorted({os.path.dirname(f) for f in files})
    listed: set[str] = set()
    unprobed = iter(files)
    probe = 0
    while True:
        if probe % PROBE_EVERY_LS == 0 and dirs:
            directory = dirs.pop()
            listed.add(directory)
            yield "ls", directory
        else:
            name = next((f for f in unprobed if os.path.dirname(f) not in listed), None)
            if name is None:
                return
            yield "stat", name
        probe += 1


def latency(mode: str, size_mib: int, files: list[str]) -> dict[str, float]:
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        slow_work(mode, size_mib, write_fd)
        os._exit(0)
    os.close(write_fd)
    os.read(read_fd, 1)
    os.close(read_fd)
    times: list[float] = []
    done = False
    probes = cold_probes(files)
    began = next_at = time.perf_counter()
    while not done:
        start = time.perf_counter()
        if start < next_at:
            time.sleep(next_at - start)
            start = time.perf_counter()
        next_at = start + PROBE_INTERVAL
        kind, path = next(probes, ("", ""))
        if kind == "ls":
            for name in os.listdir(path):
                os.lstat(os.path.join(path, name))
        elif kind == "stat":
            os.lstat(path)
        else:
            break
        times.append(time.perf_counter() - start)
        done = os.waitpid(child, os.WNOHANG) != (0, 0)
    probed = time.perf_counter() - began
    if not done:
        os.waitpid(child, 0)
    work = time.perf_counter() - began
    # "inclusive": the p99 of a few probes lies between the two slowest, never beyond.
    cuts = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else (
        times * 99)
    return {"seconds": cuts[98], "p50": statistics.median(times), "p99": cuts[98],
            "max": max(times), "probes": len(times), "work": work, "probed": probed}


def read_part(index: int, parts: int) -> list[str]:
    size = os.stat("big.bin").st_size
    part = size // parts
    return ["dd", "if=big.bin", "of=/dev/null", "bs=1M", "iflag=skip_bytes,count_bytes",
            f"skip={index * part}", f"count={part}", "status=none"]


def find_part(index: int, parts: int, dirs: list[str]) -> list[str]:
    return ["find", *dirs[index::parts]]


def copy_part(index: int, parts: int, dirs: list[str]) -> list[str]:
    target = f"cp-{index}"
    os.mkdir(target)
    return ["cp", "-a", *dirs[index::parts], target]


def pieces(parts: int, kind: str, dirs: list[str]) -> list[list[str]]:
    if kind == "read":
        return [read_part(i, parts) for i in range(parts)]
    if kind == "cp":
        return [copy_part(i, parts, dirs) for i in range(parts)]
    return [find_part(i, parts, dirs) for i in range(parts)]


def run_pieces(argvs: list[list[str]], at_once: bool) -> None:
    out = subprocess.DEVNULL
    if at_once:
        procs = [subprocess.Popen(argv, stdout=out) for argv in argvs]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(argv, stdout=out, check=False).returncode for argv in argvs]
    if any(codes):
        raise SystemExit(f"a piece failed: {codes}")


def main(argv: list[str]) -> int:
    what = argv[0]
    if what == "latency":
        result = latency(argv[1], int(argv[2]), argv[3:])
    else:
        argvs = pieces(int(argv[1]), argv[2], argv[3:])
        start = time.perf_counter()
        run_pieces(argvs, at_once=what == "parallel")
        result = {"seconds": time.perf_counter() - start}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
