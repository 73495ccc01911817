"""The client of a server's control socket (the server side is ``unionfs/fuse/control.py``):
one JSON object per line each way, one request per connection."""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_REPLY = 1 << 24  # what a client reads at most


def request(path: str, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to a server's control socket (blocking client side)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REPLY:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.endswith(b"\n"):
        raise OSError(f"no complete answer from {path}")
    reply: dict[str, Any] = json.loads(data)
    return reply
