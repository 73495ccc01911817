"""Image references in docker's grammar, and docker's short-name normalisation.

``[DOMAIN/]PATH[:TAG][@DIGEST]``: the first component is a domain when it contains ``.`` or
``:`` or is ``localhost``; path components are lowercase alphanumerics joined by ``.``,
``_``, ``__`` or dashes; a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; the name is at most
255 characters. Without a domain the registry is ``docker.io``, and a one-component path there
is an official image, ``library/NAME``. ``docker.io/library/x`` is shown (and stored) as ``x``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unionfs.errors import UserError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
MAX_NAME = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class Reference:
    """A fully qualified reference: registry domain, repository path, tag and/or digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``domain/path``, as docker names a repository."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as docker shows it (``debian``, ``user/app``, ``host:5000/x``)."""
        if self.domain == DOCKER_HUB:
            return self.path.removeprefix("library/")
        return self.repository

    @property
    def api_host(self) -> str:
        """The host:port the distribution API is served on."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def ref(self) -> str:
        """The tag or digest to ask the registry for (``latest`` when neither is given)."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, check_tag(tag), None)

    @property
    def store_tag(self) -> str:
        """The store's ``name:tag`` for this reference (familiar name, like docker)."""
        return f"{self.familiar_name}:{self.tag or DEFAULT_TAG}"

    @property
    def familiar(self) -> str:
        """The whole reference as docker shows it (``debian:latest``, ``x@sha256:...``)."""
        if self.digest:
            return f"{self.familiar_name}{':' + self.tag if self.tag else ''}@{self.digest}"
        return self.store_tag

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise UserError(f"invalid tag {tag!r}: 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    return tag


def split_domain(name: str) -> tuple[str, str]:
    """(domain, path) of a repository name, docker's way (``docker.io`` when none)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; a one-line :class:`UserError` names what is wrong."""
    if not text or text != text.strip():
        raise UserError(f"invalid reference format: {text!r}")
    name, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise UserError(f"invalid reference format: {text!r} (malformed digest)")
    tag: str | None = None
    head, colon, tail = name.rpartition(":")
    if colon and "/" not in tail:
        name, tag = head, tail
        if not _TAG.match(tag):
            raise UserError(f"invalid reference format: {text!r} (invalid tag {tag!r})")
    if len(name) > MAX_NAME:
        raise UserError(f"invalid reference format: {text!r} (name longer than {MAX_NAME})")
    domain, path = split_domain(name)
    if not _DOMAIN.match(domain):
        raise UserError(f"invalid reference format: {text!r} (invalid registry {domain!r})")
    if not _PATH.match(path):
        if path.lower() != path:
            raise UserError(f"invalid reference format: {text!r} "
                            "(repository name must be lowercase)")
        raise UserError(f"invalid reference format: {text!r}")
    return Reference(domain, path, tag, digest or None)


def at(name: str, tag: str | None, digest: str | None, *, where: str = "") -> Reference:
    """The reference ``name`` (``host[:port]/path``: its first component is always the
    registry, as in a registries.conf location) with ``tag`` and ``digest``."""
    domain, _, path = name.partition("/")
    if not _DOMAIN.match(domain) or not _PATH.match(path) or len(name) > MAX_NAME:
        source = f" (in {where})" if where else ""
        raise UserError(f"invalid registry location {name!r}{source}: expected "
                        "HOST[:PORT]/REPOSITORY")
    return Reference(domain, path, tag, digest)
