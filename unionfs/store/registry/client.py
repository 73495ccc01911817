"""A client of the OCI distribution API (v2) on httpx: auth, retries, manifests, blobs.

One :class:`Registry` per registry host, shared by the threads that fetch or send layers
(httpx's pool is thread-safe). Auth follows the registry's ``WWW-Authenticate`` challenge: a
Bearer token fetched from the realm it names (with the stored credentials, if any) for each
repository scope, or HTTP basic auth. Transient failures (connection errors, timeouts, 429,
5xx) are retried with backoff. ``tls_verify=False`` (and loopback hosts, as docker treats
them) tries HTTPS without verification first, then plain HTTP.

``UNIONFS_REGISTRY_LOOPBACK_ONLY=1`` refuses, before any connection or DNS look-up, every
request to a host that is not a loopback address (the tests set it).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from unionfs.errors import OperationFailed
from unionfs.store.registry.auth import Challenge, Credentials, parse_challenge
from unionfs.store.schema import INDEX_TYPES, MANIFEST_TYPES, MAX_DOCUMENT

ACCEPT = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES))
RETRIES = 4
BACKOFF = 0.5  # seconds before the first retry; doubled each time (the tests set it to 0)
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RegistryError(OperationFailed):
    """The registry refused or failed a request (exit status 1)."""


class Refused(RegistryError):
    """``UNIONFS_REGISTRY_LOOPBACK_ONLY=1`` forbids this host (no connection was made)."""


class Transient(Exception):
    """A failure worth trying again."""


class _SessionLost(Exception):
    """The registry no longer knows an upload session: start a new one."""


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_allowed(host: str) -> None:
    """Refused when only loopback registries are allowed and ``host`` is not one."""
    if os.environ.get("UNIONFS_REGISTRY_LOOPBACK_ONLY") == "1" and not is_loopback(host):
        raise Refused(f"refusing to contact {host}: only loopback registries are allowed "
                      "(UNIONFS_REGISTRY_LOOPBACK_ONLY=1)")


def _guard(request: httpx.Request) -> None:
    """Every request (token realms and redirects too) passes the loopback guard."""
    check_allowed(request.url.netloc.decode())


class Registry:
    """The distribution API of one registry host."""

    def __init__(self, host: str, *, tls_verify: bool | None = None,
                 credentials: Credentials | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        check_allowed(host)
        self.host = host
        insecure = tls_verify is False or (tls_verify is None and is_loopback(host))
        self._schemes = ["https", "http"] if insecure else ["https"]
        self._scheme: str | None = None
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(verify=not insecure, timeout=TIMEOUT, follow_redirects=True,
                                  event_hooks={"request": [_guard]},
                                  limits=httpx.Limits(max_connections=16),
                                  headers={"User-Agent": "unionfs"}, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection and auth ------------------------------------------------------------

    def base(self) -> str:
        """``scheme://host``, probing ``/v2/`` once to pick the scheme."""
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe()
        return f"{self._scheme}://{self.host}"

    def _probe(self) -> str:
        last: Exception | None = None
        for scheme in self._schemes:
            try:
                resp = self._http.get(f"{scheme}://{self.host}/v2/")
            except httpx.HTTPError as exc:
                last = exc
                continue
            if resp.status_code == 400 and scheme == "https":
                continue  # an HTTP server answering a TLS hello (some proxies do)
            if resp.status_code == 401:
                self._challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
            return scheme
        raise RegistryError(f"cannot reach registry {self.host}: {_describe(last)}")

    def check_login(self) -> None:
        """Authenticate against ``/v2/`` (for ``login``): RegistryError when refused."""
        resp = self.request("GET", "/v2/", scope="")
        if resp.status_code != 200:
            raise RegistryError(f"login to {self.host} failed: HTTP {resp.status_code}")

    def _auth_header(self, scope: str) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            if self.credentials is None:
                return {}
            return {"Authorization": _basic(self.credentials)}
        token = self._tokens.get(scope)
        if token is None:
            token = self._fetch_token(challenge, scope)
            self._tokens[scope] = token
        return {"Authorization": f"Bearer {token}"}

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} asked for a token without a realm")
        params = {"service": challenge.params.get("service", "")}
        if scope:
            params["scope"] = scope
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        try:
            resp = self._http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the token server {realm}: {_describe(exc)}"
                                ) from None
        if resp.status_code in (401, 403):
            raise RegistryError(f"authentication to {self.host} failed: credentials refused")
        if resp.status_code != 200:
            raise RegistryError(f"token server {realm} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {realm} sent no token")
        return token

    # -- requests -----------------------------------------------------------------------

    def request(self, method: str, path: str, *, scope: str, headers: dict[str, str] | None
                = None, content: Any = None, params: dict[str, str] | None = None
                ) -> httpx.Response:
        """A request (body read), retried when transient, re-authenticated once on 401."""
        for attempt in range(RETRIES + 1):
            try:
                return self._attempt(method, path, scope, headers, content, params)
            except Transient as exc:
                if attempt == RETRIES or not _rewindable(content):
                    raise RegistryError(f"{self.host}: {exc}") from None
                _rewind(content)
                time.sleep(BACKOFF * 2 ** attempt)
        raise AssertionError("unreachable")

    def _attempt(self, method: str, path: str, scope: str, headers: dict[str, str] | None,
                 content: Any, params: dict[str, str] | None) -> httpx.Response:
        url = path if path.startswith(("http://", "https://")) else self.base() + path
        for _round in range(2):
            hdrs = {**(headers or {}), **self._auth_header(scope)}
            try:
                resp = self._http.request(method, url, headers=hdrs, content=content,
                                          params=params)
            except httpx.TransportError as exc:
                raise Transient(_describe(exc)) from None
            if resp.status_code in TRANSIENT_STATUS:
                raise Transient(f"HTTP {resp.status_code}")
            if resp.status_code != 401 or not self._reauth(resp, scope):
                return resp
            _rewind(content)
        return resp

    @contextlib.contextmanager
    def stream(self, path: str, *, scope: str, headers: dict[str, str] | None = None
               ) -> Iterator[httpx.Response]:
        """A GET whose body is read by the caller (``iter_raw``). Opening it is retried;
        a body that breaks raises the caller's ``httpx.TransportError`` (see pull's resume)."""
        resp = self._open_stream(self.base() + path, scope, headers or {})
        try:
            yield resp
        finally:
            resp.close()

    def _open_stream(self, url: str, scope: str, headers: dict[str, str]) -> httpx.Response:
        reauthed = False
        for attempt in range(RETRIES + 1):
            request = self._http.build_request("GET", url, headers={
                **headers, **self._auth_header(scope)})
            try:
                resp = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise RegistryError(f"{self.host}: {_describe(exc)}") from None
                time.sleep(BACKOFF * 2 ** attempt)
                continue
            if resp.status_code == 401 and not reauthed and self._reauth(resp, scope):
                resp.close()
                reauthed = True
                continue
            if resp.status_code in TRANSIENT_STATUS and attempt < RETRIES:
                resp.close()
                time.sleep(BACKOFF * 2 ** attempt)
                continue
            return resp
        raise RegistryError(f"{self.host}: {url} kept failing")

    def _reauth(self, resp: httpx.Response, scope: str) -> bool:
        """After a 401: take the new challenge, drop the token; True when worth a retry."""
        challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
        if challenge is None:
            return False
        with self._lock:
            self._challenge = challenge
            self._tokens.pop(scope, None)
        return challenge.scheme == "bearer" or self.credentials is not None

    # -- the API ------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index; the digest is checked
        when ``ref`` is one."""
        with self.stream(f"/v2/{repo}/manifests/{ref}", scope=pull_scope(repo),
                         headers={"Accept": ACCEPT}) as resp:
            if resp.status_code != 200:
                resp.read()
                _expect(resp, (200,), f"manifest {repo}:{ref}")
            raw = _read_at_most(resp, MAX_DOCUMENT, f"manifest {repo}:{ref}")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"manifest {repo}@{ref} does not match its digest")
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        return raw, media, digest

    def get_blob(self, repo: str, digest: str, size: int, max_size: int) -> bytes:
        """A small blob (a config), digest and size checked."""
        if size > max_size:
            raise RegistryError(f"blob {digest} is larger than {max_size} bytes")
        with self.stream(f"/v2/{repo}/blobs/{digest}", scope=pull_scope(repo)) as resp:
            if resp.status_code != 200:
                resp.read()
                _expect(resp, (200,), f"blob {digest}")
            raw = _read_at_most(resp, size, f"blob {digest}")
        if len(raw) != size or "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise RegistryError(f"blob {digest} from {self.host} does not match its digest")
        return raw

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=push_scope(repo))
        return resp.status_code == 200

    def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Cross-repository mount of ``digest`` from ``source``: True when done."""
        scope = f"{push_scope(repo)} repository:{source}:pull"
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                            params={"mount": digest, "from": source})
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:  # not mounted: an upload was opened instead; drop it
            location = resp.headers.get("location")
            if location:
                self.request("DELETE", self._absolute(location), scope=push_scope(repo))
        return False

    def upload_blob(self, repo: str, digest: str, body: Any, size: int,
                    chunk_size: int = 0) -> None:
        """Send a blob: one PUT (monolithic), or, when ``chunk_size`` is set, ``body`` is a
        file and the blob is larger, PATCHes of ``chunk_size`` bytes (``Content-Range``)
        that resume where the registry says it is after a broken one. ``body`` is bytes or
        a file at offset 0 (rewound on retry)."""
        if chunk_size and size > chunk_size and hasattr(body, "seek"):
            self._upload_chunked(repo, digest, body, size, chunk_size)
            return
        scope = push_scope(repo)
        for attempt in range(RETRIES + 1):
            location = self._open_upload(repo, digest)
            _rewind(body)
            resp = self.request("PUT", _with_digest(location, digest), scope=scope,
                                content=body, headers={
                                    "Content-Type": "application/octet-stream",
                                    "Content-Length": str(size)})
            if resp.status_code == 201:
                return
            if resp.status_code not in TRANSIENT_STATUS or attempt == RETRIES:
                _expect(resp, (201,), f"upload of {digest}")
        raise AssertionError("unreachable")

    def _open_upload(self, repo: str, digest: str) -> str:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=push_scope(repo))
        _expect(resp, (202,), f"upload of {digest}")
        return self._absolute(resp.headers.get("location", ""))

    def _upload_chunked(self, repo: str, digest: str, f: Any, size: int, chunk: int) -> None:
        """PATCH the blob in chunks; after a broken PATCH ask the session where it is and
        go on from there; a session the registry gave up on is started again."""
        scope = push_scope(repo)
        for _session in range(RETRIES + 1):
            location = self._open_upload(repo, digest)
            try:
                location = self._send_chunks(location, scope, digest, f, size, chunk)
            except _SessionLost:
                continue
            resp = self.request("PUT", _with_digest(location, digest), scope=scope,
                                headers={"Content-Length": "0"})
            _expect(resp, (201,), f"upload of {digest}")
            return
        raise RegistryError(f"{self.host}: upload of {digest} kept failing")

    def _send_chunks(self, location: str, scope: str, digest: str, f: Any, size: int,
                     chunk: int) -> str:
        offset, breaks = 0, 0
        while offset < size:
            n = min(chunk, size - offset)
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}
            try:
                resp = self._attempt("PATCH", location, scope, headers,
                                     _FileRegion(f, offset, n), None)
            except Transient:
                resp = None
            if resp is not None and resp.status_code == 202:
                location = self._absolute(resp.headers.get("location") or location)
                offset += n
                continue
            if resp is not None and resp.status_code != 416:
                _expect(resp, (202,), f"upload of {digest}")
            breaks += 1
            if breaks > RETRIES:
                raise RegistryError(f"{self.host}: upload of {digest} kept breaking")
            time.sleep(BACKOFF * 2 ** (breaks - 1))
            location, offset = self._upload_status(location, scope)
        return location

    def _upload_status(self, location: str, scope: str) -> tuple[str, int]:
        """(location, bytes the registry holds) of an upload session, or _SessionLost."""
        resp = self.request("GET", location, scope=scope)
        if resp.status_code != 204:
            raise _SessionLost()
        first, _, last = resp.headers.get("range", "").removeprefix("bytes=").partition("-")
        if first != "0" or not last.isdigit():
            raise _SessionLost()
        held = int(last) + 1 if int(last) > 0 else 0  # "0-0": distribution's empty session
        return self._absolute(resp.headers.get("location") or location), held

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scope=push_scope(repo),
                            content=raw, headers={"Content-Type": media_type})
        _expect(resp, (201, 200), f"manifest {repo}:{ref}")
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (following ``Link`` pagination)."""
        out: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list"
        while path:
            resp = self.request("GET", path, scope=pull_scope(repo))
            _expect(resp, (200,), f"tags of {repo}")
            try:
                found = resp.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"malformed tag list of {repo}") from None
            out += [t for t in found if isinstance(t, str)]
            nxt = resp.links.get("next", {}).get("url")
            path = self._absolute(nxt) if nxt else None
        return out

    def _absolute(self, location: str) -> str:
        if location.startswith(("http://", "https://")):
            return location
        return self.base() + (location if location.startswith("/") else "/" + location)


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _basic(creds: Credentials) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _expect(resp: httpx.Response, ok: tuple[int, ...], what: str) -> None:
    if resp.status_code in ok:
        return
    if resp.status_code == 404:
        raise RegistryError(f"{what}: not found")
    if resp.status_code in (401, 403):
        raise RegistryError(f"{what}: access denied (unionfs login?)")
    detail = ""
    with contextlib.suppress(ValueError, AttributeError, IndexError, KeyError, TypeError):
        detail = ": " + str(resp.json()["errors"][0]["message"])
    raise RegistryError(f"{what}: HTTP {resp.status_code}{detail}")


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


class _FileRegion:
    """``n`` bytes of file ``f`` from ``offset``, streamed in pieces; iterable again (a
    request re-sent after a new token sends it whole again)."""

    def __init__(self, f: Any, offset: int, n: int) -> None:
        self._f, self._offset, self._n = f, offset, n

    def __iter__(self) -> Iterator[bytes]:
        self._f.seek(self._offset)
        left = self._n
        while left > 0:
            piece = self._f.read(min(left, 1 << 20))
            if not piece:
                raise RegistryError("the blob being uploaded is shorter than its size")
            left -= len(piece)
            yield piece


def _read_at_most(resp: httpx.Response, limit: int, what: str) -> bytes:
    """The body of a streamed answer, refused as soon as it passes ``limit`` bytes."""
    parts, size = [], 0
    try:
        for part in resp.iter_bytes():
            size += len(part)
            if size > limit:
                raise RegistryError(f"{what} is larger than {limit} bytes")
            parts.append(part)
    except httpx.TransportError as exc:
        raise RegistryError(f"{what}: {_describe(exc)}") from None
    return b"".join(parts)


def _rewindable(content: Any) -> bool:
    return content is None or isinstance(content, bytes) or hasattr(content, "seek")


def _rewind(content: Any) -> None:
    if hasattr(content, "seek"):
        content.seek(0)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
