"""The benchmark command line: choose sizes, targets and workloads, run, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from unionfs.benchmarks import report
from unionfs.benchmarks.data import ensure_data
from unionfs.benchmarks.machine import machine_info
from unionfs.benchmarks.profiles import FULL, PROFILES, QUICK, TINY, Sizes
from unionfs.benchmarks.runner import Observer, RunConfig, Runner, Sample
from unionfs.benchmarks.system import BenchError, remove_tree, unmount_all_under
from unionfs.benchmarks.targets import BUILTIN, DEFAULT_TARGETS, make_targets
from unionfs.benchmarks.workloads import BY_NAME, WORKLOADS, Workload

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_WORKDIR = Path("/var/tmp/unionfs-bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unionfs.benchmarks",
        description="Compare unionfs with a native directory, kernel overlayfs, "
        "fuse-overlayfs and unionfs-fuse on the same layer data.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="reduced sizes, 1 round (< 3 min)")
    size.add_argument("--tiny", action="store_true", help="a few files (the smoke test's size)")
    parser.add_argument("--rounds", type=int, help="repetitions (default: 3, or 1 for "
                        "--quick and --tiny)")
    parser.add_argument("--targets", help=f"comma-separated (default: {','.join(DEFAULT_TARGETS)})")
    parser.add_argument("--workloads", help="comma-separated (default: all; see --list)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME=TEMPLATE",
                        help="an extra target: a mount command with {lowers} (colon-separated,"
                        " top first), {upper}, {work} and {mnt} placeholders; repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where the JSON, Markdown and PNG go (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="layer data cache and scratch mounts (default: %(default)s)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the generated layer data for the next run")
    parser.add_argument("--list", action="store_true", help="list workloads and targets")
    return parser


def choose_sizes(args: argparse.Namespace) -> Sizes:
    return TINY if args.tiny else QUICK if args.quick else FULL


def choose_workloads(spec: str | None) -> list[Workload]:
    if not spec:
        return list(WORKLOADS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise BenchError(f"unknown workload(s) {', '.join(unknown)} (see --list)")
    return [BY_NAME[n] for n in names]


def parse_templates(items: list[str]) -> dict[str, str]:
    templates = {}
    for item in items:
        name, sep, template = item.partition("=")
        if not sep or not name or not template:
            raise BenchError(f"--target wants NAME='mount template', not {item!r}")
        if "{mnt}" not in template:
            raise BenchError(f"--target {name}: the template has no {{mnt}} placeholder")
        templates[name] = template
    return templates


class ProgressObserver(Observer):
    """Shows a progress bar and one log line per measurement."""

    def __init__(self, progress: Progress, task: int) -> None:
        self.progress, self.task = progress, task
        self.pending = False

    def step(self, label: str) -> None:
        if self.pending:
            self.progress.advance(self.task)
        self.pending = True
        self.progress.update(self.task, description=label)

    def sample(self, sample: Sample) -> None:
        result = report.fmt_seconds(sample.seconds) if sample.seconds is not None else (
            f"[red]{sample.error}[/red]")
        self.progress.console.log(f"r{sample.round + 1} {sample.workload:<13} {sample.phase:<4} "
                                  f"{sample.target:<15} {result}")

    def finish(self) -> None:
        if self.pending:
            self.progress.advance(self.task)


def list_things(console: Console) -> None:
    for w in WORKLOADS:
        console.print(f"{w.name:<13} {w.title(FULL)} [{'/'.join(w.phases())}]", markup=False)
    for name, cls in BUILTIN.items():
        console.print(f"target {name:<15} {cls.description}")
    console.print(f"profiles: {', '.join(PROFILES)}")


def run(args: argparse.Namespace, console: Console) -> int:
    sizes = choose_sizes(args)
    rounds = args.rounds or sizes.rounds
    names = [n.strip() for n in (args.targets or ",".join(DEFAULT_TARGETS)).split(",") if n]
    targets = make_targets(names, parse_templates(args.target))
    workloads = choose_workloads(args.workloads)
    if os.geteuid() != 0:
        console.print("[yellow]not root: caches cannot be dropped and overlayfs cannot mount")
    started = time.monotonic()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    clean_stale_runs(workdir)
    with console.status(f"generating {sizes.name} layer data in {workdir}") as status:
        data = ensure_data(sizes, workdir, log=lambda msg: status.update(f"generating {msg}"))
    try:
        samples = measure(console, sizes, rounds, targets, workloads, data, workdir)
    finally:
        if not args.keep_data:
            remove_tree(data)
    meta = machine_info(workdir)
    meta["run_seconds"] = round(time.monotonic() - started)
    write_reports(console, args.out, samples, targets, workloads, sizes, rounds, meta)
    console.print(f"done in {time.monotonic() - started:.0f} s")
    return 0


def clean_stale_runs(workdir: Path) -> None:
    """Unmount and delete the scratch of earlier runs that were killed outright."""
    for stale in workdir.glob("run-*"):
        pid = stale.name.removeprefix("run-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            unmount_all_under(stale)
            remove_tree(stale)


def measure(console: Console, sizes: Sizes, rounds: int, targets: list, workloads: list,
            data: Path, workdir: Path) -> list[Sample]:
    """Run the cells with a progress bar."""
    config = RunConfig(sizes=sizes, rounds=rounds, targets=targets, workloads=workloads,
                       data=data, scratch=workdir / f"run-{os.getpid()}")
    total = rounds * len(workloads) * len(targets)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        observer = ProgressObserver(progress, progress.add_task("starting", total=total))
        samples = Runner(config, observer).run()
        observer.finish()
    return samples


def write_reports(console: Console, out: Path, samples: list[Sample], targets: list,
                  workloads: list[Workload], sizes: Sizes, rounds: int,
                  meta: dict[str, object]) -> None:
    """Print the table; write <profile>.json, .md and .png into ``out``."""
    names = [t.name for t in targets]
    rows = report.summarize(samples, workloads, names, sizes)
    rss = report.peak_rss(samples, names)
    title = f"unionfs benchmarks · {sizes.name} · {rounds} round(s) · {meta['date']}"
    report.print_table(console, rows, names, rss, title)
    out.mkdir(parents=True, exist_ok=True)
    base = out / sizes.name
    report.write_json(base.with_suffix(".json"),
                      report.to_json(samples, rows, targets, rss, meta, sizes, rounds))
    base.with_suffix(".md").write_text(report.markdown(rows, names, rss, meta, sizes, rounds))
    report.write_chart(base.with_suffix(".png"), rows, names, title)
    console.print(f"wrote {base}.json, {base}.md and {base}.png")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A table of five targets needs more than 80 columns; a pipe or a log file has room.
    console = Console(log_path=False, width=None if sys.stdout.isatty() else 150)
    if args.list:
        list_things(console)
        return 0
    try:
        return run(args, console)
    except BenchError as exc:
        console.print(f"[red]benchmarks: error: {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[red]interrupted; mounts and scratch were cleaned up")
        return 130
