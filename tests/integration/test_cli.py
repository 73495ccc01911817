"""``unionfs mount`` / ``unionfs umount`` as a user runs them: background and foreground
servers, signals, options, logging, and one-line errors for bad input."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, unionfs_cli
from unionfs.api import is_mounted

StackFactory = Callable[..., Stack]


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def mount_options(mnt: Path) -> list[str]:
    """The options of the mount at ``mnt`` as /proc/mounts shows them."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mnt):
            return fields[3].split(",")
    raise AssertionError(f"{mnt} not in /proc/mounts")


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Mount points a test mounted through the CLI: lazily unmounted at teardown."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if is_mounted(path):
            subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False)


def layers(st: Stack) -> list[str]:
    """``LOWERS UPPER MOUNTPOINT -o workdir=...`` for a stack."""
    return [":".join(map(str, st.lowers)), str(st.upper), str(st.mnt), "-o",
            f"workdir={st.work}"]


def server_pid(stdout: str) -> int:
    """The pid in ``mounted MNT (server pid N)``."""
    return int(stdout.rsplit("server pid", 1)[1].strip(" )\n"))


# ---- background, foreground, unmount, signals -----------------------------------------------


def test_mount_returns_once_live_and_umount_stops_server(stack: StackFactory,
                                                         cleanup: list[Path]) -> None:
    """The command returns with the mount live and the server in the background."""
    st = stack({"f": "lower"})
    cleanup.append(st.mnt)
    res = unionfs_cli("mount", *layers(st))
    assert res.returncode == 0, res.stderr
    pid = server_pid(res.stdout)
    assert os.path.ismount(st.mnt)
    assert (st.mnt / "f").read_text() == "lower"
    (st.mnt / "g").write_text("new")
    assert (st.upper / "g").read_text() == "new"
    res = unionfs_cli("umount", str(st.mnt))
    assert res.returncode == 0, res.stderr
    assert not os.path.ismount(st.mnt)
    assert wait_until(lambda: not pid_alive(pid))


def test_umount_of_unmounted_path_is_one_line_error(tmp_path: Path) -> None:
    """``unionfs umount`` of something not mounted: status 2, one line."""
    res = unionfs_cli("umount", str(tmp_path))
    assert_user_error(res, "not mounted")


@contextlib.contextmanager
def foreground(st: Stack, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """A ``--foreground`` server, mounted when the block starts; killed if left running."""
    proc = subprocess.Popen([sys.executable, "-m", "unionfs", "mount", "--foreground",
                             *extra, *layers(st)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: is_mounted(st.mnt) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(st.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(st.mnt)], check=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_foreground_server_unmounts_on_signal(stack: StackFactory, signum: int) -> None:
    """SIGTERM and SIGINT to a foreground server unmount cleanly, exit status 0."""
    st = stack({"f": "x"})
    with foreground(st) as proc:
        assert (st.mnt / "f").read_text() == "x"
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(st.mnt)


def test_foreground_server_exits_on_umount(stack: StackFactory) -> None:
    """``unionfs umount`` ends a foreground server too."""
    st = stack({"f": "x"})
    with foreground(st) as proc:
        assert unionfs_cli("umount", str(st.mnt)).returncode == 0
        assert proc.wait(timeout=20) == 0


def test_background_server_unmounts_on_sigterm(stack: StackFactory,
                                               cleanup: list[Path]) -> None:
    """SIGTERM to the background server unmounts, like ``unionfs umount``."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    res = unionfs_cli("mount", *layers(st))
    assert res.returncode == 0, res.stderr
    pid = server_pid(res.stdout)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_alive(pid))
    assert not is_mounted(st.mnt)


# ---- options and logging ------------------------------------------------------------------


def test_ro_and_allow_other_reach_the_kernel(stack: StackFactory,
                                             cleanup: list[Path]) -> None:
    """``-o ro,allow_other`` shows in /proc/mounts; without them, neither shows."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    assert unionfs_cli("mount", *layers(st), "-o", "ro,allow_other").returncode == 0
    opts = mount_options(st.mnt)
    assert "ro" in opts and "allow_other" in opts
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0
    assert unionfs_cli("mount", *layers(st)).returncode == 0
    opts = mount_options(st.mnt)
    assert "rw" in opts and "allow_other" not in opts
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0


def test_log_level_and_log_file(stack: StackFactory, cleanup: list[Path],
                                tmp_path: Path) -> None:
    """``--log-level debug --log-file F``: the server logs its requests' failures to F."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    log = tmp_path / "server.log"
    res = unionfs_cli("mount", "--log-level", "debug", "--log-file", str(log), *layers(st))
    assert res.returncode == 0, res.stderr
    with pytest.raises(FileNotFoundError):
        os.stat(st.mnt / "missing/deeper")
    os.listdir(st.mnt)
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0
    text = log.read_text()
    assert "mounted" in text and "DEBUG" in text and "INFO" in text


def test_log_level_warning_is_quiet(stack: StackFactory, cleanup: list[Path],
                                    tmp_path: Path) -> None:
    """The default level logs no INFO or DEBUG lines."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    log = tmp_path / "server.log"
    assert unionfs_cli("mount", "--log-file", str(log), *layers(st)).returncode == 0
    os.listdir(st.mnt)
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0
    text = log.read_text() if log.exists() else ""
    assert "INFO" not in text and "DEBUG" not in text


def test_bad_log_level_is_usage_error(stack: StackFactory) -> None:
    """An unknown ``--log-level``: exit 2 from argparse, one line of error."""
    st = stack({})
    res = unionfs_cli("mount", "--log-level", "chatty", *layers(st))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


# ---- bad input: one line, exit status 2, no traceback ----------------------------------------


def assert_user_error(res: subprocess.CompletedProcess[str], words: str) -> None:
    """Exit status 2, a single ``unionfs: error:`` line naming the problem, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("unionfs: error:"), res.stderr
    assert words in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_missing_lower(stack: StackFactory) -> None:
    st = stack({})
    res = unionfs_cli("mount", f"{st.lowers[0]}:{st.base}/nope", str(st.upper), str(st.mnt))
    assert_user_error(res, "does not exist")


def test_lower_not_a_directory(stack: StackFactory) -> None:
    st = stack({"file": "x"})
    res = unionfs_cli("mount", str(st.lowers[0] / "file"), str(st.upper), str(st.mnt))
    assert_user_error(res, "not a directory")


@pytest.mark.parametrize("spec", ["", ":", "{lower}:", ":{lower}", "{lower}::{lower}"])
def test_empty_layer_list(stack: StackFactory, spec: str) -> None:
    st = stack({})
    res = unionfs_cli("mount", spec.format(lower=st.lowers[0]), str(st.upper), str(st.mnt))
    assert_user_error(res, "empty layer")


def test_mountpoint_missing(stack: StackFactory) -> None:
    st = stack({})
    res = unionfs_cli("mount", str(st.lowers[0]), str(st.upper), str(st.base / "nomnt"))
    assert_user_error(res, "does not exist")


def test_mountpoint_not_a_directory(stack: StackFactory) -> None:
    st = stack({"file": "x"})
    res = unionfs_cli("mount", str(st.lowers[0]), str(st.upper), str(st.lowers[0] / "file"))
    assert_user_error(res, "not a directory")


def test_mountpoint_already_mounted(stack: StackFactory, cleanup: list[Path]) -> None:
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    assert unionfs_cli("mount", *layers(st)).returncode == 0
    res = unionfs_cli("mount", *layers(st))
    assert_user_error(res, "already mounted")
    assert (st.mnt / "f").read_text() == "x"
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0


@pytest.mark.parametrize("where", ["equal", "upper_inside", "lower_inside"])
def test_upper_overlaps_lower(stack: StackFactory, where: str) -> None:
    """An upper equal to, inside, or around a lower layer is refused."""
    st = stack({"sub/": None})
    lower, upper = {
        "equal": (st.lowers[0], st.lowers[0]),
        "upper_inside": (st.lowers[0], st.lowers[0] / "sub"),
        "lower_inside": (st.upper / "in", st.upper),
    }[where]
    lower.mkdir(exist_ok=True)
    res = unionfs_cli("mount", str(lower), str(upper), str(st.mnt), "-o",
                      f"workdir={st.work}")
    assert_user_error(res, "overlaps")


def test_workdir_on_another_filesystem(stack: StackFactory,
                                       tmpfs: Callable[..., Path]) -> None:
    """A work dir that is not on the upper's filesystem is refused (rename would be EXDEV)."""
    st = stack({})
    other = tmpfs("work")
    res = unionfs_cli("mount", str(st.lowers[0]), str(st.upper), str(st.mnt), "-o",
                      f"workdir={other}/w")
    assert_user_error(res, "filesystem")


def test_unknown_option(stack: StackFactory) -> None:
    st = stack({})
    res = unionfs_cli("mount", *layers(st), "-o", "bogus")
    assert_user_error(res, "unknown mount option")


def test_colon_in_layer_name(stack: StackFactory, cleanup: list[Path]) -> None:
    """``\\:`` escapes a colon in a layer name; unescaped, the name is split (and missing)."""
    st = stack({})
    odd = st.base / "a:b"
    odd.mkdir()
    (odd / "f").write_text("colon")
    res = unionfs_cli("mount", str(odd), str(st.upper), str(st.mnt))
    assert_user_error(res, "does not exist")
    cleanup.append(st.mnt)
    escaped = str(odd).replace(":", "\\:") + ":" + str(st.lowers[0])
    res = unionfs_cli("mount", escaped, str(st.upper), str(st.mnt), "-o", f"workdir={st.work}")
    assert res.returncode == 0, res.stderr
    assert (st.mnt / "f").read_text() == "colon"
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0


def test_dev_fuse_unavailable(stack: StackFactory) -> None:
    """With /dev/fuse replaced by /dev/null (in a private mount namespace): one-line error."""
    st = stack({"f": "x"})
    cmd = (f"mount --bind /dev/null /dev/fuse && exec {sys.executable} -m unionfs mount "
           + " ".join(f"'{a}'" for a in layers(st)))
    res = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert_user_error(res, "/dev/fuse")
    assert not is_mounted(st.mnt)


def test_dev_fuse_missing(stack: StackFactory, tmp_path: Path) -> None:
    """With no /dev/fuse at all: one-line error naming it."""
    st = stack({"f": "x"})
    cmd = (f"mount -t tmpfs tmpfs /dev && exec {sys.executable} -m unionfs mount "
           + " ".join(f"'{a}'" for a in layers(st)))
    res = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert_user_error(res, "/dev/fuse")


def test_dead_mount_is_reported_and_can_be_unmounted(stack: StackFactory,
                                                     cleanup: list[Path]) -> None:
    """After the server is killed: mounting again says "already mounted" (not "does not
    exist"), ``unionfs umount`` clears the dead mount, and a new mount works."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    res = unionfs_cli("mount", *layers(st))
    assert res.returncode == 0, res.stderr
    pid = server_pid(res.stdout)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid))
    with pytest.raises(OSError):
        os.stat(st.mnt / "f")
    assert_user_error(unionfs_cli("mount", *layers(st)), "already mounted")
    res = unionfs_cli("umount", str(st.mnt))
    assert res.returncode == 0, res.stderr
    assert not is_mounted(st.mnt)
    assert unionfs_cli("mount", *layers(st)).returncode == 0
    assert (st.mnt / "f").read_text() == "x"
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0


def test_relative_paths_and_odd_characters(stack: StackFactory, cleanup: list[Path]) -> None:
    """Relative arguments, spaces and commas in layer, work dir and mount point names."""
    st = stack({})
    lower = st.base / "low, er"
    lower.mkdir()
    (lower / "f").write_text("odd")
    mnt = st.base / "m n t"
    mnt.mkdir()
    cleanup.append(mnt)
    res = subprocess.run([sys.executable, "-m", "unionfs", "mount", "low, er", "upper", "m n t",
                          "-o", "workdir=wo\\,rk"], cwd=st.base, capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr
    assert (mnt / "f").read_text() == "odd"
    (mnt / "g").write_text("new")
    assert (st.upper / "g").read_text() == "new"
    assert (st.base / "wo,rk").is_dir()
    res = subprocess.run([sys.executable, "-m", "unionfs", "umount", "m n t"], cwd=st.base,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr
    assert not is_mounted(mnt)


def test_read_only_mount_without_upper(stack: StackFactory, cleanup: list[Path]) -> None:
    """``unionfs mount LOWERS MOUNTPOINT``: read-only, writes are EROFS."""
    st = stack({"f": "x"}, {"g": "y"})
    cleanup.append(st.mnt)
    res = unionfs_cli("mount", ":".join(map(str, st.lowers)), str(st.mnt))
    assert res.returncode == 0, res.stderr
    assert "ro" in mount_options(st.mnt)
    assert sorted(os.listdir(st.mnt)) == ["f", "g"]
    with pytest.raises(OSError) as exc:
        (st.mnt / "f").write_text("no")
    assert exc.value.errno == errno.EROFS
    assert unionfs_cli("umount", str(st.mnt)).returncode == 0


def test_umount_of_busy_mount(stack: StackFactory, cleanup: list[Path]) -> None:
    """A busy mount: ``umount`` fails with one line (exit 1); ``umount -z`` detaches it."""
    st = stack({"f": "x"})
    cleanup.append(st.mnt)
    res = unionfs_cli("mount", *layers(st))
    assert res.returncode == 0, res.stderr
    pid = server_pid(res.stdout)
    fd = os.open(st.mnt / "f", os.O_RDONLY)
    try:
        res = unionfs_cli("umount", str(st.mnt))
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "busy" in res.stderr.lower()
        assert unionfs_cli("umount", "-z", str(st.mnt)).returncode == 0
        assert not is_mounted(st.mnt)
        assert os.pread(fd, 1, 0) == b"x"
    finally:
        os.close(fd)
    assert wait_until(lambda: not pid_alive(pid))
