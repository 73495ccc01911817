"""Nothing a control-socket client does harms the server; startup failures leave no mount.

Each abuse is followed by a request on a fresh connection and a read through the mount: the
server must still answer both.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.conftest import run_as
from unionfs.api import MountOptions, is_mounted, mount, server_stats
from unionfs.errors import OperationFailed
from unionfs.fuse.control import MAX_REQUEST, READ_TIMEOUT
from unionfs.mount.client import request
from unionfs.mount.records import mount_record

StackFactory = Callable[..., Stack]
NOBODY = 65534


def control_path(mnt: Path) -> str:
    record = mount_record(str(mnt))
    assert record is not None
    return str(record["control"])


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)  # blocking: a full backlog makes it wait, not fail
    sock.settimeout(READ_TIMEOUT + 20)
    return sock


def still_serving(mnt: Path, path: str) -> None:
    assert request(path, {"op": "ping"})["ok"]
    assert (mnt / "f").read_text() == "lower"
    assert is_mounted(mnt)


def reply_of(sock: socket.socket) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    result: dict[str, object] = json.loads(data)
    return result


@pytest.fixture
def served(stack: StackFactory, mounts: Mounts) -> tuple[Path, str]:
    st = stack({"f": "lower"})
    mnt = mounts.unionfs(st)
    return mnt, control_path(mnt)


def test_client_that_closes_before_the_answer(served: tuple[Path, str]) -> None:
    """The reproduction of the issue: this used to kill the server (and the mount)."""
    mnt, path = served
    for _ in range(20):
        with connect(path) as sock:
            sock.sendall(b'{"op": "ping"}\n')
    for _ in range(5):  # and with a reset instead of a close
        sock = connect(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(b'{"op": "stats"}\n')
        sock.close()
    still_serving(mnt, path)


@pytest.mark.parametrize("junk", [b"not json\n", b"[1, 2]\n", b"\xff\xfe\n", b"\n",
                                  b'{"op": "nonsense"}\n', b'{"op": 3}\n'])
def test_junk_gets_an_error_answer(served: tuple[Path, str], junk: bytes) -> None:
    mnt, path = served
    with connect(path) as sock:
        sock.sendall(junk)
        assert reply_of(sock)["ok"] is False
    still_serving(mnt, path)


def test_huge_request_is_cut_off(served: tuple[Path, str]) -> None:
    mnt, path = served
    with connect(path) as sock:
        try:
            sock.sendall(b"x" * (MAX_REQUEST * 4))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: that is the point
        else:
            reply = reply_of(sock)
            assert reply["ok"] is False and "longer" in str(reply["error"])
    still_serving(mnt, path)


def test_no_newline_then_close(served: tuple[Path, str]) -> None:
    mnt, path = served
    with connect(path) as sock:
        sock.sendall(b'{"op": "ping"}')
        sock.shutdown(socket.SHUT_WR)
        reply = reply_of(sock)
        assert reply["ok"] is False and "newline" in str(reply["error"])
    still_serving(mnt, path)


def test_a_hanging_client_is_bounded_and_does_not_block_others(served: tuple[Path, str]) -> None:
    mnt, path = served
    with connect(path) as hanging:
        hanging.sendall(b'{"op": ')
        still_serving(mnt, path)  # answered while the other connection hangs
        reply = reply_of(hanging)  # the server gives up on it after READ_TIMEOUT
        assert reply["ok"] is False and "within" in str(reply["error"])
    still_serving(mnt, path)


def test_only_the_owner_and_root_may_connect(served: tuple[Path, str]) -> None:
    """The socket is 0600; even when its mode lets another user in, the peer's uid is
    checked."""
    mnt, path = served
    # The state directory is 0700: give the socket a second name another user can reach.
    reachable = Path(tempfile.mkdtemp(dir=os.path.realpath(os.path.dirname(path) + "/../..")))
    try:
        os.chmod(reachable, 0o755)
        os.link(path, reachable / "sock")
        os.chmod(path, 0o666)
        code = f"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect({str(reachable / "sock")!r})
            try:
                s.sendall(b'{{"op": "stats"}}\\n')
            except BrokenPipeError:  # refused before the request was read
                pass
            print(s.recv(4096).decode())
        """
        res = run_as(NOBODY, code)
    finally:
        shutil.rmtree(reachable)
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply == {"ok": False, "error": "permission denied"}
    still_serving(mnt, path)


@pytest.mark.parametrize("step", ["extensions", "record", "ready"])
def test_a_failure_after_the_kernel_mount_unmounts(stack: StackFactory, step: str) -> None:
    st = stack({"f": "lower"})
    env = {**os.environ, "UNIONFS_TEST_FAIL_AT": step}
    with pytest.raises(OperationFailed):
        mount(st.lowers, st.mnt, st.upper, options=MountOptions(workdir=st.work), env=env)
    assert not is_mounted(st.mnt)
    assert mount_record(str(st.mnt)) is None


def test_a_starter_that_gives_up_leaves_no_mount(stack: StackFactory) -> None:
    """The server hangs before it reports in (test hook); the starter's timeout stops it,
    and it unmounts on SIGTERM."""
    st = stack({"f": "lower"})
    env = {**os.environ, "UNIONFS_TEST_FAIL_AT": "hang"}
    with pytest.raises(OperationFailed, match="did not mount"):
        mount(st.lowers, st.mnt, st.upper, options=MountOptions(workdir=st.work), env=env,
              timeout=3)
    assert not is_mounted(st.mnt)


def test_a_ready_pipe_nobody_reads_unmounts(stack: StackFactory) -> None:
    """The starter went away before the server reported in (EPIPE on the ready pipe)."""
    st = stack({"f": "lower"})
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    argv = [sys.executable, "-m", "unionfs", "mount", "--foreground", "--ready-fd",
            str(write_fd), "-o", f"workdir={st.work}", str(st.lowers[0]), str(st.upper),
            str(st.mnt)]
    res = subprocess.run(argv, pass_fds=(write_fd,), capture_output=True, text=True,
                         timeout=60)
    os.close(write_fd)
    assert res.returncode != 0
    assert not is_mounted(st.mnt)


@pytest.mark.parametrize("extra", [[], ["no_extensions"]], ids=["extensions", "plain"])
def test_both_request_loops_serve_reads_and_writes(stack: StackFactory, mounts: Mounts,
                                                   extra: list[str]) -> None:
    st = stack({"d/f": "lower", "big": "b" * 300_000})
    mnt = mounts.unionfs(st, extra=extra)
    (mnt / "d" / "f").write_text("changed")
    (mnt / "d" / "new").write_text("new")
    os.rename(mnt / "d", mnt / "e")
    assert sorted(os.listdir(mnt / "e")) == ["f", "new"]
    assert (mnt / "big").read_text() == "b" * 300_000
    with open(mnt / "e" / "new", "r+b") as f:
        f.write(b"N")
        os.fsync(f.fileno())
    assert (st.upper / "e" / "new").read_bytes() == b"New"
    features = server_stats(mnt)["features"]
    assert ("lean_wait" in features) == (not extra)


def test_abandoned_reply_is_info_not_error(caplog: pytest.LogCaptureFixture) -> None:
    """The kernel's ENOENT for a reply it no longer waits for is no error; others are."""
    from unionfs.fuse import serve

    serve._quiet_abandoned_replies()
    serve._quiet_abandoned_replies()  # idempotent: one filter only
    logger = logging.getLogger("pyfuse3")
    assert sum(isinstance(f, serve._AbandonedReplyFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger="pyfuse3"):
        logger.error("fuse_release(): fuse_reply_* failed with %s", os.strerror(errno.ENOENT))
        logger.error("fuse_read(): fuse_reply_* failed with %s", os.strerror(errno.EIO))
    levels = [r.levelname for r in caplog.records if r.name == "pyfuse3"]
    assert levels == ["INFO", "ERROR"]
