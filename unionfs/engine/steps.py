"""Executes the core's create and delete steps (:mod:`unionfs.core.plan`) on the disk.

The steps act on one name in one upper directory, or on a temporary name in the work dir,
which is removed again if a step fails (the upper keeps its old state).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from unionfs.core.plan import (
    DropWork,
    Evict,
    Finish,
    Install,
    Make,
    Place,
    PutWhiteout,
    SetOpaque,
    Step,
    Unlink,
)
from unionfs.layers.copyup import WorkDir
from unionfs.layers.syscalls import RENAME_EXCHANGE, proc_path, renameat2

At = Callable[[int, bytes], None]  # an action on (directory fd, name)


def _nothing(dir_fd: int, name: bytes) -> None:
    pass


def run_steps(steps: tuple[Step, ...], work: WorkDir, dir_fd: int, name: bytes, *,
              make: At = _nothing, finish: At = _nothing,
              set_opaque: Callable[[bytes], None] | None = None) -> None:
    """Run ``steps`` on ``name`` in upper directory ``dir_fd``; ``make`` and ``finish`` are
    the request's own Make and Finish, ``set_opaque`` marks a directory (by path) opaque."""
    tmp: bytes | None = None

    def at(place: Place) -> tuple[int, bytes]:
        nonlocal tmp
        if place is Place.UPPER:
            return dir_fd, name
        if tmp is None:
            tmp = work.new_name()
        return work.fd, tmp

    try:
        for step in steps:
            if isinstance(step, Make):
                make(*at(step.place))
            elif isinstance(step, Finish):
                finish(*at(step.place))
            elif isinstance(step, SetOpaque):
                assert set_opaque is not None
                set_opaque(proc_path(*at(step.place)))
            elif isinstance(step, PutWhiteout):
                work.make_whiteout(*at(step.place))
            elif isinstance(step, Install):
                renameat2(*at(Place.WORK), dir_fd, name,
                          RENAME_EXCHANGE if step.exchange else 0)
            elif isinstance(step, DropWork):
                work.remove(at(Place.WORK)[1])
            elif isinstance(step, Unlink):
                os.unlink(name, dir_fd=dir_fd)
            elif isinstance(step, Evict):
                renameat2(dir_fd, name, *at(Place.WORK))
    except BaseException:
        if tmp is not None:
            work.remove(tmp)
        raise
