"""Small wrappers over the operating system: the mount table, caches, processes, trees."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


class BenchError(Exception):
    """A step of the benchmark failed; the message is one line for the table."""


def one_line(text: str, limit: int = 200) -> str:
    """The last non-empty line of ``text``, shortened to ``limit`` characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run(argv: Sequence[str], *, check: bool = True, **kwargs: object) -> str:
    """Run a short helper command and return its stdout; raise BenchError when it fails."""
    res = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if check and res.returncode != 0:
        why = one_line(res.stderr) or f"exit status {res.returncode}"
        raise BenchError(f"{Path(argv[0]).name}: {why}")
    return str(res.stdout)


def mount_entries() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount in this namespace."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            entries.append((_unescape(fields[4]), fields[sep + 1]))
    return entries


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def fstype_at(path: Path) -> str | None:
    """The filesystem type mounted exactly at ``path``, or None when nothing is."""
    target = os.path.realpath(path)
    found = None
    for point, fstype in mount_entries():
        if point == target:
            found = fstype  # the last entry is the one on top
    return found


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Wait until something is mounted at ``path``; fail early if ``proc`` fails.

    ``proc`` may exit with status 0 once mounted (a command that daemonizes).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fstype_at(path) is not None:
            return
        if proc.poll() is not None and (proc.returncode != 0 or fstype_at(path) is None):
            err = log.read_text(errors="replace") if log.exists() else ""
            raise BenchError(one_line(err) or f"exited with status {proc.returncode}")
        time.sleep(0.02)
    raise BenchError(f"not mounted within {timeout:.0f}s")


def unmount(path: Path) -> None:
    """Unmount ``path`` (FUSE by fusermount3, others by umount), lazily if it is busy."""
    fstype = fstype_at(path)
    if fstype is None:
        return
    fuse = fstype.startswith("fuse")
    tool = ["fusermount3", "-u"] if fuse else ["umount"]
    if subprocess.run([*tool, str(path)], capture_output=True).returncode == 0:
        return
    lazy = ["fusermount3", "-u", "-z"] if fuse else ["umount", "-l"]
    subprocess.run([*lazy, str(path)], capture_output=True)


def unmount_all_under(root: Path) -> None:
    """Unmount whatever is still mounted below ``root`` (the safety net after an error)."""
    prefix = os.path.realpath(root) + os.sep
    points = [p for p, _ in mount_entries() if p.startswith(prefix)]
    for point in sorted(set(points), key=len, reverse=True):
        unmount(Path(point))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait for a server to exit after its unmount; kill it (and its group) if it does not."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def drop_caches() -> bool:
    """Write back and drop the page, dentry and inode caches; False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def peak_rss_kib(pid: int | None) -> int | None:
    """The peak resident set size (VmHWM) of a live process, in KiB."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pids_mentioning(path: Path) -> list[int]:
    """Processes whose command line names ``path``: how a user template's server is found."""
    needle = os.fsencode(os.path.realpath(path))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if needle in args and os.path.basename(args[0]) not in (b"sh", b"bash"):
            found.append(int(entry))
    return found


def remove_tree(path: Path) -> None:
    """Delete a scratch tree, including kernel overlayfs's unreadable work directories."""
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except OSError:
        run(["rm", "-rf", "--one-file-system", str(path)], check=False)


BIG_FILE = 16 << 20  # a retired tree's files from this size on are deleted at once


def retire_tree(path: Path, trash: Path) -> None:
    """Move a finished scratch tree into ``trash``, deleted at the end of the run.

    On an ext4 without a journal (this machine's root), the inode allocator skips every inode
    freed in the last minute, one block lookup each: deleting a cell's 20k files would slow
    the creates of the next cells (untar, commit) by seconds, by how much depending on what
    ran before. Big files are deleted at once (few inodes, much space)."""
    if not path.exists():
        return
    for root, _dirs, files in os.walk(path, onerror=lambda _exc: None):
        for name in files:
            file = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if os.lstat(file).st_size >= BIG_FILE:
                    os.unlink(file)
    trash.mkdir(parents=True, exist_ok=True)
    try:
        path.rename(trash / f"{path.name}-{len(os.listdir(trash))}")
    except OSError:
        remove_tree(path)


def copy_tree_into(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dst``, keeping metadata."""
    run(["cp", "-a", f"{src}/.", str(dst)])


def merge_trees(layers_bottom_first: Iterable[Path], dst: Path, *, link: bool) -> None:
    """Build the merged view of plain layers in ``dst``: upper names replace lower ones.

    With ``link`` files are hard links to the layer data (for workloads that never write
    to existing files), otherwise real copies.
    """
    for layer in layers_bottom_first:
        for dirpath, dirnames, filenames in os.walk(layer):
            rel = os.path.relpath(dirpath, layer)
            out = dst / rel
            out.mkdir(parents=True, exist_ok=True)
            for name in filenames + [d for d in dirnames if os.path.islink(Path(dirpath, d))]:
                _place(Path(dirpath, name), out / name, link=link)


def _place(src: Path, dst: Path, *, link: bool) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if src.is_symlink():
        dst.symlink_to(os.readlink(src))
    elif link:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)
