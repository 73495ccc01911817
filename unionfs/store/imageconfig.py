"""The runtime part of an image config (OCI ``config`` object) as typed data.

An OCI image config holds ``{"config": {"Cmd": [...], "Env": [...], ...}, "rootfs": ...,
"history": [...]}``. :class:`ContainerConfig` is the ``config`` object: what ``run`` uses to
start a container and what ``build`` and ``commit --change`` change. Field names on disk are
the OCI (and docker) ones; empty fields are left out, as docker and buildah write them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from unionfs.errors import UserError

# field name -> OCI key, in the order docker prints them
OCI_NAMES = {
    "user": "User", "exposed_ports": "ExposedPorts", "env": "Env", "entrypoint": "Entrypoint",
    "cmd": "Cmd", "volumes": "Volumes", "working_dir": "WorkingDir", "labels": "Labels",
    "stop_signal": "StopSignal", "shell": "Shell",
}


@dataclass
class ContainerConfig:
    """Entrypoint, Cmd, Env, WorkingDir, User, StopSignal, Labels, ports, volumes, shell.

    ``None`` for ``entrypoint``/``cmd``/``shell`` means "not set" (inherit or default), which
    differs from an empty list (set to nothing, e.g. ``ENTRYPOINT []``).
    """

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    shell: list[str] | None = None

    @classmethod
    def from_image(cls, image_config: dict[str, Any] | None) -> ContainerConfig:
        """The ``config`` object of a full image config (missing or malformed: defaults)."""
        raw = (image_config or {}).get("config") or {}
        if not isinstance(raw, dict):
            return cls()
        return cls.from_oci(raw)

    @classmethod
    def from_oci(cls, raw: dict[str, Any]) -> ContainerConfig:
        """Read an OCI ``config`` object, ignoring fields of the wrong type."""
        return cls(
            entrypoint=_str_list_or_none(raw.get("Entrypoint")),
            cmd=_str_list_or_none(raw.get("Cmd")),
            env=_str_list_or_none(raw.get("Env")) or [],
            working_dir=_str(raw.get("WorkingDir")),
            user=_str(raw.get("User")),
            stop_signal=_str(raw.get("StopSignal")),
            labels={str(k): str(v) for k, v in (raw.get("Labels") or {}).items()}
            if isinstance(raw.get("Labels"), dict) else {},
            exposed_ports=sorted(_keys(raw.get("ExposedPorts"))),
            volumes=sorted(_keys(raw.get("Volumes"))),
            shell=_str_list_or_none(raw.get("Shell")),
        )

    def to_oci(self) -> dict[str, Any]:
        """The OCI ``config`` object, empty fields left out."""
        out: dict[str, Any] = {}
        for name, key in OCI_NAMES.items():
            value = getattr(self, name)
            if name in ("exposed_ports", "volumes"):
                value = {v: {} for v in value} if value else None
            if value is None or (value in ("", [], {}) and name not in ("entrypoint", "cmd")):
                continue
            out[key] = value
        return out

    def copy(self) -> ContainerConfig:
        """A deep copy (lists and dicts not shared)."""
        return ContainerConfig.from_oci(self.to_oci())

    def env_dict(self) -> dict[str, str]:
        """``Env`` as a dict (later entries win)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def set_env(self, key: str, value: str) -> None:
        """Set ``key`` (replacing it in place if present, else appending)."""
        if not key or "=" in key:
            raise UserError(f"invalid environment variable name: {key!r}")
        entry = f"{key}={value}"
        for i, item in enumerate(self.env):
            if item.partition("=")[0] == key:
                self.env[i] = entry
                return
        self.env.append(entry)

    def replace(self, **changes: Any) -> ContainerConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self.copy(), **changes)


def with_config(image_config: dict[str, Any], config: ContainerConfig) -> dict[str, Any]:
    """A full image config whose ``config`` object is ``config``."""
    out = dict(image_config)
    out["config"] = config.to_oci()
    return out


def normalize_port(text: str) -> str:
    """``80`` -> ``80/tcp``; ``53/udp`` kept; anything else rejected."""
    port, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    lo, _, hi = port.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
        raise UserError(f"invalid port: {text!r}")
    if not 0 < int(lo) < 65536 or (hi and not int(lo) <= int(hi) < 65536):
        raise UserError(f"invalid port: {text!r}")
    return f"{port}/{proto}"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _str_list_or_none(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _keys(value: Any) -> list[str]:
    return [str(k) for k in value] if isinstance(value, dict) else []
