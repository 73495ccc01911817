"""Registry credentials, kept where podman and docker keep them, and auth challenges.

Read (first match wins): ``--authfile`` or ``$REGISTRY_AUTH_FILE``, then
``${XDG_RUNTIME_DIR}/containers/auth.json`` (podman), then ``~/.docker/config.json``
(docker). Both files are ``{"auths": {"HOST": {"auth": base64("user:password")}}}``; docker
files Docker Hub under ``https://index.docker.io/v1/``. ``login`` writes the first of those
files that applies (created with mode 0600, replaced atomically, other entries kept).
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.store.registry.reference import DOCKER_HUB

HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def auth_files(authfile: str | None = None) -> list[Path]:
    """The credential files, in the order they are read."""
    files = []
    explicit = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        files.append(Path(explicit))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        files.append(Path(runtime) / "containers" / "auth.json")
    files.append(Path(os.path.expanduser("~/.docker/config.json")))
    return files


def _keys(domain: str) -> list[str]:
    """The keys a registry may be filed under."""
    if domain == DOCKER_HUB:
        return [DOCKER_HUB, HUB_KEY, "index.docker.io", "registry-1.docker.io"]
    return [domain, f"https://{domain}", f"http://{domain}"]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read credentials {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read credentials {path}: not a JSON object")
    return data


def lookup(domain: str, authfile: str | None = None) -> Credentials | None:
    """The stored credentials for ``domain``, or None."""
    for path in auth_files(authfile):
        auths = _read(path).get("auths")
        if not isinstance(auths, dict):
            continue
        for key in _keys(domain):
            entry = auths.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                return _decode(entry["auth"], path)
    return None


def _decode(text: str, path: Path) -> Credentials:
    try:
        user, sep, password = base64.b64decode(text, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"malformed credentials in {path}") from None
    if not sep:
        raise UserError(f"malformed credentials in {path}")
    return Credentials(user, password)


def store(domain: str, creds: Credentials, authfile: str | None = None) -> Path:
    """Save ``creds`` for ``domain``; returns the file written (mode 0600)."""
    path = auth_files(authfile)[0]
    data = _read(path)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    assert isinstance(auths, dict)
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    key = HUB_KEY if domain == DOCKER_HUB and path.name == "config.json" else domain
    auths[key] = {"auth": token}
    data["auths"] = auths
    _write_private(path, data)
    return path


def remove(domain: str, authfile: str | None = None) -> list[Path]:
    """Forget ``domain``'s credentials in every file; returns the files changed."""
    changed = []
    for path in auth_files(authfile):
        data = _read(path)
        auths = data.get("auths")
        if not isinstance(auths, dict):
            continue
        keys = [k for k in _keys(domain) if k in auths]
        if keys:
            for k in keys:
                del auths[k]
            _write_private(path, data)
            changed.append(path)
    return changed


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by its owner only, by one rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(data, indent="\t") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "basic"):
        return None
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)
