"""An image's config and the ``run`` options combined into the container's spec, as docker.

- Entrypoint and Cmd: a command on the ``run`` line replaces Cmd; ``--entrypoint`` replaces
  Entrypoint (and drops the image's Cmd); the process is Entrypoint + Cmd.
- Env: the image's, then ``--env-file`` lines, then ``-e`` (later wins).
- WorkingDir and User: the image's unless ``-w`` / ``-u`` is given (a user name is resolved
  in the container's own /etc/passwd and /etc/group when it starts).
- StopSignal: what ``stop`` sends first (SIGTERM when the image sets none).
"""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.runtime.spec import Spec
from unionfs.store.imageconfig import ContainerConfig


def apply_image_config(spec: Spec, image_config: dict[str, Any], *,
                       entrypoint: str | None = None, env_files: list[str] | None = None
                       ) -> Spec:
    """``spec`` (from the command line) completed with the image's config."""
    cfg = ContainerConfig.from_image(image_config)
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        cmd = list(spec.command)
    else:
        ep = list(cfg.entrypoint or [])
        cmd = list(spec.command) or list(cfg.cmd or [])
    env = [*cfg.env, *read_env_files(env_files or []), *spec.env]
    return replace(spec, entrypoint=ep, command=cmd, env=env,
                   workdir=spec.workdir or cfg.working_dir or "/",
                   user=spec.user or cfg.user, stop_signal=cfg.stop_signal)


def read_env_files(paths: list[str]) -> list[str]:
    """``--env-file`` lines: ``K=V`` or ``K`` (passed on), comments and blank lines skipped."""
    out: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UserError(f"open {path}: {exc.strerror}") from None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.lstrip()
            if not line or line.startswith("#"):
                continue
            key = line.partition("=")[0]
            if not key or any(c.isspace() for c in key):
                raise UserError(f"{path}:{number}: invalid variable name {key!r}")
            out.append(line)
    return out


def stop_signal(spec: Spec) -> int:
    """The signal ``stop`` sends first: the image's StopSignal, else SIGTERM."""
    text = getattr(spec, "stop_signal", "") or "SIGTERM"
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(signal.SIGTERM)


def container_config(spec: Spec, base: dict[str, Any] | None) -> ContainerConfig:
    """What ``commit`` records for a container: the base's config with its command, env,
    working dir and user."""
    cfg = ContainerConfig.from_image(base)
    out = cfg.replace(entrypoint=list(spec.entrypoint) if spec.entrypoint else cfg.entrypoint,
                      cmd=list(spec.command) if spec.command else cfg.cmd,
                      working_dir=spec.workdir if spec.workdir not in ("", "/") else
                      cfg.working_dir, user=spec.user or cfg.user)
    for item in spec.env:
        key, sep, value = item.partition("=")
        if sep and key:
            out.set_env(key, value)
    return out
