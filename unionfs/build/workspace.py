"""Where a step changes files: RUN in a container of the runtime, COPY on a union mount.

Both write into a fresh upper over the layers so far; the upper then becomes a layer of the
store (moved, not copied). RUN uses the runtime's public functions (:mod:`runtime.state`,
:mod:`runtime.supervisor`), so a build step runs with the same namespaces, mounts and
privileges as ``unionfs run``. This is the only module of the build that imports the runtime.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from unionfs.errors import UserError
from unionfs.store import Layer, Store

# Paths the runtime creates as mount targets when an image lacks them: not layer content.
MOUNT_TARGETS = ("etc/hostname", "etc/hosts", "etc/resolv.conf", "proc", "sys", "dev")


@dataclass(frozen=True)
class Base:
    """What a step runs on: layer directories (top first) and a name for the records."""

    id: str
    layer_dirs: list[Path] = field(default_factory=list)


@dataclass
class RunResult:
    """A RUN's exit status, its last output line, and its layer (None when it failed)."""

    code: int
    last_line: str
    layer: Layer | None


def run(store: Store, base: Base, argv: list[str], *, env: list[str], workdir: str,
        user: str, network: str, out: TextIO, volumes: list[str] | None = None) -> RunResult:
    """Run ``argv`` in a container on ``base``; its output goes to ``out`` as it comes.

    ``volumes`` (``HOST:CTR[:ro]``) are bind-mounted into the container, as ``run -v``; what
    is written there is not part of the layer.
    """
    from unionfs.runtime import state, supervisor
    from unionfs.runtime.spec import Spec, parse_volume

    if not base.layer_dirs:
        raise UserError("RUN needs a base image with a shell (FROM scratch has none)")
    binds = [parse_volume(v) for v in volumes or []]
    from unionfs.runtime.volumes import resolve

    resolve(store, binds)  # NAME:/path: a named volume, created when missing (as run -v)
    spec = Spec(image=base.id, command=argv, env=env, workdir=workdir or "/", user=user,
                network=network, volumes=binds)
    container = state.create(store, spec, base)
    try:
        with _following(container.log_path, out) as tail:
            code = supervisor.supervise(container, attached=False)
        if code != 0 or container.upper is None:
            return RunResult(code, tail.last, None)
        upper = container.upper
        _drop_mount_targets(upper, base.layer_dirs,
                            [b.container.lstrip("/") for b in binds])
        layer = store.adopt_dir(upper, f"build RUN on {base.id}")
        return RunResult(0, tail.last, layer)
    finally:
        state.delete(container)


def check_volumes(volumes: list[str]) -> None:
    """Refuse a bad ``-v`` before any step runs."""
    from unionfs.runtime.spec import parse_volume

    for v in volumes:
        parse_volume(v)


@contextlib.contextmanager
def working_tree(store: Store, base: Base) -> Iterator[tuple[Path, list[Layer]]]:
    """A writable tree of ``base`` (a union mount over a fresh upper; a plain dir on scratch).

    After the block, the upper becomes a layer, given back in the one-element list.
    """
    from unionfs.api import MountOptions, mount

    upper, work = store.new_upper("build", secrets.token_hex(8))
    made: list[Layer] = []
    try:
        if base.layer_dirs:
            mnt = upper.parent / "root"
            mnt.mkdir()
            handle = mount(base.layer_dirs, mnt, upper, options=MountOptions(
                workdir=work, log_file=upper.parent / "unionfs.log"))
            try:
                yield mnt, made
            finally:
                handle.unmount()
        else:
            yield upper, made
        made.append(store.adopt_dir(upper, f"build COPY on {base.id}"))
    finally:
        shutil.rmtree(upper.parent, ignore_errors=True)


def _drop_mount_targets(upper: Path, lowers: list[Path], extra: list[str]) -> None:
    """Remove empty mount targets the runtime made in ``upper`` where no lower has them."""
    for rel in [*MOUNT_TARGETS, *extra]:
        path = upper / rel
        if any(os.path.lexists(low / rel) for low in lowers):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only when empty
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()


class _Tail:
    def __init__(self) -> None:
        self.last = ""


@contextlib.contextmanager
def _following(log: Path, out: TextIO) -> Iterator[_Tail]:
    """Copy the output the container logs (runtime.logs records) to ``out`` while the block
    runs; note the last line."""
    from unionfs.runtime import logs

    tail = _Tail()
    done = threading.Event()

    def pump() -> None:
        offset = 0
        while True:
            finished = done.is_set()
            for record, after in logs.records(log, offset):
                offset = after
                text = str(record.get("log", ""))
                out.write(text)
                out.flush()
                if text.strip():
                    tail.last = text.strip().splitlines()[-1].strip()
            if finished:
                return
            done.wait(0.05)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield tail
    finally:
        done.set()
        thread.join()
