"""What the numbers were measured on: machine, kernel, and every tool's version."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path


def _first_line(argv: list[str], match: str = "") -> str:
    """The first output line of ``argv`` containing ``match`` (stdout or stderr)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    for line in (res.stdout + res.stderr).splitlines():
        if match in line and "unknown argument" not in line and line.strip():
            return line.strip()
    return "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    return 0.0


def _distro() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    rev = _first_line(["git", "-C", str(root), "describe", "--always", "--dirty"])
    return rev


def _filesystem(path: Path) -> str:
    return _first_line(["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)])


def machine_info(workdir: Path) -> dict[str, object]:
    """Everything worth printing beside a benchmark table."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "memory_gib": _memory_gib(),
        "os": _distro(),
        "kernel": platform.release(),
        "workdir_filesystem": _filesystem(workdir),
        "python": sys.version.split()[0],
        "unionfs": f"{_package('unionfs')} ({_git_revision()})",
        "pyfuse3": _package("pyfuse3"),
        "trio": _package("trio"),
        "libfuse": _first_line(["fusermount3", "--version"], "version"),
        "fuse-overlayfs": _first_line(["fuse-overlayfs", "--version"], "fuse-overlayfs"),
        "unionfs-fuse": _first_line(["unionfs-fuse", "--version"], "unionfs-fuse"),
        "fio": _first_line(["fio", "--version"]),
        "git": _first_line(["git", "--version"]),
        "tar": _first_line(["tar", "--version"]),
    }
