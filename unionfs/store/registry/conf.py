"""Where a reference is fetched from: podman's ``registries.conf`` (version 2) routing.

A ``[[registry]]`` table whose ``prefix`` (``host[:port][/path]``, or ``*.domain``) matches a
repository rewrites that prefix to its ``location``, may mark it ``insecure`` (plain HTTP or
unverified TLS) or ``blocked``, and may list ``[[registry.mirror]]`` locations that ``pull``
tries first, in order (``pull-from-mirror = "all"|"digest-only"|"tag-only"``, or the older
``mirror-by-digest-only``). The longest matching prefix wins. ``push`` uses the location only.

Files, as podman reads them: ``$CONTAINERS_REGISTRIES_CONF`` alone when set; otherwise
``$XDG_CONFIG_HOME/containers/registries.conf`` (``~/.config``) when it exists, with the
drop-ins of ``$XDG_CONFIG_HOME/containers/registries.conf.d/*.conf``; else
``/etc/containers/registries.conf`` with ``/etc/containers/registries.conf.d/*.conf`` and
then the user's drop-ins. A later table with the same prefix replaces an earlier one. Keys
this client has no use for (``unqualified-search-registries``, ``[aliases]``: short names
resolve as docker resolves them) are ignored.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError
from unionfs.store.registry.reference import Reference, at

SYSTEM = Path("/etc/containers/registries.conf")
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from: str = "all"


@dataclass(frozen=True)
class Entry:
    """One ``[[registry]]`` table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    source: str = ""  # the file it came from, for messages


@dataclass(frozen=True)
class Endpoint:
    """One place to ask for a reference: the reference as that registry names it."""

    ref: Reference
    tls_verify: bool | None  # False: registries.conf calls it insecure
    mirror: bool = False


def conf_files() -> list[Path]:
    """The files read, in order (later ones override earlier ones by prefix)."""
    explicit = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if explicit:
        return [Path(explicit)]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or
                       os.path.expanduser("~/.config")) / "containers"
    user = config_home / "registries.conf"
    if user.is_file():
        return [user, *_dropins(config_home / "registries.conf.d")]
    return [SYSTEM, *_dropins(SYSTEM.with_suffix(".conf.d")),
            *_dropins(config_home / "registries.conf.d")]


def _dropins(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".conf" and p.is_file())
    except OSError:
        return []


def load() -> list[Entry]:
    """Every ``[[registry]]`` entry of the configuration (one per prefix)."""
    entries: dict[str, Entry] = {}
    for path in conf_files():
        for entry in _read(path):
            entries[entry.prefix] = entry
    return list(entries.values())


def _read(path: Path) -> list[Entry]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    tables = data.get("registry", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{path}: [[registry]] must be an array of tables")
    return [_entry(t, path) for t in tables]


def _entry(table: dict[str, Any], path: Path) -> Entry:
    def text(key: str, where: dict[str, Any] = table) -> str:
        value = where.get(key, "")
        if not isinstance(value, str):
            raise UserError(f"{path}: {key} must be a string")
        return value.strip().rstrip("/")

    def flag(key: str, where: dict[str, Any] = table) -> bool:
        value = where.get(key, False)
        if not isinstance(value, bool):
            raise UserError(f"{path}: {key} must be true or false")
        return value

    location = text("location")
    prefix = text("prefix") or location
    if not prefix:
        raise UserError(f"{path}: a [[registry]] needs a prefix or a location")
    if prefix.startswith("*.") and location:
        raise UserError(f"{path}: the wildcard prefix {prefix} cannot have a location")
    by_digest = flag("mirror-by-digest-only")
    pull_from = text("pull-from-mirror") or ("digest-only" if by_digest else "all")
    mirrors = []
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list) or not all(isinstance(m, dict) for m in raw_mirrors):
        raise UserError(f"{path}: [[registry.mirror]] must be an array of tables")
    for m in raw_mirrors:
        mirror_from = text("pull-from-mirror", m) or pull_from
        if mirror_from not in PULL_FROM_MIRROR:
            raise UserError(f"{path}: pull-from-mirror must be one of "
                            f"{', '.join(PULL_FROM_MIRROR)}")
        if not text("location", m):
            raise UserError(f"{path}: a [[registry.mirror]] needs a location")
        mirrors.append(Mirror(text("location", m), flag("insecure", m), mirror_from))
    return Entry(prefix, location or ("" if prefix.startswith("*.") else prefix),
                 flag("insecure"), flag("blocked"), tuple(mirrors), str(path))


def _match(prefix: str, repository: str) -> bool:
    if prefix.startswith("*."):
        domain = repository.split("/", 1)[0]
        return domain.endswith(prefix[1:])
    return repository == prefix or repository.startswith(prefix + "/")


def entry_for(ref: Reference, entries: list[Entry] | None = None) -> Entry | None:
    """The entry with the longest prefix matching ``ref``'s repository, or None."""
    found = [e for e in (load() if entries is None else entries)
             if _match(e.prefix, ref.repository)]
    return max(found, key=lambda e: len(e.prefix), default=None)


def _rewrite(ref: Reference, entry: Entry, location: str) -> Reference:
    """``ref`` with ``entry``'s prefix replaced by ``location``."""
    if not location or entry.prefix.startswith("*."):
        return ref
    rest = ref.repository[len(entry.prefix):]
    return at(location + rest, ref.tag, ref.digest, where=entry.source)


def endpoints(ref: Reference, *, push: bool = False, tls_verify: bool | None = None,
              entries: list[Entry] | None = None) -> list[Endpoint]:
    """Where to ask for ``ref``: its mirrors (when pulling), then its location. An explicit
    ``tls_verify`` (``--tls-verify``) wins over the configuration's ``insecure``."""
    entry = entry_for(ref, entries)
    if entry is None:
        return [Endpoint(ref, tls_verify)]
    if entry.blocked:
        raise UserError(f"registry {ref.domain} is blocked in {entry.source}")

    def verify(insecure: bool) -> bool | None:
        return tls_verify if tls_verify is not None else (False if insecure else None)

    out = []
    if not push:
        wanted = "digest-only" if ref.digest else "tag-only"
        out = [Endpoint(_rewrite(ref, entry, m.location), verify(m.insecure), mirror=True)
               for m in entry.mirrors if m.pull_from in ("all", wanted)]
    out.append(Endpoint(_rewrite(ref, entry, entry.location), verify(entry.insecure)))
    return out
