"""The server's control socket: one JSON request per connection, answered in the trio loop.

Requests run between FUSE requests (the handlers never yield in the middle of a change), which
is what makes ``switch_upper`` hold writers for exactly the instant of the switch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 1 << 16


async def serve_control(path: str, handle: Handler, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on the Unix socket ``path`` (mode 0600) until cancelled."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(8)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        await trio.serve_listeners(functools.partial(_answer, handle=handle), [listener])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _answer(stream: trio.SocketStream, handle: Handler) -> None:
    async with stream:
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        try:
            reply = handle(json.loads(data))
        except Exception as exc:
            log.exception("control request failed")
            reply = {"ok": False, "error": str(exc) or type(exc).__name__}
        await stream.send_all(json.dumps(reply).encode() + b"\n")


def request(path: str, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to a server's control socket (blocking client side)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply
