"""``top CONTAINER [ps OPTIONS]``: the host's ``ps`` (default ``-ef``: UID PID PPID C STIME
TTY TIME CMD) restricted to the container's processes, host pids, as docker's ``top``."""

from __future__ import annotations

import subprocess

from unionfs.errors import OperationFailed
from unionfs.runtime import lifecycle, state

DEFAULT_ARGS = ("-ef",)


def top(container: state.Container, ps_args: list[str]) -> tuple[list[str], list[list[str]]]:
    """The titles and the rows of ``ps ps_args`` for the container's processes."""
    pids = {p.pid for p in lifecycle.processes(container)}
    args = list(ps_args) or list(DEFAULT_ARGS)
    try:
        res = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise OperationFailed(f"cannot run ps: {exc.strerror}") from None
    if res.returncode != 0:
        message = " ".join(res.stderr.split()) or f"ps exited with status {res.returncode}"
        raise OperationFailed(f"ps: {message}")
    return parse_ps(res.stdout, pids)


def parse_ps(output: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    """``ps`` output as titles and the rows whose PID is in ``pids`` (the last column keeps
    its spaces, as docker merges the overhanging fields)."""
    lines = output.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise OperationFailed("Couldn't find PID field in ps output")
    index = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= index or not fields[index].isdigit():
            continue
        if int(fields[index]) in pids:
            last = len(titles) - 1
            rows.append([*fields[:last], " ".join(fields[last:])])
    return titles, rows
