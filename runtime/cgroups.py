"""Control groups, v1 and v2 behind one interface.

:func:`create` makes a container's cgroup on whichever version the machine runs; :func:`load`
reopens it from the paths saved in the container's state. Both backends offer the same
operations: apply limits, add a process, list processes, stats, OOM detection, kill all, remove.

Where the cgroups go:

- v1: ``<controller mount><our own cgroup>/unionfs/<id>`` in each of memory, cpu, cpuacct,
  pids and (where mounted) freezer. Nesting under our own cgroup keeps containers inside
  whatever limits we run under. The freezer (v1 ``freezer.state``, v2 ``cgroup.freeze``) is
  what ``pause`` uses.
- v2: ``<mount>/unionfs/<id>`` for root (the no-internal-processes rule forbids enabling
  controllers below a cgroup that holds processes, as our own does); for other users
  ``<user@UID.service>/unionfs/<id>``, in the subtree systemd delegates to the user (found
  above our own cgroup, as podman's rootless containers use it), with the controllers it
  delegates (a limit of another one is refused, naming the controller).

``UNIONFS_CGROUP_PARENT`` overrides the parent directory on both versions.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.runtime.spec import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V1_OPTIONAL = ("freezer",)  # pause/unpause; a container runs without it where it is missing
FREEZE_TIMEOUT = 10.0
V2_CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000
PARENT_ENV = "UNIONFS_CGROUP_PARENT"


class CgroupUnavailable(Exception):
    """No cgroup can be made for a container here (e.g. rootless without delegation)."""


@dataclass
class Stats:
    """What ``unionfs stats`` shows."""

    memory_bytes: int
    memory_limit: int | None
    cpu_usec: int
    pids: int
    pids_limit: int | None


def cpu_shares_to_weight(shares: int) -> int:
    """Convert cgroup v1 ``cpu.shares`` [2, 262144] to v2 ``cpu.weight`` [1, 10000].

    This is the conversion runc (>= 1.3.2, opencontainers/cgroups #20) and crun (>= 1.23)
    use now: with ``l = log2(shares)``, ``weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34))``.
    It maps the v1 default 1024 to the v2 default 100 and the range ends to the range ends.
    The older linear formula, ``1 + ((shares - 2) * 9999) // 262142``, mapped 1024 to 39 and
    so gave every container with default shares under 40% of a default cgroup's weight.
    """
    if shares <= 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    ell = math.log2(shares)
    return math.ceil(10 ** ((ell * ell + 125 * ell) / 612.0 - 7.0 / 34.0))


def detect(root: Path = CGROUP_ROOT) -> int:
    """1 or 2: the cgroup version mounted at ``root`` (a hybrid setup counts as v1)."""
    if (root / "cgroup.controllers").exists():
        return 2
    if (root / "memory").is_dir() or (root / "pids").is_dir():
        return 1
    raise CgroupUnavailable(f"no cgroup filesystem at {root}")


def own_cgroups(pid: str = "self") -> dict[str, str]:
    """Our cgroup path per v1 controller, and ``""`` for the v2 hierarchy."""
    result: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for ctrl in controllers.split(",") if controllers else [""]:
                result[ctrl] = path
    return result


class Cgroup(ABC):
    """One container's cgroup."""

    version: int

    @abstractmethod
    def dirs(self) -> list[Path]:
        """The cgroup directories (one on v2, one per controller on v1)."""

    @abstractmethod
    def apply(self, limits: Limits) -> None:
        """Write the limits that are set."""

    @abstractmethod
    def stats(self) -> Stats:
        """Current usage."""

    @abstractmethod
    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer has killed a process of this cgroup."""

    def add(self, pid: int) -> None:
        """Move ``pid`` into the cgroup (all hierarchies)."""
        for d in self.dirs():
            (d / "cgroup.procs").write_text(f"{pid}\n")

    def procs(self) -> list[int]:
        """The pids in the cgroup."""
        pids: set[int] = set()
        for d in self.dirs():
            try:
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return sorted(pids)

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (thawed, so they die even when paused)."""
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.thaw()

    # -- the freezer (pause/unpause) --

    def has_freezer(self) -> bool:
        """True when this cgroup can be frozen."""
        return False

    def frozen(self) -> bool:
        """True while the cgroup is frozen (or freezing)."""
        return False

    def freeze(self) -> None:
        """Stop every process of the cgroup; returns once all are frozen."""
        raise OSError(errno.ENOTSUP, "no freezer cgroup")

    def thaw(self) -> None:
        """Let the processes run again (nothing happens when not frozen)."""
        return None

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directories (and the parent, when empty)."""
        deadline = time.monotonic() + timeout
        for d in self.dirs():
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or (
                        time.monotonic() > deadline
                    ):
                        raise
                    self.kill_all()
                    time.sleep(0.02)
            with contextlib.suppress(OSError):
                d.parent.rmdir()

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """What :func:`load` needs to reopen it."""


class CgroupV1(Cgroup):
    """A cgroup v1 group: one directory per controller hierarchy."""

    version = 1

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def dirs(self) -> list[Path]:
        return list(self.paths.values())

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "paths": {c: str(p) for c, p in self.paths.items()}}

    def _write(self, ctrl: str, name: str, value: object) -> None:
        (self.paths[ctrl] / name).write_text(f"{value}\n")

    def apply(self, limits: Limits) -> None:
        if limits.memory is not None:
            self._write("memory", "memory.limit_in_bytes", limits.memory)
            if (self.paths["memory"] / "memory.memsw.limit_in_bytes").exists():
                self._write("memory", "memory.memsw.limit_in_bytes", limits.memory)
        if limits.cpu_shares is not None:
            self._write("cpu", "cpu.shares", limits.cpu_shares)
        if limits.cpus is not None:
            self._write("cpu", "cpu.cfs_period_us", CFS_PERIOD_US)
            self._write("cpu", "cpu.cfs_quota_us", round(limits.cpus * CFS_PERIOD_US))
        if limits.pids is not None:
            self._write("pids", "pids.max", limits.pids)

    def _read(self, ctrl: str, name: str) -> str:
        return (self.paths[ctrl] / name).read_text().strip()

    def stats(self) -> Stats:
        mem_limit = int(self._read("memory", "memory.limit_in_bytes"))
        pids_max = self._read("pids", "pids.max")
        return Stats(
            memory_bytes=int(self._read("memory", "memory.usage_in_bytes")),
            memory_limit=None if mem_limit >= 1 << 62 else mem_limit,
            cpu_usec=int(self._read("cpuacct", "cpuacct.usage")) // 1000,
            pids=int(self._read("pids", "pids.current")),
            pids_limit=None if pids_max == "max" else int(pids_max),
        )

    def oom_killed(self) -> bool:
        try:
            fields = _keyed(self._read("memory", "memory.oom_control"))
        except FileNotFoundError:
            return False
        return fields.get("oom_kill", 0) > 0

    def has_freezer(self) -> bool:
        return "freezer" in self.paths

    def frozen(self) -> bool:
        if not self.has_freezer():
            return False
        try:
            return self._read("freezer", "freezer.state") != "THAWED"
        except FileNotFoundError:
            return False

    def freeze(self) -> None:
        if not self.has_freezer():
            super().freeze()
        self._write("freezer", "freezer.state", "FROZEN")
        _wait_until(lambda: self._read("freezer", "freezer.state") == "FROZEN",
                    lambda: self._write("freezer", "freezer.state", "FROZEN"))

    def thaw(self) -> None:
        if self.has_freezer() and (self.paths["freezer"] / "freezer.state").exists():
            self._write("freezer", "freezer.state", "THAWED")


class CgroupV2(Cgroup):
    """A cgroup v2 group: one directory in the unified hierarchy."""

    version = 2

    def __init__(self, path: Path) -> None:
        self.path = path

    def dirs(self) -> list[Path]:
        return [self.path]

    def to_dict(self) -> dict[str, Any]:
        return {"version": 2, "path": str(self.path)}

    def _write(self, name: str, value: object) -> None:
        target = self.path / name
        if not target.exists():
            controller = name.partition(".")[0]
            raise OSError(errno.ENOENT, f"the {controller} controller is not enabled for "
                          "this cgroup (not delegated?)", str(target))
        target.write_text(f"{value}\n")

    def apply(self, limits: Limits) -> None:
        if limits.memory is not None:
            self._write("memory.max", limits.memory)
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", 0)
        if limits.cpu_shares is not None:
            self._write("cpu.weight", cpu_shares_to_weight(limits.cpu_shares))
        if limits.cpus is not None:
            self._write("cpu.max", f"{round(limits.cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
        if limits.pids is not None:
            self._write("pids.max", limits.pids)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text().strip()

    def stats(self) -> Stats:
        mem_max = self._read("memory.max")
        pids_max = self._read("pids.max")
        return Stats(
            memory_bytes=int(self._read("memory.current")),
            memory_limit=None if mem_max == "max" else int(mem_max),
            cpu_usec=_keyed(self._read("cpu.stat")).get("usage_usec", 0),
            pids=int(self._read("pids.current")),
            pids_limit=None if pids_max == "max" else int(pids_max),
        )

    def oom_killed(self) -> bool:
        try:
            return _keyed(self._read("memory.events")).get("oom_kill", 0) > 0
        except FileNotFoundError:
            return False

    def has_freezer(self) -> bool:
        return (self.path / "cgroup.freeze").exists()

    def frozen(self) -> bool:
        try:
            return self._read("cgroup.freeze") == "1"
        except FileNotFoundError:
            return False

    def freeze(self) -> None:
        if not self.has_freezer():
            super().freeze()
        self._write("cgroup.freeze", 1)
        _wait_until(lambda: _keyed(self._read("cgroup.events")).get("frozen") == 1)

    def thaw(self) -> None:
        if self.has_freezer():
            self._write("cgroup.freeze", 0)

    def kill_all(self) -> None:
        kill = self.path / "cgroup.kill"
        if kill.exists():
            try:
                kill.write_text("1\n")
                return
            except OSError:
                pass
        super().kill_all()


def _wait_until(done: Callable[[], bool], again: Callable[[], None] | None = None) -> None:
    """Poll ``done`` (the kernel freezes a cgroup asynchronously); ``again`` re-asks, as v1's
    FREEZING state may need. OSError ETIMEDOUT after ``FREEZE_TIMEOUT`` seconds."""
    deadline = time.monotonic() + FREEZE_TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, "the cgroup did not freeze")
        time.sleep(0.01)
        if again is not None:
            again()


def _keyed(text: str) -> dict[str, int]:
    """``key value`` lines as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def create(name: str, root: Path = CGROUP_ROOT) -> Cgroup:
    """Make the cgroup for container ``name``; :class:`CgroupUnavailable` says why not."""
    version = detect(root)
    try:
        if version == 2:
            return _create_v2(name, root)
        return _create_v1(name, root)
    except PermissionError as exc:
        raise CgroupUnavailable(
            f"no permission to create a cgroup ({exc.filename}); rootless limits need a "
            f"delegated cgroup, named by {PARENT_ENV}"
        ) from None


def _create_v1(name: str, root: Path) -> CgroupV1:
    own = own_cgroups()
    override = os.environ.get(PARENT_ENV)
    paths: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS + V1_OPTIONAL:
        mount = root / ctrl
        if not mount.is_dir():
            if ctrl in V1_OPTIONAL:
                continue
            raise CgroupUnavailable(f"cgroup v1 controller {ctrl} is not mounted at {mount}")
        parent = mount / (override or own.get(ctrl, "/")).lstrip("/") / "unionfs"
        paths[ctrl] = parent / name
    made: list[Path] = []
    try:
        for path in paths.values():
            _mkdir(path)
            made.append(path)
    except BaseException:
        for path in made:
            path.rmdir()
        raise
    return CgroupV1(paths)


def _create_v2(name: str, root: Path) -> CgroupV2:
    override = os.environ.get(PARENT_ENV)
    top = root  # controllers are enabled from here down
    if override:
        parent = root / override.lstrip("/")
    elif os.geteuid() == 0:
        parent = root / "unionfs"
    else:
        top = delegated_subtree(root, own_cgroups().get("", "/"), os.geteuid())
        parent = top / "unionfs"
    available = set((top / "cgroup.controllers").read_text().split())
    if top == root:
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupUnavailable(f"cgroup v2 controllers not available: {' '.join(missing)}")
    _mkdir(parent)
    _enable_controllers(top, parent, [c for c in V2_CONTROLLERS if c in available])
    path = parent / name
    _mkdir(path)
    return CgroupV2(path)


def delegated_subtree(root: Path, own: str, uid: int) -> Path:
    """The cgroup systemd delegates to user ``uid`` (``.../user@UID.service``), as podman's
    rootless containers use it: our own cgroup must be inside it."""
    parts = [p for p in own.split("/") if p]
    unit = f"user@{uid}.service"
    if unit not in parts:
        raise CgroupUnavailable(
            f"rootless limits need the cgroup v2 subtree systemd delegates to you ({unit}); "
            f"this process is in {own or '/'}: run from a login session or under "
            f"'systemd-run --user --scope', or name a delegated cgroup in {PARENT_ENV}")
    delegated = root.joinpath(*parts[: parts.index(unit) + 1])
    if not os.access(delegated / "cgroup.subtree_control", os.W_OK):
        raise CgroupUnavailable(f"{delegated} is not delegated to uid {uid}")
    return delegated


def _mkdir(path: Path) -> None:
    """mkdir -p, retrying when a concurrent cleanup removes an empty parent meanwhile."""
    for _ in range(5):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    path.mkdir(parents=True, exist_ok=True)


def _enable_controllers(top: Path, parent: Path, wanted: list[str] | None = None) -> None:
    """Enable our controllers in ``subtree_control`` from ``top`` down to ``parent``."""
    wanted = list(V2_CONTROLLERS) if wanted is None else wanted
    current = top
    _enable_in(current, wanted)
    for part in parent.relative_to(top).parts:
        current = current / part
        _enable_in(current, wanted)


def _enable_in(directory: Path, controllers: list[str]) -> None:
    control = directory / "cgroup.subtree_control"
    enabled = set(control.read_text().split())
    wanted = [c for c in controllers if c not in enabled and f"+{c}" not in enabled]
    if not wanted:
        return
    try:
        control.write_text(" ".join(f"+{c}" for c in wanted) + "\n")
    except OSError as exc:
        raise CgroupUnavailable(
            f"cannot enable {' '.join(wanted)} in {control}: {exc.strerror}"
        ) from None


def load(data: dict[str, Any]) -> Cgroup:
    """Reopen a cgroup from :meth:`Cgroup.to_dict`."""
    if data["version"] == 2:
        return CgroupV2(Path(data["path"]))
    return CgroupV1({ctrl: Path(p) for ctrl, p in data["paths"].items()})
