"""``pause`` and ``unpause``: the container's cgroup frozen and thawed, as docker does.

A paused container stays ``running`` in its state file; ``Paused`` is read from the freezer
itself (v1 ``freezer.state``, v2 ``cgroup.freeze``), so it cannot disagree with the kernel.
A signal sent to a paused container (``stop``, ``kill``, ``rm -f``) is delivered once the
container is thawed, which these commands then do, as docker's kill does.
"""

from __future__ import annotations

from typing import Any

from unionfs.errors import OperationFailed
from unionfs.runtime import cgroups, state


def _cgroup(st: dict[str, Any]) -> cgroups.Cgroup | None:
    return cgroups.load(st["cgroup"]) if st.get("cgroup") else None


def is_paused(container: state.Container, st: dict[str, Any] | None = None) -> bool:
    """True while the running container's cgroup is frozen."""
    st = container.state() if st is None else st
    if st.get("status") != "running":
        return False
    cg = _cgroup(st)
    return cg is not None and cg.frozen()


def pause(container: state.Container) -> None:
    """Freeze every process of the container."""
    if not container.running():
        raise OperationFailed(f"Container {container.name} is not running")
    st = container.state()
    cg = _cgroup(st)
    if cg is None or not cg.has_freezer():
        raise OperationFailed(f"cannot pause container {container.name}: it has no freezer "
                              "cgroup (rootless without a delegated cgroup?)")
    if cg.frozen():
        raise OperationFailed(f"Container {container.name} is already paused")
    try:
        cg.freeze()
    except OSError as exc:
        cg.thaw()
        raise OperationFailed(f"cannot pause container {container.name}: "
                              f"{exc.strerror or exc}") from None


def unpause(container: state.Container) -> None:
    """Thaw a paused container."""
    if not is_paused(container):
        raise OperationFailed(f"Container {container.name} is not paused")
    cg = _cgroup(container.state())
    assert cg is not None
    cg.thaw()


def thaw_if_paused(container: state.Container) -> None:
    """After a signal was sent: let a paused container run, so it gets the signal."""
    cg = _cgroup(container.state())
    if cg is not None and cg.frozen():
        cg.thaw()
