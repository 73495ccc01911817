"""The workloads: which layers each needs, and the one command whose run time is measured.

A workload is data, not code that runs: the runner builds the layers it names, mounts them
on a target, drops the caches, and times :attr:`Workload.command` (cold); workloads marked
``warm`` are timed a second time on the same mount (warm caches). Every command runs as a
child process with its working directory in the mount.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unionfs.benchmarks.commands import Command, Context, NotAvailable
from unionfs.benchmarks.data import tree_files
from unionfs.benchmarks.profiles import MIB, Sizes

OPS_SCRIPT = str(Path(__file__).with_name("ops.py"))


def ops_seconds(stdout: str) -> float:
    """The time ops.py measured itself (without the interpreter's start-up)."""
    return float(json.loads(stdout.strip().splitlines()[-1])["seconds"])


def fio_seconds(stdout: str) -> float:
    """fio's own time for the reads (without its start-up and file setup).

    One synchronous job issues one read at a time, so the reads took their count times their
    mean latency; fio's ``runtime`` says the same in whole milliseconds.
    """
    read = json.loads(stdout[stdout.index("{"):])["jobs"][0]["read"]
    if read["total_ios"] and read["lat_ns"]["mean"]:
        return float(read["total_ios"]) * float(read["lat_ns"]["mean"]) / 1e9
    return float(read["runtime"]) / 1000.0


@dataclass(frozen=True)
class Workload:
    """One measured operation and the layers it runs on."""

    name: str
    title: Callable[[Sizes], str]
    lowers: tuple[str, ...]  # dataset names, top first
    command: Callable[[Context], Command]
    upper_seed: str | None = None
    warm: bool = False  # also measure a second run on the same mount
    writes_lower: bool = False  # writes into existing lower files (native needs copies)
    needs_mount: bool = True
    prepare: Callable[[Context], None] | None = None  # untimed, before the mount
    verify: Callable[[Context], str | None] | None = None  # untimed: what is wrong, if any

    def phases(self) -> list[str]:
        return ["cold", "warm"] if self.warm else ["cold"]


def count(n: int) -> str:
    """20000 -> '20k', 1536 -> '1536'."""
    return f"{n // 1000}k" if n >= 10_000 and n % 1000 == 0 else str(n)


def size(mib: int) -> str:
    """1024 -> '1 GiB', 128 -> '128 MiB'."""
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def _tool(*argv: str) -> Callable[[Context], Command]:
    """A command that runs ``argv`` in the mount; ``{data}`` and ``{scratch}`` are filled in."""

    def build(ctx: Context) -> Command:
        args = [a.format(data=ctx.data, scratch=ctx.scratch) for a in argv]
        return Command(args, ctx.path)

    return build


def _untar(ctx: Context) -> Command:
    return Command(["tar", "-xf", str(ctx.data / "untar.tar")], ctx.path)


def _seqread(ctx: Context) -> Command:
    return Command(["dd", "if=big.bin", "of=/dev/null", "bs=1M"], ctx.path)


def _seqwrite(ctx: Context) -> Command:
    count_ = str(ctx.sizes.write_mib)
    return Command(["dd", "if=/dev/zero", "of=written.bin", "bs=1M", f"count={count_}",
                    "conv=fsync"], ctx.path)


def _randread(ctx: Context) -> Command:
    s = ctx.sizes
    return Command(["fio", "--name=randread", "--filename=big.bin", "--readonly",
                    "--rw=randread", "--bs=4k", f"--size={s.big_mib}M", f"--io_size={s.fio_mib}M",
                    "--ioengine=psync", "--invalidate=0", "--randrepeat=1",
                    "--output-format=json"], ctx.path, parse=fio_seconds)


def _small_paths(sizes: Sizes) -> list[str]:
    return [f"small/f_{i:04d}.txt" for i in range(sizes.copyup_files)]


def _copyup(op: str, paths: list[str], ctx: Context) -> Command:
    # A plain directory has no copy-up: its baseline is doing that copy by hand.
    op = f"copy-{op}" if ctx.target == "native" else op
    return Command([sys.executable, OPS_SCRIPT, op, *paths], ctx.path, parse=ops_seconds)


def _copyup_small(ctx: Context) -> Command:
    return _copyup("append", _small_paths(ctx.sizes), ctx)


def _copyup_big(ctx: Context) -> Command:
    return _copyup("append-fsync", ["big.bin"], ctx)


def _delete_list(ctx: Context) -> Path:
    return ctx.scratch / "delete.list"


def _prepare_delete(ctx: Context) -> None:
    _delete_list(ctx).write_text("".join(f"{p}\n" for p in tree_files(ctx.sizes, "a")))


def _delete(ctx: Context) -> Command:
    return Command(["xargs", "-d", "\\n", "-a", str(_delete_list(ctx)), "rm", "--"], ctx.path)


def _git_env(ctx: Context) -> dict[str, str]:
    return {**os.environ, "HOME": str(ctx.scratch), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_OPTIONAL_LOCKS": "1"}


def _git_status(ctx: Context) -> Command:
    return Command(["git", "status"], ctx.path, env=_git_env(ctx))


def _compileall(ctx: Context) -> Command:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return Command([sys.executable, "-m", "compileall", "-q", "pkg"], ctx.path, env=env)


@functools.cache
def commit_unavailable() -> str | None:
    """Why ``unionfs commit`` cannot be measured, or None when the command exists."""
    res = subprocess.run([sys.executable, "-m", "unionfs", "commit", "--help"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return "n/a: `unionfs commit` is not available yet"
    return None


def _commit(ctx: Context) -> Command:
    """unionfs commits the upper into its layer store; the others are timed archiving it."""
    if ctx.target != "unionfs":
        return Command(["tar", "-cf", str(ctx.scratch / "upper.tar"), "-C", str(ctx.upper), "."],
                       ctx.scratch)
    reason = commit_unavailable()
    if reason:
        raise NotAvailable(reason)
    store = str(ctx.scratch / "store")
    env = {**os.environ, "UNIONFS_STORE": store}
    argv = [sys.executable, "-m", "unionfs", "commit", "--store", store, "--upper",
            str(ctx.upper), "bench:committed", "-m", "benchmark commit"]
    return Command(argv, ctx.scratch, env=env)


def _build_command(ctx: Context) -> Command:
    from unionfs.benchmarks import buildbench  # it imports this module

    return buildbench.command(ctx)


def _build_prepare(ctx: Context) -> None:
    from unionfs.benchmarks import buildbench

    buildbench.prepare(ctx)


def _build_verify(ctx: Context) -> str | None:
    from unionfs.benchmarks import buildbench

    return buildbench.verify(ctx)


def _files_under(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names]


def _expect(what: str, got: int, want: int) -> str | None:
    return None if got == want else f"{got} {what}, expected {want}"


def _verify_untar(ctx: Context) -> str | None:
    return _expect("files unpacked", len(_files_under(ctx.path / "unpacked")),
                   ctx.sizes.untar_files)


def _verify_tree(ctx: Context) -> str | None:
    return _expect("files in the merged tree", len(_files_under(ctx.path / "tree")),
                   2 * ctx.sizes.tree_files)


def _verify_bigdir(ctx: Context) -> str | None:
    return _expect("entries listed", len(os.listdir(ctx.path / "big")), ctx.sizes.bigdir_entries)


def _verify_delete(ctx: Context) -> str | None:
    names = _files_under(ctx.path / "tree")
    visible = sum(1 for n in names if n.startswith("a_"))
    if visible:
        return f"{visible} deleted files still visible"
    return _expect("files left", len(names), ctx.sizes.tree_files)


def _verify_rm_rf(ctx: Context) -> str | None:
    return "the tree is still there" if os.path.lexists(ctx.path / "tree") else None


def _verify_mv(ctx: Context) -> str | None:
    if os.path.lexists(ctx.path / "tree"):
        return "the tree is still at its old name"
    return _expect("files in the moved tree", len(_files_under(ctx.path / "moved")),
                   2 * ctx.sizes.tree_files)


def _verify_size(name: str, size: Callable[[Sizes], int]) -> Callable[[Context], str | None]:
    def verify(ctx: Context) -> str | None:
        suffix = ".copy" if ctx.target == "native" and name == "big.bin" else ""
        return _expect(f"bytes in {name}", os.stat(ctx.path / (name + suffix)).st_size,
                       size(ctx.sizes))

    return verify


def _verify_copyup_small(ctx: Context) -> str | None:
    suffix = ".copy" if ctx.target == "native" else ""
    for rel in _small_paths(ctx.sizes):
        if not (ctx.path / (rel + suffix)).read_bytes().endswith(b"appended\n"):
            return f"{rel} does not end with the appended line"
    return None


def _verify_compileall(ctx: Context) -> str | None:
    found = len(list((ctx.path / "pkg" / "__pycache__").glob("*.pyc")))
    return _expect(".pyc files", found, ctx.sizes.src_modules + 1)


CONCURRENT_SCRIPT = str(Path(__file__).with_name("concurrent.py"))
PARALLEL = 2  # pieces of work at once in the parallel rows (the machine's 2 cores)


def _reported(field: str) -> Callable[[str], float]:
    def parse(stdout: str) -> float:
        return float(json.loads(stdout.strip().splitlines()[-1])[field])

    return parse


def _latency(mode: str, field: str) -> Callable[[Context], Command]:
    """Probes of an unrelated tree while another process copies up or fsyncs (p50, p99)."""

    def build(ctx: Context) -> Command:
        size_mib = ctx.sizes.write_mib if mode == "fsync" else 0
        argv = [sys.executable, CONCURRENT_SCRIPT, "latency", mode, str(size_mib),
                *tree_files(ctx.sizes, "a")]
        return Command(argv, ctx.path, parse=_reported(field))

    return build


def _pieces(mode: str, kind: str) -> Callable[[Context], Command]:
    """PARALLEL pieces of cold work at once (``parallel``) or one after another."""

    def build(ctx: Context) -> Command:
        dirs = sorted({os.path.dirname(f) for f in tree_files(ctx.sizes, "a")})
        argv = [sys.executable, CONCURRENT_SCRIPT, mode, str(PARALLEL), kind,
                *(dirs if kind != "read" else [])]
        return Command(argv, ctx.path, parse=ops_seconds)

    return build


def _concurrent_workloads() -> list[Workload]:
    """The rows of the concurrency issue: latency while slow I/O runs, and parallel work."""
    rows = []
    for mode, what in (("copyup", lambda s: f"a {size(s.big_mib)} copy-up"),
                       ("fsync", lambda s: f"a {size(s.write_mib)} write + fsync")):
        for field in ("p50", "p99"):
            rows.append(Workload(
                f"lat-{mode}-{field}",
                lambda s, what=what, field=field: f"{field} of stat / ls -l elsewhere during "
                + what(s), ("bigfile", "tree_a"), _latency(mode, field), writes_lower=True))
    for kind, what in (("read", lambda s: f"{PARALLEL} readers of parts of a {size(s.big_mib)} "
                        "file, cold"),
                       ("find", lambda s: f"{PARALLEL} finds over {count(2 * s.tree_files)} "
                        "merged files"),
                       ("cp", lambda s: f"{PARALLEL} cp -a of halves of a "
                        f"{count(2 * s.tree_files)}-file merged tree")):
        for mode in ("serial", "parallel"):
            rows.append(Workload(
                f"{kind}-{mode}",
                lambda s, what=what, mode=mode: f"{what(s)}: {mode}",
                ("bigfile",) if kind == "read" else TREE, _pieces(mode, kind)))
    return rows


TREE = ("tree_a", "tree_b")

WORKLOADS: list[Workload] = [
    Workload("untar", lambda s: f"untar {count(s.untar_files)} small files", ("empty",), _untar,
             verify=_verify_untar),
    Workload("find", lambda s: f"find over {count(2 * s.tree_files)} merged files", TREE,
             _tool("find", "tree"), warm=True, verify=_verify_tree),
    Workload("ls-lR", lambda s: f"ls -lR over {count(2 * s.tree_files)} merged files", TREE,
             _tool("ls", "-lR", "tree"), warm=True, verify=_verify_tree),
    Workload("bigdir", lambda s: f"ls -l of one {count(s.bigdir_entries)}-entry dir, 3 layers",
             ("bigdir_1", "bigdir_2"), _tool("ls", "-l", "big"), upper_seed="bigdir_up",
             warm=True, verify=_verify_bigdir),
    Workload("bigdir-names", lambda s: f"ls -U of one {count(s.bigdir_entries)}-entry dir, "
             "3 layers (names only)", ("bigdir_1", "bigdir_2"), _tool("ls", "-U", "big"),
             upper_seed="bigdir_up", warm=True, verify=_verify_bigdir),
    Workload("seqread", lambda s: f"sequential read of a {size(s.big_mib)} lower file",
             ("bigfile",), _seqread, warm=True),
    Workload("seqwrite", lambda s: f"sequential write of {size(s.write_mib)} + fsync",
             ("empty",), _seqwrite,
             verify=_verify_size("written.bin", lambda s: s.write_mib * MIB)),
    Workload("randread", lambda s: f"fio 4 KiB random reads, {size(s.fio_mib)} in total",
             ("bigfile",), _randread, warm=True),
    Workload("copyup-small", lambda s: f"copy-up of {s.copyup_files} small files", ("small",),
             _copyup_small, writes_lower=True, verify=_verify_copyup_small),
    Workload("copyup-big", lambda s: f"copy-up of one {size(s.big_mib)} file + fsync",
             ("bigfile",), _copyup_big, writes_lower=True,
             verify=_verify_size("big.bin", lambda s: s.big_mib * MIB + len(b"appended\n"))),
    Workload("delete", lambda s: f"delete {count(s.tree_files)} lower files (whiteouts)", TREE,
             _delete, prepare=_prepare_delete, verify=_verify_delete),
    Workload("rm-rf", lambda s: f"rm -rf of a {count(2 * s.tree_files)}-file merged tree", TREE,
             _tool("rm", "-rf", "tree"), verify=_verify_rm_rf),
    Workload("mv", lambda s: f"mv of a {count(2 * s.tree_files)}-file merged directory", TREE,
             _tool("mv", "tree", "moved"), verify=_verify_mv),
    Workload("git-status", lambda s: f"git status, {s.src_modules}-module repo in a lower",
             ("src",), _git_status, warm=True, writes_lower=True),
    Workload("compileall", lambda s: f"python -m compileall of {s.src_modules} lower modules",
             ("src",), _compileall, verify=_verify_compileall),
    Workload("commit", lambda s: f"commit of an upper with {count(s.commit_files)} changed "
             "files (others: tar -cf)", ("empty",), _commit, upper_seed="commit_upper",
             needs_mount=False),
    *_concurrent_workloads(),
    Workload("build", lambda s: "build of 3 RUN + 2 COPY steps on busybox (others: buildah "
             "bud --layers)", ("empty",), _build_command, warm=True, needs_mount=False,
             prepare=_build_prepare, verify=_build_verify),
]

BY_NAME = {w.name: w for w in WORKLOADS}
