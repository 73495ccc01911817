"""A real registry on loopback for the tests: Debian's ``docker-registry`` (distribution 2.x),
optionally behind htpasswd basic auth or behind a token server of our own (Bearer JWTs signed
with a throw-away RSA key whose certificate the registry trusts).

Everything listens on 127.0.0.1 only; every process started here is stopped by its fixture.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

USER, PASSWORD = "alice", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryServer:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2]
                / hexd / "data")


def _wait_until_up(host: str, proc: subprocess.Popen[bytes], log: Path,
                   timeout: float = 30) -> None:
    """Wait for the registry to answer /v2/ (any HTTP status), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()}")
        try:
            with contextlib.suppress(urllib.error.HTTPError):  # 401 is up, too
                urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            return
        except OSError:
            time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise RuntimeError(f"docker-registry did not start: {log.read_text()}")


@contextlib.contextmanager
def run_registry(tmp: Path, auth: str | None = None) -> Iterator[RegistryServer]:
    """``docker-registry serve`` on a free loopback port; ``auth`` is None, 'basic' or
    'token'."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    server = RegistryServer(host, tmp / "storage", tmp / "registry.log")
    lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
             f"    rootdirectory: {server.storage}", "  delete:", "    enabled: true",
             "http:", f"  addr: {host}"]
    token: TokenServer | None = None
    if auth == "basic":
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        (tmp / "htpasswd").write_text(f"{USER}:{hashed}\n")
        lines += ["auth:", "  htpasswd:", "    realm: test", f"    path: {tmp / 'htpasswd'}"]
    elif auth == "token":
        token = TokenServer(tmp, server.token_requests)
        lines += ["auth:", "  token:", f"    realm: {token.url}", "    service: test-registry",
                  "    issuer: test-issuer", f"    rootcertbundle: {token.cert}"]
    (tmp / "config.yml").write_text("\n".join(lines) + "\n")
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        _wait_until_up(host, proc, server.log)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if token is not None:
            token.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _LoopbackServer:
    """An HTTP server of the tests' own on a free loopback port, served from a thread."""

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        """Start serving; returns ``127.0.0.1:PORT``."""
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenServer(_LoopbackServer):
    """Issues registry JWTs (RS256, signed with ``openssl``) to callers with the right basic
    credentials, granting what the scope asks; anonymous callers get nothing."""

    def __init__(self, tmp: Path, requests: list[dict[str, str]]) -> None:
        self.key, self.cert = tmp / "token.key", tmp / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-subj", "/CN=test-token", "-keyout", self.key, "-out",
                        self.cert], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self.requests = requests
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.handle(self)

            def log_message(self, *_args: object) -> None:
                return None

        self.url = f"http://{self._serve(Handler)}/token"

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(req.path).query))
        auth = req.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.requests.append({**query, "authorized": str(auth == expected)})
        if auth and auth != expected:
            req.send_response(401)
            req.end_headers()
            return
        access = []
        if auth == expected:
            for scope in query.get("scope", "").split(" "):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    access.append({"type": kind, "name": name,
                                   "actions": actions.split(",")})
        body = json.dumps({"token": self.sign(query.get("service", ""), access)}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def sign(self, service: str, access: Sequence[Mapping[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": "test-issuer", "sub": USER, "aud": service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": hashlib.sha256(
                      str(time.monotonic_ns()).encode()).hexdigest()[:16], "access": access}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing.encode(), check=True, capture_output=True).stdout
        return f"{signing}.{_b64(sig)}"


@dataclass
class Seen:
    """One request the proxy saw, and what it did with it."""

    method: str
    path: str
    range: str  # the request's Range (downloads) or Content-Range (uploads) header
    received: int  # request body bytes
    sent: int = 0  # response body bytes sent back
    forwarded: bool = True


class FaultyProxy(_LoopbackServer):
    """A loopback HTTP proxy in front of a registry that breaks chosen transfers, and
    records every request. ``cut_blob_at``: the first GET of each blob larger than that
    sends that many bytes, then drops the connection. ``drop_patch``: the PATCH with this
    number (1 = first) is dropped: ``"unsent"`` closes the connection without forwarding it
    (the registry never saw it), ``"half"`` forwards its first half (as a smaller chunk)
    and then closes the connection without an answer. ``ignore_range``: Range headers are
    not forwarded (a registry that always answers 200)."""

    def __init__(self, upstream: str, *, cut_blob_at: int | None = None,
                 drop_patch: tuple[int, str] | None = None, ignore_range: bool = False
                 ) -> None:
        self.upstream = upstream
        self.cut_blob_at = cut_blob_at
        self.drop_patch = drop_patch
        self.ignore_range = ignore_range
        self.seen: list[Seen] = []
        self._cut: set[str] = set()
        self._patches = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                outer.forward(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, *_args: object) -> None:
                return None

        self.host = self._serve(Handler)

    def forward(self, req: http.server.BaseHTTPRequestHandler) -> None:
        import http.client

        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        seen = Seen(req.command, req.path, req.headers.get("Range") or
                    req.headers.get("Content-Range") or "", len(body))
        with self._lock:
            self.seen.append(seen)
            if req.command == "PATCH":
                self._patches += 1
                number = self._patches
        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in ("connection", "transfer-encoding", "content-length")}
        if self.ignore_range:
            headers.pop("Range", None)
        drop = self.drop_patch if req.command == "PATCH" and self.drop_patch and \
            self.drop_patch[0] == number else None
        if drop and drop[1] == "unsent":
            seen.forwarded = False
            self._hang_up(req)
            return
        if drop and drop[1] == "half":
            start = int(headers["Content-Range"].split("-")[0])
            body = body[:len(body) // 2]
            headers["Content-Range"] = f"{start}-{start + len(body) - 1}"
            seen.received = len(body)
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            conn.request(req.command, req.path, body=body if body or req.command in (
                "PUT", "PATCH", "POST") else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if drop:
            self._hang_up(req)
            return
        cut = None
        if (req.command == "GET" and "/blobs/sha256:" in req.path and self.cut_blob_at
                and len(data) > self.cut_blob_at and "Range" not in req.headers):
            with self._lock:
                if req.path not in self._cut:
                    self._cut.add(req.path)
                    cut = self.cut_blob_at
        req.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data[:cut] if cut is not None else data)
            seen.sent = cut if cut is not None else len(data)
        req.wfile.flush()
        if cut is not None:
            self._hang_up(req)

    @staticmethod
    def _hang_up(req: http.server.BaseHTTPRequestHandler) -> None:
        req.close_connection = True
        with contextlib.suppress(OSError):
            req.connection.shutdown(socket.SHUT_RDWR)


class StaticRegistry(_LoopbackServer):
    """A hostile registry on loopback: answers ``/v2/`` and fixed ``routes``
    (path -> (status, content type, body)); 404 for anything else."""

    def __init__(self, routes: dict[str, tuple[int, str, bytes]]) -> None:
        self.routes = routes
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = outer.routes.get(
                    self.path.split("?")[0], (200, "application/json", b"{}")
                    if self.path == "/v2/" else (404, "application/json", b"{}"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                return None

        self.host = self._serve(Handler)
