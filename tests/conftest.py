"""Shared fixtures: layer trees, real unionfs mounts, kernel overlayfs mounts.

Every mount made here is unmounted and its server reaped, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from unionfs.api import MountHandle, MountOptions, is_mounted, mount, unmount

ROOT = Path(__file__).resolve().parent.parent


def unionfs_cli(*args: str, check: bool = False, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run our own ``unionfs`` command (never Debian's unionfs-fuse ``/usr/bin/unionfs``)."""
    return subprocess.run([sys.executable, "-m", "unionfs", *args], capture_output=True,
                          text=True, check=check, env=env, timeout=timeout)


def make_tree(root: Path, spec: Mapping[str, object]) -> Path:
    """Create files from a dict: ``"a/b": "text"`` a file, ``"d/": None`` a dir,
    ``"l": ("symlink", "target")``, ``"w": ("whiteout",)``, ``"o/": ("opaque",)``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, value in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
            if value == ("opaque",):
                os.setxattr(path, "trusted.overlay.opaque", b"y")
        elif isinstance(value, str | bytes):
            path.write_bytes(value.encode() if isinstance(value, str) else value)
        elif isinstance(value, tuple) and value[0] == "symlink":
            path.symlink_to(value[1])
        elif isinstance(value, tuple) and value[0] == "whiteout":
            os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))
        else:
            raise ValueError(f"bad tree spec for {rel}: {value!r}")
    return root


@dataclass
class Stack:
    """Directories for one union: lowers (top first), upper, work, mount point."""

    base: Path
    lowers: list[Path]
    upper: Path
    work: Path
    mnt: Path


@pytest.fixture
def stack(tmp_path: Path) -> Callable[..., Stack]:
    """Make a stack: ``stack(lower_spec1, lower_spec2, upper={...})``."""

    def make(*lower_specs: dict[str, object], upper: dict[str, object] | None = None,
             name: str = "s") -> Stack:
        base = tmp_path / name
        lowers = [make_tree(base / f"lower{i}", spec) for i, spec in enumerate(lower_specs)]
        up = make_tree(base / "upper", upper or {})
        mnt = base / "mnt"
        mnt.mkdir()
        return Stack(base, lowers, up, base / "work", mnt)

    return make


# What the server logs when a request or a background task failed unexpectedly (an EIO
# with a traceback, at level ERROR): a test whose server logged it fails, even if the test
# itself passed. (Expected failures are logged at DEBUG, with their traceback too.)
UNEXPECTED = ("failed unexpectedly", "] ERROR ", "] CRITICAL ")


class Mounts:
    """Mounts made by a test; all undone at teardown. Every server logs to a file of its own,
    which :meth:`unexpected` reads."""

    def __init__(self, logs: Path | None = None) -> None:
        self.handles: list[MountHandle] = []
        self.kernel: list[Path] = []
        self.logs = logs
        self.log_files: list[Path] = []

    def unionfs(self, st: Stack, *, writable: bool = True, env: dict[str, str] | None = None,
                **opts: object) -> Path:
        if "log_file" in opts:
            self.log_files.append(Path(str(opts["log_file"])))
        elif self.logs is not None:
            self.logs.mkdir(exist_ok=True)
            log_file = self.logs / f"server-{len(self.log_files)}.log"
            self.log_files.append(log_file)
            opts.setdefault("log_level", "info")
            opts["log_file"] = log_file
        options = MountOptions(workdir=st.work if writable else None, **opts)  # type: ignore[arg-type]
        full_env = {**os.environ, **env} if env else None
        handle = mount(st.lowers, st.mnt, st.upper if writable else None, options=options,
                       env=full_env)
        self.handles.append(handle)
        return st.mnt

    def unexpected(self) -> list[str]:
        """Lines of the servers' logs that report an unexpected exception."""
        found = []
        for log_file in self.log_files:
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            lines = text.splitlines()
            for index, line in enumerate(lines):
                if any(marker in line for marker in UNEXPECTED):
                    found.append(f"{log_file.name}: " + "\n".join(lines[index:index + 30]))
                    break
        return found

    def overlay(self, st: Stack, *, writable: bool = True, extra: str = "") -> Path:
        """The kernel's overlayfs over the same stack (the oracle)."""
        lowers = ":".join(str(p) for p in st.lowers)
        opts = f"lowerdir={lowers}"
        if writable:
            st.work.mkdir(exist_ok=True)
            opts += f",upperdir={st.upper},workdir={st.work}"
        if extra:
            opts += "," + extra
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(st.mnt)],
                       check=True, capture_output=True)
        self.kernel.append(st.mnt)
        return st.mnt

    def unmount(self, path: Path) -> None:
        for handle in list(self.handles):
            if handle.mountpoint == path:
                handle.unmount()
                self.handles.remove(handle)
        if path in self.kernel:
            subprocess.run(["umount", str(path)], check=True)
            self.kernel.remove(path)

    def close(self) -> None:
        for handle in self.handles:
            try:
                handle.unmount()
            except Exception:
                unmount(handle.mountpoint, lazy=True, missing_ok=True)
        for path in self.kernel:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    m = Mounts(tmp_path / "server-logs")
    try:
        yield m
    finally:
        m.close()
        for handle in m.handles:
            assert not is_mounted(handle.mountpoint)
        unexpected = m.unexpected()
        if unexpected:
            pytest.fail("the server logged an unexpected exception:\n" + "\n".join(unexpected))


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel overlayfs and mknod of whiteouts)")


PURE_DIR = ROOT / "tests" / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the layers: ``pure`` (tests/unit: no FUSE, no root) and ``system`` (the rest:
    real mounts, namespaces, root), so ``pytest -m pure`` runs the pure rules anywhere."""
    for item in items:
        pure = item.path.is_relative_to(PURE_DIR)
        item.add_marker(pytest.mark.pure if pure else pytest.mark.system)


@pytest.fixture(scope="session")
def _machine_capabilities() -> None:
    """Fail loudly (not skip) when the machine lacks what the suite is written for."""
    assert shutil.which("fusermount3"), "fusermount3 missing: run ./dev setup"
    assert os.path.exists("/dev/fuse"), "/dev/fuse missing"


@pytest.fixture(autouse=True)
def _system_tests_need_the_machine(request: pytest.FixtureRequest) -> None:
    """Every test outside tests/unit needs FUSE: check it once, for those tests only."""
    if request.node.get_closest_marker("system"):
        request.getfixturevalue("_machine_capabilities")


@pytest.fixture(autouse=True)
def _registries_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches an image registry but one on loopback: ``run``/``build``/``pull`` of a
    name that is not in the store fail before any connection to another address."""
    monkeypatch.setenv("UNIONFS_REGISTRY_LOOPBACK_ONLY", "1")
