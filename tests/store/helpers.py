"""Helpers of the store tests: run our CLI, describe trees, make archives and rootfs dirs."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ls", "cat", "echo", "mkdir", "rm", "true")


def run_cli(store: Path, *args: str, timeout: float = 120,
            prefix: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m unionfs ARGS --store STORE`` (our command, never /usr/bin/unionfs)."""
    argv = [*prefix, sys.executable, "-m", "unionfs", *args, "--store", str(store)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ok(store: Path, *args: str) -> str:
    """Run the CLI, assert success, return stdout."""
    res = run_cli(store, *args)
    assert res.returncode == 0, f"{args}: {res.stderr}"
    return res.stdout


def assert_one_line_error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2, a single ``unionfs: error:`` line, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("unionfs: error: "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def busybox_rootfs(root: Path) -> Path:
    """A small runnable root filesystem: busybox with absolute applet symlinks, /etc files."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("/bin/busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "hostname").write_text("box\n")
    (root / "usr" / "share" / "doc").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "readme").write_text("a" * 5000)
    os.link(root / "etc" / "passwd", root / "etc" / "passwd.link")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    (root / "root").mkdir(mode=0o700)
    os.setxattr(root / "etc" / "hostname", "user.note", b"kept")
    os.chown(root / "root", 0, 0)
    os.chown(root / "usr" / "share" / "doc" / "readme", 1000, 1000)
    return root


def describe(root: Path, *, mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """Every path below ``root`` with type, mode, owner, content hash or target, xattrs."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            try:
                out[os.path.relpath(full, root)] = _describe_one(full, mtimes)
            except FileNotFoundError:
                # Kernel overlayfs lists a whiteout of a dir that exists in one layer only,
                # but the name does not resolve: it does not exist.
                continue
    return out


def _describe_one(full: str, mtimes: bool) -> tuple[object, ...]:
    st = os.lstat(full)
    kind = stat.S_IFMT(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        with open(full, "rb") as f:
            what: object = hashlib.sha256(f.read()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        what = os.readlink(full)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        what = (os.major(st.st_rdev), os.minor(st.st_rdev))
    else:
        what = None
    xattrs = {}
    if not stat.S_ISLNK(st.st_mode):
        for n in os.listxattr(full, follow_symlinks=False):
            if ".overlay." not in n:
                xattrs[n] = os.getxattr(full, n, follow_symlinks=False)
    whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # its metadata means nothing
    mtime = st.st_mtime_ns // 10**9 if mtimes and not stat.S_ISLNK(st.st_mode) else None
    if whiteout:
        return (kind, 0, 0, 0, what, (), None)
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what,
            tuple(sorted(xattrs.items())), mtime)


def store_state(store: Path) -> dict[str, object]:
    """What a store holds (its tmp/ and lock files aside), to check it did not change."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        if rel.split(os.sep)[0] in ("tmp", "locks"):
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name == "lock" and rel == ".":
                continue
            data = Path(path).read_bytes() if os.path.isfile(path) and not os.path.islink(
                path) else b""
            out[os.path.join(rel, name)] = hashlib.sha256(data).hexdigest()
        for name in dirnames:
            out[os.path.join(rel, name) + "/"] = None
    return out


def tmp_is_empty(store: Path) -> bool:
    """Nothing left in the store's staging area."""
    return not any((store / "tmp").iterdir())


def add_member(tar: tarfile.TarFile, name: str, *, data: bytes = b"", type_: bytes =
               tarfile.REGTYPE, linkname: str = "", mode: int = 0o644, dev: tuple[int, int] =
               (0, 0)) -> None:
    """Add one hand-made member to a tar being written."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = type_, mode, linkname, 1_700_000_000
    info.devmajor, info.devminor = dev
    if type_ == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def make_tar(path: Path, members: Sequence[Mapping[str, object]], mode: str = "w") -> Path:
    """A tar from member descriptions (keyword arguments of :func:`add_member`)."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for m in members:
            add_member(tar, **m)  # type: ignore[arg-type]
    return path


def mount_image(store: Path, ref: str, mnt: Path, *, timeout: float = 60) -> None:
    """``unionfs mount IMAGE MNT``; its output goes to a file, since the server it leaves
    running keeps the descriptors it inherited (a pipe would never reach end of file)."""
    log = mnt.parent / f"{mnt.name}.mount.log"
    with open(log, "wb") as out:
        res = subprocess.run([sys.executable, "-m", "unionfs", "mount", ref, str(mnt),
                              "--store", str(store)], stdout=out, stderr=out,
                             stdin=subprocess.DEVNULL, timeout=timeout)
    assert res.returncode == 0, log.read_text()


def unmount(mnt: Path) -> None:
    """Unmount a FUSE mount this test made (lazily if it is busy)."""
    res = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    if res.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=True)
