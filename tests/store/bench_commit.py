"""Benchmark: commit of an upper with N changed files, beside ``tar`` archiving the same files.

Run: ``.venv/bin/python -m tests.store.bench_commit [--files 10000] [--json]``

Three ways to turn the same upper into a stored layer are timed:

* ``commit --upper`` (an unmounted upper: copied into the store, then hashed),
* ``commit /mnt`` (a live unionfs mount: writers held, the frozen upper moved into the
  store and hashed in place; writes continue on a fresh upper),
* ``tar -cf`` of the same directory (GNU tar, to a file on the same filesystem),
* ``tar -cf | sha256sum`` (what an archive-and-digest approach costs at the least).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "unionfs", *args], check=True,
                   stdout=subprocess.DEVNULL)


def populate(root: Path, files: int, size: int = 100) -> None:
    """``files`` small files spread over 100 directories."""
    for i in range(files):
        d = root / f"d{i % 100:02d}"
        if i < 100:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(size // 2).hex().encode())


def timed(func: object, *args: object) -> float:
    t = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return time.perf_counter() - t


def _drop_caches() -> None:
    os.sync()


def run(files: int, work: Path) -> dict[str, float | int]:
    """Time every variant on ``files`` files below ``work``."""
    store = work / "store"
    base = work / "base"
    base.mkdir()
    (base / "etc").mkdir()
    _cli("import", str(base), "--tag", "base", "--store", str(store))
    upper = work / "upper"
    populate(upper, files)
    _drop_caches()
    results: dict[str, float | int] = {"files": files}
    results["tar_s"] = timed(subprocess.run, ["tar", "-C", str(upper), "-cf",
                                              str(work / "u.tar"), "."])
    results["tar_sha256_s"] = _tar_sha(upper)
    results["commit_upper_s"] = timed(_cli, "commit", "--upper", str(upper), "--parent",
                                      "base", "copied", "--store", str(store))
    results["commit_live_s"] = _live(store, work, files)
    return results


def _tar_sha(upper: Path) -> float:
    t = time.perf_counter()
    subprocess.run(f"tar -C '{upper}' -cf - . | sha256sum", shell=True, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _live(store: Path, work: Path, files: int) -> float:
    """Write the files through a live unionfs mount, then time ``unionfs commit /mnt``."""
    mnt = work / "mnt"
    mnt.mkdir()
    log = open(work / "mount.log", "wb")  # noqa: SIM115 - the server inherits it
    subprocess.run([sys.executable, "-m", "unionfs", "mount", "base", str(mnt), "--store",
                    str(store)], check=True, stdout=log, stderr=log)
    try:
        populate(mnt, files)
        _drop_caches()
        return timed(_cli, "commit", str(mnt), "live", "--store", str(store))
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="unionfs-bench-commit-", dir=args.dir))
    try:
        res = run(args.files, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['files']} changed files")
        for key, label in (("tar_s", "tar -cf"), ("tar_sha256_s", "tar -cf | sha256sum"),
                           ("commit_upper_s", "unionfs commit --upper (copy)"),
                           ("commit_live_s", "unionfs commit /mnt (live)")):
            print(f"  {label:32} {res[key]:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
