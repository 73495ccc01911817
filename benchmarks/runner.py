"""The measuring loop: rounds, targets interleaved, one fresh mount per measurement.

For each round, for each workload, every target in turn (the order rotates each round so a
slow moment of the machine is spread over all targets): fresh upper and work directories,
mount, drop the caches, time the command cold, time it again warm where that makes sense,
read the server's peak RSS, unmount, retire the scratch (deleted at the end of the run, so
that no cell creates files right after another cell's mass deletion). A target that cannot
mount is reported as failed for the rest of the run instead of stopping it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unionfs.benchmarks.profiles import Sizes
from unionfs.benchmarks.system import (
    BenchError,
    copy_tree_into,
    drop_caches,
    one_line,
    remove_tree,
    retire_tree,
    unmount_all_under,
)
from unionfs.benchmarks.targets import Layout, Mounted, Target
from unionfs.benchmarks.workloads import Command, Context, NotAvailable, Workload

RETIRED = ".retired"  # below the scratch: finished cells, deleted at the end of the run


@dataclass
class Sample:
    """One timed run of one workload on one target. ``error`` starts with failed: or n/a:."""

    target: str
    workload: str
    phase: str
    round: int
    seconds: float | None = None
    error: str | None = None
    rss_kib: int | None = None


@dataclass
class RunConfig:
    """What to run, and where the scratch directories go."""

    sizes: Sizes
    rounds: int
    targets: list[Target]
    workloads: list[Workload]
    data: Path
    scratch: Path


class Observer:
    """Told about every step and sample, to show progress; the default shows nothing."""

    def step(self, label: str) -> None:
        """A measurement (round, workload, target) starts."""

    def sample(self, sample: Sample) -> None:
        """A measurement produced a result."""


def rotated(items: list[Target], shift: int) -> list[Target]:
    """``items`` rotated left by ``shift``: round r starts with target r."""
    if not items:
        return []
    k = shift % len(items)
    return items[k:] + items[:k]


class Runner:
    """Runs every (round, workload, target) cell and collects the samples."""

    def __init__(self, config: RunConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.observer = observer or Observer()
        self.broken: dict[str, str] = {}
        self.samples: list[Sample] = []

    def run(self) -> list[Sample]:
        """Measure everything; always leaves no mount and no scratch behind."""
        cfg = self.config
        self._mark_unavailable()
        cfg.scratch.mkdir(parents=True, exist_ok=True)
        try:
            for rnd in range(cfg.rounds):
                for workload in cfg.workloads:
                    for target in rotated(cfg.targets, rnd):
                        self.observer.step(f"round {rnd + 1}/{cfg.rounds} · {workload.name} · "
                                           f"{target.name}")
                        for sample in self._cell(target, workload, rnd):
                            self.samples.append(sample)
                            self.observer.sample(sample)
        finally:
            unmount_all_under(cfg.scratch)
            remove_tree(cfg.scratch)
        return self.samples

    def _mark_unavailable(self) -> None:
        for target in self.config.targets:
            reason = target.unavailable()
            if reason:
                self.broken[target.name] = f"failed: {reason}"

    def _cell(self, target: Target, workload: Workload, rnd: int) -> list[Sample]:
        def failed(reason: str) -> list[Sample]:
            return [Sample(target.name, workload.name, p, rnd, error=reason)
                    for p in workload.phases()]

        if target.name in self.broken and (workload.needs_mount or target.unavailable()):
            return failed(self.broken[target.name])
        cell = self.config.scratch / f"r{rnd}-{workload.name}-{target.name}"
        layout = Layout(lowers=[self.config.data / name for name in workload.lowers],
                        upper=cell / "upper", work=cell / "work", mnt=cell / "mnt",
                        log=cell / "server.log")
        private = cell / "private"
        for path in (layout.upper, layout.work, layout.mnt, private):
            path.mkdir(parents=True)
        try:
            if workload.upper_seed:
                copy_tree_into(self.config.data / workload.upper_seed, layout.upper)
            if not workload.needs_mount:
                return self._measure_offline(target, workload, rnd, layout, private)
            try:
                mounted = target.mount(layout, writes_lower=workload.writes_lower)
            except BenchError as exc:
                self.broken[target.name] = f"failed: {exc}"
                return failed(self.broken[target.name])
            return self._measure_mounted(target, workload, rnd, mounted, private)
        except BenchError as exc:
            return failed(f"failed: {exc}")
        finally:
            unmount_all_under(cell)
            retire_tree(cell, self.config.scratch / RETIRED)

    def _context(self, target: Target, path: Path, upper: Path, private: Path) -> Context:
        return Context(sizes=self.config.sizes, data=self.config.data, path=path, upper=upper,
                       scratch=private, target=target.name)

    def _measure_offline(self, target: Target, workload: Workload, rnd: int, layout: Layout,
                         private: Path) -> list[Sample]:
        """A workload on the upper directory itself, with nothing mounted (commit)."""
        ctx = self._context(target, layout.upper, layout.upper, private)
        if workload.prepare:
            workload.prepare(ctx)
        drop_caches()
        samples = [self._timed(ctx, workload, phase, rnd) for phase in workload.phases()]
        if not any(s.error for s in samples):
            self._verify(ctx, workload, samples)
        return samples

    def _measure_mounted(self, target: Target, workload: Workload, rnd: int, mounted: Mounted,
                         private: Path) -> list[Sample]:
        """Cold run right after the mount and a cache drop, then the warm run if any."""
        try:
            ctx = self._context(target, mounted.path, mounted.upper, private)
            if workload.prepare:
                workload.prepare(ctx)
            # After the mount, so the native target's freshly built tree is not cached either.
            drop_caches()
            samples: list[Sample] = []
            for phase in workload.phases():
                samples.append(self._timed(ctx, workload, phase, rnd, mounted.abort))
                if samples[-1].error:
                    break
            if not samples[-1].error:
                self._verify(ctx, workload, samples)
            rss = mounted.peak_rss_kib()
            for sample in samples:
                sample.rss_kib = rss
            return samples
        finally:
            mounted.unmount()

    @staticmethod
    def _verify(ctx: Context, workload: Workload, samples: list[Sample]) -> None:
        """A filesystem that skips work must not look fast: check the result, untimed."""
        if workload.verify is None:
            return
        try:
            problem = workload.verify(ctx)
        except OSError as exc:
            problem = f"{exc.strerror}: {exc.filename}"
        if problem:
            for sample in samples:
                sample.seconds, sample.error = None, f"failed: wrong result: {problem}"

    def _timed(self, ctx: Context, workload: Workload, phase: str, rnd: int,
               abort: Callable[[], None] | None = None) -> Sample:
        sample = Sample(ctx.target, workload.name, phase, rnd)
        try:
            sample.seconds = timed_run(workload.command(ctx), self.config.sizes.timeout, abort)
        except NotAvailable as exc:
            sample.error = str(exc)
        except BenchError as exc:
            sample.error = f"failed: {exc}"
        return sample


def timed_run(cmd: Command, timeout: float, abort: Callable[[], None] | None = None) -> float:
    """Run ``cmd`` and return its wall time (or the time it reports, when it has ``parse``).

    On a timeout or an interrupt the command is killed; if it cannot die because it waits
    on a stalled filesystem, ``abort`` (which kills the server) frees it.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd.argv, cwd=cmd.cwd, env=cmd.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if cmd.parse else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            if abort:
                abort()
            proc.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise BenchError(f"timed out after {timeout:.0f}s") from exc
        raise
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        why = one_line(err.decode(errors="replace")) or f"exit status {proc.returncode}"
        raise BenchError(f"{Path(cmd.argv[0]).name}: {why}")
    if cmd.parse:
        try:
            return cmd.parse(out.decode(errors="replace"))
        except (ValueError, KeyError, IndexError) as exc:
            raise BenchError(f"cannot read the time from {cmd.argv[0]}'s output") from exc
    return elapsed


def run_all(config: RunConfig, observer: Observer | None = None) -> list[Sample]:
    """Convenience wrapper: run the suite described by ``config``."""
    return Runner(config, observer).run()

