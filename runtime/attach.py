"""Detach and attach: a ``-t`` container's terminal, held by its supervisor, reached over a
unix socket.

The supervisor keeps the pty master for the container's whole life (:class:`ConsoleServer`):
it copies the output to the log (whether or not anyone is attached) and to every client
connected to ``attach.sock`` in the container's state dir (mode 0600), and writes what the
clients type into the pty. ``run -it`` and ``attach`` are clients (:func:`attach_terminal`):
they put their terminal in raw mode, send its size (again on SIGWINCH), and leave on the
detach keys (docker's ``ctrl-p,ctrl-q`` by default, or ``--detach-keys``), which the
container never sees; the container runs on. When it ends, the supervisor cleans up and then
sends its exit code to the clients still attached, so ``run -it`` exits with it.

Frames in both directions: one type byte, a 4-byte big-endian length, the payload. ``d``:
terminal bytes; ``w``: a window size (``struct winsize``); ``x``: the exit code (4 bytes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

from unionfs.errors import UserError
from unionfs.runtime import relay, state

SOCKET_NAME = "attach.sock"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
DETACHED = -1  # what the client loop returns when the user detached
HOLD_FOR_CLIENT = 30.0  # how long a foreground run's output waits for its own client
SEND_TIMEOUT = 5.0  # a client that takes no output for this long is dropped
_HEADER = struct.Struct(">cI")
_CTRL = "@abcdefghijklmnopqrstuvwxyz[\\]^_"


def parse_detach_keys(text: str) -> bytes:
    """docker's ``--detach-keys`` format: comma-separated ``ctrl-<c>`` or single characters
    (``ctrl-p,ctrl-q``, ``ctrl-a,d``); the byte sequence it stands for."""
    keys = bytearray()
    for part in text.split(","):
        low = part.lower()
        if low.startswith("ctrl-") and len(low) == 6 and low[5] in _CTRL:
            keys.append(_CTRL.index(low[5]))
        elif len(part) == 1:
            keys.append(ord(part))
        else:
            raise UserError(f"invalid detach keys ({text}): use ctrl-<a-z@[\\]^_> or one "
                            "character, comma-separated, e.g. ctrl-p,ctrl-q")
    return bytes(keys)


class DetachMatcher:
    """Finds the detach sequence in what the user types; bytes that may begin it are held
    back until it is clear they do not (then they are passed on, as docker does)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to pass to the container, whether the sequence was typed)."""
        out = bytearray()
        for byte in data:
            candidate = self.held + bytes([byte])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    self.held = b""
                    return bytes(out), True
                self.held = candidate
                continue
            out += candidate
            self.held = b""
        return bytes(out), False


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One message of the attach protocol."""
    return _HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Splits a stream into frames."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The frames completed by ``data``."""
        self.buffer += data
        frames = []
        while len(self.buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self.buffer)
            end = _HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((kind, self.buffer[_HEADER.size:end]))
            self.buffer = self.buffer[end:]
        return frames


def socket_path(container: state.Container) -> Path:
    """Where a ``-t`` container's supervisor listens."""
    return container.dir / SOCKET_NAME


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """``path`` as a name short enough for a unix socket (108 bytes): through an fd of its
    directory (``/proc/self/fd/N/NAME``); a store's container dirs are deeper than that."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- the supervisor's side ----------------------------------------------------------------


class ConsoleServer:
    """The supervisor's end: the listening socket and the attached clients."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket a killed supervisor left
        old = os.umask(0o177)  # 0600 from the start: only the container's owner may attach
        try:
            with _short_path(path) as name:
                self.listener.bind(name)
        finally:
            os.umask(old)
        self.listener.listen(8)
        self.clients: dict[socket.socket, FrameReader] = {}

    def serve(self, pid: int, master: int, log_fd: int, *, interactive: bool,
              hold: bool) -> int:
        """Relay until PID 1 (``pid``) ends; its wait status. With ``hold``, the output
        waits for the first client (the ``run -it`` that started us) before it flows."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        old_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
        os.set_blocking(master, False)
        try:
            self._pump(pid, master, log_fd, rfd, interactive=interactive,
                       hold_until=time.monotonic() + HOLD_FOR_CLIENT if hold else None)
            self._output(master, log_fd, drain=True)
            return relay.wait(pid)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            signal.signal(signal.SIGCHLD, old_chld)
            os.close(rfd)
            os.close(wfd)

    def _pump(self, pid: int, master: int, log_fd: int, wakeup: int, *, interactive: bool,
              hold_until: float | None) -> None:
        # PID 1 may have ended before our SIGCHLD handler was there: look once now, and again
        # whenever the pty closes; later endings wake us through the signal's wakeup fd.
        exited, master_open = relay.exited(pid), True
        while True:
            if self.clients or (hold_until is not None and time.monotonic() >= hold_until):
                hold_until = None  # the first client came (or never will): output flows
            holding = hold_until is not None
            if exited and not holding:
                return
            fds: list[int | socket.socket] = [wakeup, self.listener, *self.clients]
            if master_open and not holding:
                fds.append(master)
            timeout = max(0.0, hold_until - time.monotonic()) if holding and hold_until else None
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if wakeup in ready:
                os.read(wakeup, 512)
                exited = exited or relay.exited(pid)
            if self.listener in ready:
                self._accept()
            for client in [c for c in ready if isinstance(c, socket.socket)]:
                if client is not self.listener:
                    self._from_client(client, master, interactive)
            if master in ready:
                master_open = self._output(master, log_fd)
                exited = exited or (not master_open and relay.exited(pid))

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            client.settimeout(SEND_TIMEOUT)
            self.clients[client] = FrameReader()

    def _from_client(self, client: socket.socket, master: int, interactive: bool) -> None:
        try:
            data = client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        for kind, payload in self.clients[client].feed(data):
            if kind == b"d" and interactive:
                with contextlib.suppress(OSError):
                    relay.write_all(master, payload)
            elif kind == b"w" and len(payload) == 8:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(master, termios.TIOCSWINSZ, payload)

    def _output(self, master: int, log_fd: int, drain: bool = False) -> bool:
        """Copy what the pty has to the log and the clients; False once it is closed."""
        while True:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return False  # every slave fd is closed (PID 1 ended)
                raise
            if not data:
                return False
            relay.write_all(log_fd, data)
            self.broadcast(frame(b"d", data))
            if not drain:
                return True

    def broadcast(self, message: bytes) -> None:
        """Send to every client; one that cannot take it is dropped."""
        for client in list(self.clients):
            try:
                client.sendall(message)
            except OSError:
                self._drop(client)

    def _drop(self, client: socket.socket) -> None:
        self.clients.pop(client, None)
        client.close()

    def close(self, exit_code: int | None) -> None:
        """Tell the clients still attached the exit code (None: no code) and stop listening."""
        if exit_code is not None:
            self.broadcast(frame(b"x", struct.pack(">i", exit_code)))
        for client in list(self.clients):
            self._drop(client)
        self.listener.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


# -- the client's side -------------------------------------------------------------------


def connect(container: state.Container) -> socket.socket:
    """A connection to the supervisor of running ``-t`` container ``container``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _short_path(socket_path(container)) as name:
            sock.connect(name)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot attach to container {container.name}: its supervisor does "
                        f"not answer ({exc.strerror})") from None
    return sock


def attach_terminal(container: state.Container, sock: socket.socket, *, keys: bytes,
                    interactive: bool, stdin: int = 0, stdout: int = 1) -> int:
    """Relay between our terminal and the container's until it ends (its exit code) or the
    user types ``keys`` (0: the container runs on). Signals we get go to its PID 1."""
    saved = relay.make_raw(stdin if interactive else None)
    sized = stdin if os.isatty(stdin) else stdout
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wfd)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    try:
        pid1 = int(container.state().get("pid") or 0)
        with relay.forwarding(pid1) if pid1 > 0 else contextlib.nullcontext():
            _send_size(sock, sized)
            code = _client_loop(sock, rfd, DetachMatcher(keys),
                                stdin if interactive else None, stdout, sized)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(rfd)
        os.close(wfd)
        sock.close()
    if code == DETACHED:
        return 0
    if code is None:
        return _lost(container)
    return code


def _send_size(sock: socket.socket, tty_fd: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(tty_fd, termios.TIOCGWINSZ, b"\0" * 8)
        sock.sendall(frame(b"w", size))


def _client_loop(sock: socket.socket, wakeup: int, matcher: DetachMatcher, stdin: int | None,
                 stdout: int, sized: int) -> int | None:
    """The exit code, :data:`DETACHED`, or None when the supervisor went away."""
    reader = FrameReader()
    while True:
        fds: list[int | socket.socket] = [sock, wakeup]
        if stdin is not None:
            fds.append(stdin)
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if wakeup in ready and signal.SIGWINCH in os.read(wakeup, 512):
            _send_size(sock, sized)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return None
            for kind, payload in reader.feed(data):
                if kind == b"d":
                    relay.write_all(stdout, payload)
                elif kind == b"x":
                    return int(struct.unpack(">i", payload)[0])
        if stdin is not None and stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                stdin = None  # our input ended: the container's terminal stays open
                continue
            passed, detached = matcher.feed(data)
            if passed:
                sock.sendall(frame(b"d", passed))
            if detached:
                return DETACHED


def _lost(container: state.Container) -> int:
    """The code when the supervisor closed without one: the recorded one, else 125."""
    if container.dir.exists():
        st = container.state()
        if st.get("status") == "exited" and st.get("exit_code") is not None:
            return int(st["exit_code"])
    raise UserError(f"lost the connection to container {container.name}'s supervisor")
