"""Fixtures for container tests: a busybox image in a store, the ``unionfs`` CLI, and a check
after every test that no mount, cgroup or process of the test remains."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from unionfs.runtime import cgroups
from unionfs.runtime.state import KEEP_SERVER_LOGS_ENV
from unionfs.store import Store

from ..conftest import UNEXPECTED

T = TypeVar("T")

BUSYBOX = Path("/bin/busybox")
ROOTLESS_UID = 4242


def build_busybox_rootfs(root: Path, owner: int | None = None) -> Path:
    """A minimal image tree: static busybox, its applet symlinks, passwd and group."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/user"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    listing = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in listing:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "user:x:1000:1000:user:/home/user:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
    (root / "etc/motd").write_text("image one\n")
    os.chmod(root / "tmp", 0o1777)
    if owner is not None:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, owner, owner)
    return root


@dataclass
class CLI:
    """Runs ``python -m unionfs`` against one store."""

    store_root: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 60, input: str | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unionfs", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 60) -> str:
        res = self(*args, timeout=timeout)
        assert res.returncode == 0, f"{args}: rc={res.returncode} {res.stderr}"
        return res.stdout

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "unionfs", *args]


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the image ``busybox`` (shared by the session: imports take time)."""
    root = tmp_path_factory.mktemp("store")
    tree = build_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")
    Store.open(root).import_rootfs(tree, "busybox")
    return root


@pytest.fixture(scope="session")
def kept_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where removed containers leave their unionfs server logs (see server_log_problems)."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture
def cli(store_root: Path, kept_logs: Path) -> CLI:
    env = dict(os.environ, UNIONFS_STORE=str(store_root))
    env[KEEP_SERVER_LOGS_ENV] = str(kept_logs)
    return CLI(store_root, env)


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store.open(store_root)


# -- what a test leaves behind ----------------------------------------------------------


def cgroup_leftovers() -> set[str]:
    """Container cgroups that exist now (v1 hierarchies or the v2 ``unionfs`` parent)."""
    found: set[str] = set()
    root = cgroups.CGROUP_ROOT
    for base in root.rglob("unionfs"):
        if base.is_dir():
            found.update(str(p) for p in base.iterdir() if p.is_dir())
    return found


def mount_leftovers(marker: str) -> set[str]:
    """Mounts whose source or target mentions ``marker`` (the store path)."""
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f if marker in line}


def process_leftovers(marker: str) -> set[int]:
    """Processes in another pid namespace than ours, or whose command line names ``marker``."""
    ours = os.stat("/proc/self/ns/pid").st_ino
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != ours:
                found.add(int(entry))
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.add(int(entry))
        except OSError:
            continue
    return found


def _settle(check: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


_REPORTED: set[Path] = set()
UNEXPECTED_IN_SERVER_LOG = (*UNEXPECTED, "Traceback (most recent call last)")


def server_log_problems(*dirs: Path) -> list[str]:
    """What containers' unionfs servers logged as unexpected (ERROR, CRITICAL, a traceback):
    ``unionfs.log`` of the containers under ``dirs`` (a store's ``containers/``) and the logs
    removed containers left in ``dirs`` (``KEEP_SERVER_LOGS_ENV``). Each file is reported
    once per session."""
    found = []
    for d in dirs:
        for log_file in [*d.glob("*/unionfs.log"), *d.glob("*.unionfs.log")]:
            if log_file in _REPORTED:
                continue
            lines = log_file.read_text(errors="replace").splitlines()
            for index, line in enumerate(lines):
                if any(marker in line for marker in UNEXPECTED_IN_SERVER_LOG):
                    _REPORTED.add(log_file)
                    found.append(f"{log_file}:\n" + "\n".join(lines[max(0, index - 3):index + 30]))
                    break
    return found


@pytest.fixture(autouse=True)
def no_leftovers(store_root: Path, kept_logs: Path) -> Iterator[None]:
    """After each test: no mount, cgroup or process of the test remains, and no container's
    unionfs server logged an unexpected failure."""
    marker = str(store_root)
    before_cg = cgroup_leftovers()
    before_procs = process_leftovers(marker)
    yield
    problems = server_log_problems(store_root / "containers", kept_logs)
    procs = _settle(lambda: process_leftovers(marker) - before_procs)
    mounts = _settle(lambda: mount_leftovers(marker))
    cgs = _settle(lambda: cgroup_leftovers() - before_cg)
    if procs or mounts or cgs:
        _clean_up(procs, mounts, cgs)
    assert not procs, f"processes left: {[_cmdline(p) for p in procs]}"
    assert not mounts, f"mounts left: {mounts}"
    assert not cgs, f"cgroups left: {cgs}"
    assert not problems, "a container's unionfs server logged:\n" + "\n".join(problems)


def _clean_up(procs: set[int], mounts: set[str], cgs: set[str]) -> None:
    """Remove what a failed test left, so the next tests start clean."""
    for pid in procs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    for d in cgs:
        for _ in range(20):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: " + f.read().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid}: gone"
