"""What to run: a container's specification, parsed and checked from the user's options.

A :class:`Spec` is plain data (JSON round-trips through ``config.json``); nothing here touches
the system except the checks that a bind-mount source exists.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from unionfs.errors import UserError
from unionfs.runtime.namespaces import IdMap
from unionfs.runtime.network import Port, check_mode

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_COMMAND = ["/bin/sh"]
MIN_MEMORY = 6 * 1024 * 1024  # docker's lower bound: smaller limits kill the runtime itself
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # docker's rule for volumes
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass
class Volume:
    """A bind mount ``HOST:CTR[:ro]``, or a named volume ``NAME:CTR[:ro]`` (``volume`` is
    its name; ``host`` its data directory once runtime.volumes resolved it)."""

    host: str
    container: str
    read_only: bool = False
    volume: str = ""


@dataclass
class Device:
    """A host device node passed in with ``--device HOST[:CTR]``."""

    host: str
    container: str


@dataclass
class Limits:
    """Cgroup limits; ``None`` means not set."""

    memory: int | None = None
    cpu_shares: int | None = None
    cpus: float | None = None
    pids: int | None = None

    def any(self) -> bool:
        """True when at least one limit was asked for."""
        return any(v is not None for v in asdict(self).values())


@dataclass
class Spec:
    """Everything that defines one container's run."""

    image: str
    command: list[str] = field(default_factory=list)
    name: str = ""
    interactive: bool = False
    tty: bool = False
    detach: bool = False
    remove: bool = False
    env: list[str] = field(default_factory=list)
    workdir: str = "/"
    user: str = ""
    hostname: str = ""
    volumes: list[Volume] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    read_only: bool = False
    network: str = "private"
    userns: bool = False
    init: bool = False
    ports: list[Port] = field(default_factory=list)  # -p/-P (private network only)
    uidmap: list[IdMap] = field(default_factory=list)  # --uidmap: a user namespace's map
    gidmap: list[IdMap] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)  # the image's, or --entrypoint
    stop_signal: str = ""  # the image's StopSignal (empty: SIGTERM)
    # Security (see runtime.security): capabilities, seccomp, devices passed in.
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    seccomp: str | dict[str, Any] = "default"  # "default", "unconfined" or a docker profile
    devices: list[Device] = field(default_factory=list)

    def argv(self) -> list[str]:
        """Entrypoint + command (``/bin/sh`` when the image and the run line give none)."""
        return [*self.entrypoint, *self.command] or list(DEFAULT_COMMAND)

    def environment(self) -> dict[str, str]:
        """The container's environment: defaults, then ``-e`` entries in order."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname, "HOME": "/root"}
        if self.tty:
            env["TERM"] = "xterm"
        for item in self.env:
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
            elif key in os.environ:
                env[key] = os.environ[key]
        return env

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["volumes"] = [Volume(**v) for v in data.get("volumes", [])]
        data["limits"] = Limits(**data.get("limits", {}))
        data["ports"] = [Port(**p) for p in data.get("ports", [])]
        data["uidmap"] = [IdMap(**m) for m in data.get("uidmap", [])]
        data["gidmap"] = [IdMap(**m) for m in data.get("gidmap", [])]
        data["devices"] = [Device(**d) for d in data.get("devices", [])]
        return cls(**data)


def parse_size(text: str) -> int:
    """``"64m"``, ``"2g"``, ``"512MiB"``, ``"1048576"`` as bytes (binary units, as docker)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise UserError(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_memory(text: str) -> int:
    """A ``--memory`` value, refusing what cannot work."""
    value = parse_size(text)
    if value < MIN_MEMORY:
        raise UserError("Minimum memory limit allowed is 6MB")
    return value


def parse_cpus(text: str) -> float:
    """A ``--cpus`` value: a positive decimal number of CPUs."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"invalid argument \"{text}\" for \"--cpus\" flag") from None
    ncpu = os.cpu_count() or 1
    if not 0.01 <= value <= ncpu:
        raise UserError(f"range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                        f"{ncpu} CPUs available")
    return value


def parse_cpu_shares(value: int) -> int:
    """A ``--cpu-shares`` value within cgroup v1's range [2, 262144]."""
    if not 2 <= value <= 262144:
        raise UserError(f"invalid --cpu-shares {value}: the range is 2 to 262144")
    return value


def parse_volume(text: str) -> Volume:
    """``HOST:CTR[:ro|rw]``; a missing host path is made later, as a directory, by
    :func:`make_missing_sources` (docker's ``-v``). A source without a ``/`` that does not
    start with ``.`` is a named volume, as docker decides."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UserError(f"invalid volume specification: '{text}'")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UserError(f"invalid mode: {mode} in volume '{text}'")
    if not parts[1].startswith("/"):
        raise UserError(f"invalid mount config: mount path must be absolute: {parts[1]}")
    target = os.path.normpath(parts[1])
    if "/" not in parts[0] and not parts[0].startswith("."):
        return Volume("", target, mode == "ro", volume=check_volume_name(parts[0]))
    return Volume(os.path.abspath(parts[0]), target, mode == "ro")


def check_name(name: str) -> str:
    """A container name as docker allows them."""
    if not _NAME_RE.match(name):
        raise UserError(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                        "are allowed")
    return name


def check_volume_name(name: str) -> str:
    """A volume name as docker allows them."""
    if not _VOLUME_NAME_RE.match(name):
        raise UserError(f'invalid volume name "{name}": only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are '
                        "allowed, at least two characters")
    return name


def check_network(mode: str) -> str:
    """``private`` (own namespace through pasta), ``none`` (loopback only) or ``host``."""
    return check_mode(mode)


def make_missing_sources(volumes: list[Volume]) -> None:
    """Create the host directories of ``-v`` sources that do not exist (as docker's ``-v``
    does); called once every option has been checked."""
    for vol in volumes:
        if not vol.volume and not os.path.lexists(vol.host):
            try:
                os.makedirs(vol.host, mode=0o755)
            except OSError as exc:
                raise UserError(f"cannot create bind source {vol.host}: {exc.strerror}") from None
