"""Copy-up of regular files: data (dense, sparse, empty, large) and metadata, without FUSE."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from unionfs.core.whiteout import TRUSTED
from unionfs.layers.copyup import CopyUp, WorkDir
from unionfs.layers.layer import Layer


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, CopyUp]:
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (lower / "d", upper / "d", work):
        d.mkdir(parents=True)
    copier = CopyUp(Layer(str(upper), 0, writable=True), WorkDir(str(work)), TRUSTED, sync=True)
    return lower, upper, copier


def copy(dirs: tuple[Path, Path, CopyUp], name: str) -> Path:
    lower, upper, copier = dirs
    copier.copy(Layer(str(lower), 1), b"d", name.encode(), 77)
    return upper / "d" / name


@pytest.mark.parametrize("size", [0, 1, 4096, 65536, 65537, 3 << 20])
def test_dense_data(dirs: tuple[Path, Path, CopyUp], size: int) -> None:
    data = os.urandom(size)
    (dirs[0] / "d/f").write_bytes(data)
    assert copy(dirs, "f").read_bytes() == data


def test_sparse_file_keeps_its_holes(dirs: tuple[Path, Path, CopyUp]) -> None:
    src = dirs[0] / "d/sparse"
    with open(src, "wb") as f:
        f.seek(40960)
        f.write(b"end")
    dst = copy(dirs, "sparse")
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks


def test_metadata(dirs: tuple[Path, Path, CopyUp]) -> None:
    src = dirs[0] / "d/m"
    src.write_text("x")
    os.chown(src, 1234, 4321)
    os.chmod(src, 0o4751)
    os.setxattr(src, "user.k", b"v")
    os.setxattr(src, "trusted.overlay.opaque", b"y")  # the overlay's own: not copied
    os.utime(src, ns=(1_000_000_001, 2_000_000_002))
    before = os.stat(dirs[1] / "d")
    dst = copy(dirs, "m")
    st = os.stat(dst)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o4751)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    assert os.getxattr(dst, "user.k") == b"v"
    assert os.getxattr(dst, "trusted.overlay.unionfs.origin") == b"77"
    with pytest.raises(OSError):
        os.getxattr(dst, "trusted.overlay.opaque")
    after = os.stat(dirs[1] / "d")
    assert after.st_mtime_ns == before.st_mtime_ns
    assert os.listdir(dirs[2].work.tmp_path) == []


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_whiteouts_share_one_inode(dirs: tuple[Path, Path, CopyUp]) -> None:
    work = dirs[2].work
    fd = os.open(dirs[1] / "d", os.O_PATH | os.O_DIRECTORY)
    try:
        for name in (b"a", b"b"):
            work.make_whiteout(fd, name)
        with pytest.raises(FileExistsError):
            work.make_whiteout(fd, b"a")
    finally:
        os.close(fd)
    a, b = dirs[1] / "d/a", dirs[1] / "d/b"
    assert is_whiteout(a) and is_whiteout(b)
    assert os.lstat(a).st_ino == os.lstat(b).st_ino
    assert work.clean() == 0  # the shared whiteout is no leftover


@pytest.mark.parametrize("code", [errno.EMLINK, errno.EPERM])
def test_whiteout_when_links_fail(dirs: tuple[Path, Path, CopyUp],
                                  monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """EMLINK: a fresh shared whiteout; EPERM (no hard links): a device of its own."""
    work = dirs[2].work
    fd = os.open(dirs[1] / "d", os.O_PATH | os.O_DIRECTORY)
    link = os.link
    calls: list[bytes] = []

    def failing_link(src: bytes, dst: bytes, **kwargs: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", failing_link)
    try:
        for name in (b"a", b"b", b"c"):
            work.make_whiteout(fd, name)
    finally:
        os.close(fd)
    paths = [dirs[1] / "d" / n for n in ("a", "b", "c")]
    assert all(is_whiteout(p) for p in paths)
    inodes = [os.lstat(p).st_ino for p in paths]
    assert inodes[0] != inodes[1]
    assert (inodes[1] == inodes[2]) is (code == errno.EMLINK)


def test_owner_set_even_where_the_work_dir_would_give_another_group(tmp_path: Path) -> None:
    """The chown of a copy is skipped only where a new file is certainly owned as the
    lower one is: a work dir with set-gid and another group gives new files its group."""
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (lower / "d", upper / "d", work / "unionfs-tmp"):
        d.mkdir(parents=True)
    os.chown(work / "unionfs-tmp", -1, 4321)
    os.chmod(work / "unionfs-tmp", 0o2700)
    (lower / "d/f").write_text("x")
    os.chown(lower / "d/f", os.geteuid(), os.getegid())
    copier = CopyUp(Layer(str(upper), 0, writable=True), WorkDir(str(work)), TRUSTED, sync=True)
    copy((lower, upper, copier), "f")
    st = os.stat(upper / "d/f")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
