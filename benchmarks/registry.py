"""Push and pull of a large image through a registry on loopback, beside ``skopeo copy``.

    .venv/bin/python -m unionfs.benchmarks.registry [--size-mb 300] [--rounds 3] [--out DIR]
    .venv/bin/python -m unionfs.benchmarks.registry --rootfs DIR   # a real base, one layer

``--rootfs`` imports that root filesystem (e.g. a debootstrapped Debian, as the Debian base
image is) as the image instead of generating one.

A generated image (``--size-mb`` of files shaped like a distribution's: text that compresses
about 4x, binaries that hardly compress, many small files, in three layers) is imported into
a store and saved as an OCI archive. Debian's ``docker-registry`` serves on 127.0.0.1 with
storage on the same disk; each round starts a fresh registry, so every first push sends
every blob:

- ``unionfs push`` (gzip, and zstd) from the store, then the same image to another
  repository (its blobs are mounted, not sent); ``skopeo copy oci-archive: -> docker://``
  (``--dest-compress``, gzip) from the archive;
- ``unionfs pull`` into an empty store (fetch, check digests, decompress, check entries,
  extract into layers); ``skopeo copy docker:// -> oci-archive:`` (fetch and write the
  compressed blobs into an archive: no decompression, no extraction).

So skopeo's pull does less work than ours: it is the floor for moving the bytes. Medians of
wall-clock seconds are printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def registry(workdir: Path) -> Iterator[str]:
    """``docker-registry serve`` on a free loopback port; yields ``127.0.0.1:PORT``."""
    host = f"127.0.0.1:{_free_port()}"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.yml"
    config.write_text("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {workdir / 'registry-data'}\n  delete:\n"
                      f"    enabled: true\nhttp:\n  addr: {host}\n")
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with suppress(urllib.error.HTTPError):
                    urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_rootfs(root: Path, size_mb: int, seed: int = 1) -> list[Path]:
    """Three layer directories totalling about ``size_mb`` MiB (see the module doc)."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
             for _ in range(2000)]
    layers = [root / f"layer{i}" for i in range(3)]
    shares = (0.6, 0.3, 0.1)
    for layer, share in zip(layers, shares, strict=True):
        budget = int(size_mb * MIB * share)
        n = 0
        while budget > 0:
            kind = n % 10
            d = layer / "usr" / ("lib" if kind < 4 else "share") / f"pkg{n // 50:03d}"
            d.mkdir(parents=True, exist_ok=True)
            if kind < 4:  # a binary: barely compresses
                size = min(budget, rng.randint(64 << 10, 2 * MIB))
                data = rng.randbytes(size)
            else:  # text and small files: about 4x
                size = min(budget, rng.randint(1 << 10, 256 << 10))
                text = b" ".join(rng.choices(words, k=size // 6 + 1))
                data = text[:size]
            (d / f"f{n:05d}").write_bytes(data)
            budget -= size
            n += 1
    return layers


def _run(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {res.stderr.strip()[-400:]}")
    return elapsed


def _unionfs(*args: str) -> list[str]:
    return [sys.executable, "-m", "unionfs", *args]


def prepare(work: Path, size_mb: int, rootfs: Path | None = None) -> tuple[Path, Path, int]:
    """(store with image 'big:1', its OCI archive, image bytes)."""
    store = work / "store"
    if rootfs is not None:
        _run(_unionfs("import", str(rootfs), "--tag", "big:1", "--store", str(store)))
    else:
        layers = make_rootfs(work / "rootfs", size_mb)
        _run(_unionfs("import", str(layers[0]), "--tag", "big:0", "--store", str(store)))
        parent = "big:0"
        for i, layer in enumerate(layers[1:], 1):
            _run(_unionfs("commit", "--upper", str(layer), "--parent", parent, f"big:{i}",
                          "--store", str(store)))
            parent = f"big:{i}"
        _run(_unionfs("tag", parent, "big:1", "--store", str(store)))
    archive = work / "big.oci.tar"
    _run(_unionfs("save", "big:1", "-o", str(archive), "--store", str(store)))
    return store, archive, archive.stat().st_size


Step = Callable[[str, int], float]


def steps(work: Path, store: Path, archive: Path) -> dict[str, Step]:
    """Each measured step, given the registry host and the round number."""
    env = {**os.environ, "UNIONFS_REGISTRY_LOOPBACK_ONLY": "1"}

    def fresh(name: str) -> Path:
        path = work / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    return {
        "unionfs push (gzip)": lambda host, r: _run(_unionfs(
            "push", "big:1", f"{host}/u/gz{r}:1", "-q", "--store", str(store)), env),
        "unionfs push (zstd)": lambda host, r: _run(_unionfs(
            "push", "big:1", f"{host}/u/zst{r}:1", "--compression", "zstd", "-q",
            "--store", str(store)), env),
        "unionfs push again, to another repository (blobs mounted)": lambda host, r: _run(
            _unionfs("push", "big:1", f"{host}/u2/gz{r}:1", "-q", "--store", str(store)), env),
        "skopeo copy oci-archive -> registry (gzip)": lambda host, r: _run([
            "skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-compress",
            f"oci-archive:{archive}", f"docker://{host}/s/gz{r}:1"]),
        "unionfs pull (gzip) into an empty store": lambda host, r: _run(_unionfs(
            "pull", f"{host}/u/gz{r}:1", "-q", "--store", str(fresh("pulled"))), env),
        "unionfs pull (zstd) into an empty store": lambda host, r: _run(_unionfs(
            "pull", f"{host}/u/zst{r}:1", "-q", "--store", str(fresh("pulled"))), env),
        "skopeo copy registry -> oci-archive (gzip)": lambda host, r: _run([
            "skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{host}/s/gz{r}:1",
            f"oci-archive:{fresh('skopeo-pulled.tar')}"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unionfs.benchmarks.registry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=300)
    p.add_argument("--rootfs", type=Path, default=None,
                   help="import this root filesystem as the image instead of generating one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="unionfs-bench-registry-", dir=args.workdir))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a plain kill too
    try:
        print(f"preparing {args.rootfs or f'a {args.size_mb} MiB image'} in {work}",
              file=sys.stderr)
        store, archive, nbytes = prepare(work, args.size_mb, args.rootfs)
        times: dict[str, list[float]] = {}
        todo = steps(work, store, archive)
        for r in range(args.rounds):
            # a fresh registry each round: every push really sends its blobs
            with registry(work / f"round{r}") as host:
                for name, step in todo.items():
                    times.setdefault(name, []).append(step(host, r))
                    print(f"round {r + 1}: {name}: {times[name][-1]:.2f} s", file=sys.stderr)
        result = {"size_mb": args.size_mb, "rootfs": str(args.rootfs or ""),
                  "image_bytes": nbytes, "rounds": args.rounds,
                  "seconds": times}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "registry.json").write_text(json.dumps(result, indent=2) + "\n")
        print(table(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def table(result: dict[str, object]) -> str:
    nbytes = int(result["image_bytes"])  # type: ignore[call-overload]
    lines = [f"image: {nbytes / MIB:.0f} MiB uncompressed, {result['rounds']} rounds "
             "(median)", "", "| step | seconds | MiB/s (uncompressed) |", "|---|---:|---:|"]
    for name, values in result["seconds"].items():  # type: ignore[attr-defined]
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.2f} | {nbytes / MIB / med:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
