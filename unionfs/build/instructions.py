"""The instructions that change only an image's config, applied to a :class:`ContainerConfig`.

Shared by ``build`` and ``commit --change``. Pure: no I/O.
"""

from __future__ import annotations

import posixpath
import signal
from collections.abc import Mapping

from unionfs.build import words
from unionfs.build.parser import Instruction, parse
from unionfs.errors import UserError
from unionfs.store.imageconfig import ContainerConfig, normalize_port

DEFAULT_SHELL = ["/bin/sh", "-c"]
CONFIG_ONLY = frozenset({"ENV", "CMD", "ENTRYPOINT", "WORKDIR", "USER", "LABEL", "EXPOSE",
                         "VOLUME", "SHELL", "STOPSIGNAL"})


def command_of(ins: Instruction, cfg: ContainerConfig) -> list[str]:
    """An instruction's command: its exec form, or the shell form run by the shell."""
    if ins.exec_form is not None:
        return list(ins.exec_form)
    return [*(cfg.shell or DEFAULT_SHELL), ins.args]


def apply_config(ins: Instruction, cfg: ContainerConfig, variables: Mapping[str, str],
                 escape: str = "\\", *, cmd_inherited: bool = False) -> ContainerConfig:
    """``cfg`` changed by the config-only instruction ``ins`` (a new object).

    ``variables`` expand ``$NAME`` in the arguments (ENV values, ARGs in scope);
    ``cmd_inherited``: the Cmd came from the base image, so ENTRYPOINT resets it (docker).
    """
    cfg = cfg.copy()
    try:
        _APPLY[ins.keyword](ins, cfg, variables, escape, cmd_inherited)
    except UserError as exc:
        if str(exc).startswith(ins.where):
            raise
        raise ins.error(str(exc)) from None
    return cfg


def _env(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
         _: bool) -> None:
    for key, value in words.key_values(ins.args, var, esc, "ENV"):
        cfg.set_env(key, value)


def _label(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
           _: bool) -> None:
    for key, value in words.key_values(ins.args, var, esc, "LABEL"):
        cfg.labels[key] = value


def _cmd(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
         _: bool) -> None:
    cfg.cmd = command_of(ins, cfg) if ins.args else []


def _entrypoint(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
                cmd_inherited: bool) -> None:
    cfg.entrypoint = command_of(ins, cfg) if ins.args else []
    if cmd_inherited:
        cfg.cmd = None


def _workdir(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
             _: bool) -> None:
    path = words.expand(ins.args, var, esc)
    cfg.working_dir = posixpath.normpath(posixpath.join(cfg.working_dir or "/", path))


def _user(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
          _: bool) -> None:
    user = words.expand(ins.args, var, esc).strip()
    if not user or " " in user:
        raise UserError(f"invalid USER {ins.args!r}")
    cfg.user = user


def _expose(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
            _: bool) -> None:
    ports = {normalize_port(p) for p in words.split(ins.args, var, esc)}
    cfg.exposed_ports = sorted({*cfg.exposed_ports, *ports})


def _volume(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
            _: bool) -> None:
    paths = ins.exec_form if ins.exec_form is not None else words.split(ins.args, var, esc)
    if not paths or any(not p for p in paths):
        raise UserError("VOLUME needs a non-empty path")
    cfg.volumes = sorted({*cfg.volumes, *paths})


def _shell(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
           _: bool) -> None:
    if not ins.exec_form:
        raise UserError('SHELL requires the arguments to be in JSON form, e.g. '
                        'SHELL ["/bin/sh", "-c"]')
    cfg.shell = list(ins.exec_form)


def _stopsignal(ins: Instruction, cfg: ContainerConfig, var: Mapping[str, str], esc: str,
                _: bool) -> None:
    cfg.stop_signal = check_signal(words.expand(ins.args, var, esc).strip())


_APPLY = {"ENV": _env, "LABEL": _label, "CMD": _cmd, "ENTRYPOINT": _entrypoint,
          "WORKDIR": _workdir, "USER": _user, "EXPOSE": _expose, "VOLUME": _volume,
          "SHELL": _shell, "STOPSIGNAL": _stopsignal}


def check_signal(text: str) -> str:
    """A signal name (``SIGTERM``, ``TERM``) or number, as written if valid."""
    if text.isdigit() and 0 < int(text) < 65:
        return text
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__:
        raise UserError(f"invalid signal: {text!r}")
    return name


def apply_changes(cfg: ContainerConfig, changes: list[str]) -> ContainerConfig:
    """``commit --change`` lines (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE...)."""
    for number, change in enumerate(changes, 1):
        for ins in parse(change, f"--change {number}").instructions:
            if ins.keyword not in CONFIG_ONLY:
                raise UserError(f"--change: {ins.keyword} is not one of "
                                f"{', '.join(sorted(CONFIG_ONLY))}")
            cfg = apply_config(ins, cfg, cfg.env_dict())
    return cfg
