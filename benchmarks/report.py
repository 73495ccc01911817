"""Turning samples into a summary: the terminal table, JSON, Markdown and the PNG chart."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unionfs.benchmarks.profiles import Sizes
from unionfs.benchmarks.runner import Sample
from unionfs.benchmarks.targets import Target
from unionfs.benchmarks.workloads import Workload

COLORS = {"overlayfs": "C0", "fuse-overlayfs": "C1", "unionfs-fuse": "C2", "unionfs": "C3"}


@dataclass
class Cell:
    """One target's result for one row: the median of its runs, or why there is none."""

    median: float | None
    runs: int
    error: str | None
    vs_native: float | None = None
    vs_fuse_overlayfs: float | None = None


@dataclass
class Row:
    """One line of the table: a workload in one phase (cold or warm)."""

    workload: str
    phase: str
    title: str
    cells: dict[str, Cell]

    @property
    def label(self) -> str:
        return f"{self.title} ({self.phase})"


def summarize(samples: list[Sample], workloads: list[Workload], targets: list[str],
              sizes: Sizes) -> list[Row]:
    """Medians per (workload, phase, target) and their ratios to the baselines."""
    rows = []
    for workload in workloads:
        for phase in workload.phases():
            cells = {t: _cell([s for s in samples if (s.workload, s.phase, s.target) ==
                               (workload.name, phase, t)]) for t in targets}
            _add_ratios(cells)
            rows.append(Row(workload.name, phase, workload.title(sizes), cells))
    return rows


def _cell(samples: list[Sample]) -> Cell:
    times = [s.seconds for s in samples if s.seconds is not None]
    errors = [s.error for s in samples if s.error]
    if not times:
        return Cell(None, 0, errors[0] if errors else "not run")
    return Cell(statistics.median(times), len(times), errors[0] if errors else None)


def _add_ratios(cells: dict[str, Cell]) -> None:
    native, fuse = cells.get("native"), cells.get("fuse-overlayfs")
    for cell in cells.values():
        if cell.median is None:
            continue
        if native and native.median:
            cell.vs_native = cell.median / native.median
        if fuse and fuse.median:
            cell.vs_fuse_overlayfs = cell.median / fuse.median


def peak_rss(samples: list[Sample], targets: list[str]) -> dict[str, int | None]:
    """The largest server RSS (KiB) seen per target; None where there is no server."""
    result: dict[str, int | None] = {}
    for t in targets:
        values = [s.rss_kib for s in samples if s.target == t and s.rss_kib is not None]
        result[t] = max(values) if values else None
    return result


def fmt_seconds(value: float) -> str:
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"x{value:.2f}" if value < 10 else f"x{value:.0f}"


def cell_lines(cell: Cell, target: str, width: int = 32) -> list[str]:
    """The text of one table cell: time, then ratios to native and to fuse-overlayfs."""
    if cell.median is None:
        error = cell.error or ""
        return [error if len(error) <= width else error[: width - 1] + "…"]
    lines = [fmt_seconds(cell.median)]
    ratios = []
    if target != "native" and cell.vs_native is not None:
        ratios.append(f"{fmt_ratio(cell.vs_native)} n")
    if target != "fuse-overlayfs" and cell.vs_fuse_overlayfs is not None:
        ratios.append(f"{fmt_ratio(cell.vs_fuse_overlayfs)} f")
    if ratios:
        lines.append(" ".join(ratios))
    if cell.error:
        lines.append(f"({cell.error[:width]})")
    return lines


def fmt_rss(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


def rich_table(rows: list[Row], targets: list[str], rss: dict[str, int | None],
               title: str) -> Table:
    """The terminal table."""
    table = Table(title=title, caption="median seconds; x… n = ratio to native, "
                  "x… f = ratio to fuse-overlayfs (lower is better)", show_lines=True)
    table.add_column("workload", overflow="fold")
    for t in targets:
        table.add_column(t, justify="right", overflow="fold")
    for row in rows:
        table.add_row(row.label, *("\n".join(cell_lines(row.cells[t], t)) for t in targets))
    table.add_row("server peak RSS", *(fmt_rss(rss[t]) for t in targets))
    return table


def standing(rows: list[Row], target: str = "unionfs") -> str | None:
    """One line: the geometric mean of ``target``'s time over fuse-overlayfs's, and its worst
    row (None when no row has both)."""
    pairs = [(row.label, row.cells[target].vs_fuse_overlayfs) for row in rows
             if target in row.cells and row.cells[target].vs_fuse_overlayfs]
    if not pairs:
        return None
    geomean = math.exp(statistics.fmean(math.log(r) for _, r in pairs if r))
    worst, ratio = max(pairs, key=lambda pair: pair[1] or 0.0)
    return (f"{target} / fuse-overlayfs over {len(pairs)} rows: geometric mean x{geomean:.2f}, "
            f"worst x{ratio:.2f} ({worst}).")


def print_table(console: Console, rows: list[Row], targets: list[str],
                rss: dict[str, int | None], title: str) -> None:
    console.print(rich_table(rows, targets, rss, title))
    summary = standing(rows)
    if summary:
        console.print(summary)


def markdown(rows: list[Row], targets: list[str], rss: dict[str, int | None],
             meta: dict[str, object], sizes: Sizes, rounds: int) -> str:
    """The table and the machine it ran on, as Markdown for the README."""
    head = [
        f"Profile `{sizes.name}`, {rounds} round(s), median seconds; `x… n` is the ratio to "
        "native, `x… f` to fuse-overlayfs (lower is better). Cold runs follow an unmount, "
        "`drop_caches` and a fresh mount; warm runs repeat the command on the same mount.",
        "",
        "| workload | " + " | ".join(targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    for row in rows:
        cells = ["<br>".join(cell_lines(row.cells[t], t, width=70)) for t in targets]
        head.append(f"| {row.label} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    head.append("| server peak RSS | " + " | ".join(fmt_rss(rss[t]) for t in targets) + " |")
    summary = standing(rows)
    if summary:
        head += ["", summary]
    head += ["", "Measured " + ", ".join(f"{k}: {v}" for k, v in meta.items()) + "."]
    return "\n".join(head) + "\n"


def to_json(samples: list[Sample], rows: list[Row], targets: list[Target],
            rss: dict[str, int | None], meta: dict[str, object], sizes: Sizes,
            rounds: int) -> dict[str, object]:
    """Everything: every repetition, the summary, the machine and the versions."""
    return {
        "meta": meta,
        "profile": asdict(sizes),
        "rounds": rounds,
        "targets": [{"name": t.name, "description": t.description} for t in targets],
        "summary": [
            {"workload": r.workload, "phase": r.phase, "title": r.title,
             "cells": {t: asdict(c) for t, c in r.cells.items()}}
            for r in rows
        ],
        "peak_rss_kib": rss,
        "samples": [asdict(s) for s in samples],
    }


def write_json(path: Path, document: dict[str, object]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_chart(path: Path, rows: list[Row], targets: list[str], title: str) -> None:
    """Horizontal grouped bars: each target's time as a multiple of native (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in targets if t != "native"]
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(rows) * max(1, len(shown)) / 3))
    height = 0.8 / max(1, len(shown))
    for i, target in enumerate(shown):
        ys, xs = [], []
        for j, row in enumerate(rows):
            ratio = row.cells[target].vs_native
            if ratio is not None:
                ys.append(j + (i - (len(shown) - 1) / 2) * height)
                xs.append(max(ratio, 1e-3))
        label = target if xs else f"{target} (no results)"
        ax.barh(ys, xs, height=height, label=label, color=COLORS.get(target, f"C{4 + i}"))
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time relative to native directory (log scale, lower is better)")
    fig.suptitle(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=len(shown),
              frameon=False)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
