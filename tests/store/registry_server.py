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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


class TokenServer:
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

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

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

    def sign(self, service: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": "test-issuer", "sub": USER, "aud": service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": hashlib.sha256(
                      str(time.monotonic_ns()).encode()).hexdigest()[:16], "access": access}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing.encode(), check=True, capture_output=True).stdout
        return f"{signing}.{_b64(sig)}"
