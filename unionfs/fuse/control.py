"""The server's control socket: one JSON request per connection, answered in the trio loop.

Nothing a client does can harm the server: only the mount's owner and root may connect (the
peer's credentials are checked), a request is one line of at most :data:`MAX_REQUEST` bytes
that must arrive within :data:`READ_TIMEOUT` seconds, and the answer is given up after
:data:`SEND_TIMEOUT` seconds or when the client has gone. Every such case is logged, the
connection closed, and the server goes on. ``switch_upper`` takes the writers' gate (see
:mod:`unionfs.engine.locks`), so it is atomic with respect to every writer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 1 << 16
READ_TIMEOUT = 5.0
SEND_TIMEOUT = 5.0
_UCRED = struct.Struct("3i")  # pid, uid, gid


class BadRequest(Exception):
    """The client sent something that is not a request; it gets this as its error."""


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
    sock.listen(64)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        await trio.serve_listeners(functools.partial(_answer, handle=handle), [listener])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _answer(stream: trio.SocketStream, handle: Handler) -> None:
    """Serve one connection; never raises (a failure here must not end the server)."""
    try:
        async with stream:
            await _converse(stream, handle)
    except Exception:
        log.exception("control connection failed unexpectedly")


async def _converse(stream: trio.SocketStream, handle: Handler) -> None:
    uid = _peer_uid(stream.socket)
    if uid not in (0, os.geteuid()):
        log.warning("control: refused a client of uid %s (only root and uid %d)", uid,
                    os.geteuid())
        await _send(stream, {"ok": False, "error": "permission denied"})
        return
    try:
        request = await _receive(stream)
    except BadRequest as exc:
        log.warning("control: %s", exc)
        await _send(stream, {"ok": False, "error": str(exc)})
        return
    if request is None:
        return
    try:
        reply = await handle(request)
    except Exception as exc:
        log.exception("control request %r failed", request.get("op"))
        reply = {"ok": False, "error": str(exc) or type(exc).__name__}
    await _send(stream, reply)


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return int(_UCRED.unpack(creds)[1])


async def _receive(stream: trio.SocketStream) -> dict[str, Any] | None:
    """One request line; None when the client left without sending one."""
    data = bytearray()
    with trio.move_on_after(READ_TIMEOUT) as scope:
        while b"\n" not in data:
            try:
                chunk = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                if data:
                    raise BadRequest(f"request without a newline ({len(data)} bytes)")
                log.info("control: a client left without a request")
                return None
            data += chunk
            if len(data) > MAX_REQUEST:
                raise BadRequest(f"request longer than {MAX_REQUEST} bytes")
    if scope.cancelled_caught:
        raise BadRequest(f"no complete request within {READ_TIMEOUT:.0f} s")
    line = bytes(data[:data.index(b"\n")])
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"not JSON: {line[:40]!r}") from None
    if not isinstance(request, dict):
        raise BadRequest("a request is a JSON object")
    return request


async def _send(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
    with trio.move_on_after(SEND_TIMEOUT) as scope:
        try:
            await stream.send_all(json.dumps(reply).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("control: the client left before the answer")
    if scope.cancelled_caught:
        log.warning("control: the client did not read its answer within %.0f s",
                    SEND_TIMEOUT)
