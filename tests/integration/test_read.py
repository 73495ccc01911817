"""The read path on real mounts: precedence, whiteouts in every form, attributes, inodes."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack

StackFactory = Callable[..., Stack]


def drop_caches() -> None:
    """Make the kernel forget dentries and inodes (FUSE forgets reach the server)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2")


def tree(root: Path) -> dict[str, str]:
    """Every name under ``root`` with a short description of what it is."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_text()
    return out


# ---- precedence ---------------------------------------------------------------------------


def test_top_layer_wins_and_dirs_merge(stack: StackFactory, mounts: Mounts) -> None:
    """The first layer with a name decides it; directories merge across all layers."""
    st = stack({"d/a": "top", "f": "top"}, {"d/a": "mid", "d/b": "mid"},
               {"d/c": "bottom", "f": "bottom", "g": "bottom"})
    mnt = mounts.unionfs(st)
    assert tree(mnt) == {"d": "dir", "f": "top", "g": "bottom", "d/a": "top", "d/b": "mid",
                         "d/c": "bottom"}


def test_non_directory_hides_everything_below(stack: StackFactory, mounts: Mounts) -> None:
    """A file over a directory hides the directory; a directory over a file hides the file."""
    st = stack({"x": "file", "y/": None, "y/in": "top"},
               {"x/below": "hidden", "y": "hidden file"}, {"x/deeper": "hidden"})
    mnt = mounts.unionfs(st)
    assert (mnt / "x").read_text() == "file"
    assert os.listdir(mnt / "y") == ["in"]
    with pytest.raises(NotADirectoryError):
        os.stat(mnt / "x/below")


def test_symlink_on_top_hides_directory_below(stack: StackFactory, mounts: Mounts) -> None:
    """A symlink in a higher layer is a non-directory: the directory below is not merged."""
    st = stack({"d": ("symlink", "elsewhere")}, {"d/a": "hidden"})
    mnt = mounts.unionfs(st)
    assert os.readlink(mnt / "d") == "elsewhere"
    assert os.listdir(mnt) == ["d"]


# ---- whiteouts in every form ----------------------------------------------------------------


def _xattr_whiteout_layer(root: Path, prefix: str) -> None:
    """A kernel 6.7+ "xattr whiteout": zero-size file with overlay.whiteout, dir opaque=x."""
    d = root / "d"
    d.mkdir(parents=True)
    (d / "gone").write_bytes(b"")
    os.setxattr(d / "gone", f"{prefix}.overlay.whiteout", b"y")
    os.setxattr(d, f"{prefix}.overlay.opaque", b"x")
    (d / "kept").write_text("upper")


@pytest.mark.parametrize("prefix", ["trusted", "user"])
def test_xattr_whiteouts(stack: StackFactory, mounts: Mounts, prefix: str) -> None:
    """Kernel xattr whiteouts hide the name; the dir with opaque=x still merges."""
    st = stack({}, {"d/gone": "lower", "d/other": "lower"})
    _xattr_whiteout_layer(st.lowers[0], prefix)
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "d")) == ["kept", "other"]
    assert not os.path.lexists(mnt / "d/gone")
    assert os.listxattr(mnt / "d") == []


def test_char_device_whiteout(stack: StackFactory, mounts: Mounts) -> None:
    """The overlayfs whiteout (char 0/0) hides files and whole directories below."""
    st = stack({"f": ("whiteout",), "d": ("whiteout",)}, {"f": "x", "d/a": "x", "keep": "k"})
    mnt = mounts.unionfs(st)
    assert os.listdir(mnt) == ["keep"]
    for name in ("f", "d", "d/a"):
        assert not os.path.lexists(mnt / name)


def test_whiteout_in_upper_hides_lower(stack: StackFactory, mounts: Mounts) -> None:
    """A whiteout already in the upper (a previous delete) keeps the name deleted."""
    st = stack({"f": "x", "g": "y"}, upper={"f": ("whiteout",)})
    mnt = mounts.unionfs(st)
    assert os.listdir(mnt) == ["g"]


def test_whiteout_in_lowest_layer_is_invisible(stack: StackFactory, mounts: Mounts) -> None:
    """A whiteout with nothing below to hide is not shown either."""
    st = stack({"a": "a"}, {"w": ("whiteout",)})
    mnt = mounts.unionfs(st)
    assert os.listdir(mnt) == ["a"]
    assert not os.path.lexists(mnt / "w")


@pytest.mark.parametrize("prefix", ["trusted", "user"])
def test_opaque_xattr(stack: StackFactory, mounts: Mounts, prefix: str) -> None:
    """overlay.opaque=y ends the merge, and the marker xattr is never listed or readable."""
    st = stack({"d/top": "t"}, {"d/below": "b"})
    os.setxattr(st.lowers[0] / "d", f"{prefix}.overlay.opaque", b"y")
    os.setxattr(st.lowers[0] / "d", "user.visible", b"v")
    mnt = mounts.unionfs(st)
    assert os.listdir(mnt / "d") == ["top"]
    assert os.listxattr(mnt / "d") == ["user.visible"]
    with pytest.raises(OSError) as exc:
        os.getxattr(mnt / "d", f"{prefix}.overlay.opaque")
    assert exc.value.errno == errno.ENODATA


def test_oci_whiteouts(stack: StackFactory, mounts: Mounts) -> None:
    """OCI ``.wh.<name>`` hides a name and ``.wh..wh..opq`` makes a dir opaque; neither shows."""
    st = stack({".wh.f": "", "d/.wh..wh..opq": "", "d/new": "n", "e/.wh.x": ""},
               {"f": "f", "d/old": "o", "e/x": "x", "e/y": "y"})
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt)) == ["d", "e"]
    assert os.listdir(mnt / "d") == ["new"]
    assert os.listdir(mnt / "e") == ["y"]
    for name in (".wh.f", "f", "d/.wh..wh..opq", "d/old", "e/.wh.x", "e/x"):
        assert not os.path.lexists(mnt / name), name


def test_opaque_dir_three_layers_deep(stack: StackFactory, mounts: Mounts) -> None:
    """An opaque dir at depth three in the middle of three layers cuts only what is below."""
    st = stack({"a/b/c/top": "0"}, {"a/b/c/": ("opaque",), "a/b/c/mid": "1"},
               {"a/b/c/low": "2", "a/b/side": "2"})
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "a/b/c")) == ["mid", "top"]
    assert sorted(os.listdir(mnt / "a/b")) == ["c", "side"]
    assert not os.path.lexists(mnt / "a/b/c/low")


# ---- attributes and reads ---------------------------------------------------------------


def test_getattr_readlink_read_getxattr(stack: StackFactory, mounts: Mounts) -> None:
    """What the layers hold comes through unchanged: mode, owner, times, targets, xattrs."""
    st = stack({"f": "content", "l": ("symlink", "f")}, {"f": "hidden"})
    f = st.lowers[0] / "f"
    os.chmod(f, 0o640)
    os.chown(f, 1234, 4321)
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    os.setxattr(f, "user.k", b"v")
    mnt = mounts.unionfs(st)
    s = os.stat(mnt / "f")
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) == (0o640, 1234, 4321)
    assert (s.st_atime_ns, s.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert s.st_size == 7
    assert (mnt / "f").read_text() == "content"
    assert os.readlink(mnt / "l") == "f"
    assert os.getxattr(mnt / "f", "user.k") == b"v"
    assert os.listxattr(mnt / "f") == ["user.k"]


def test_special_files_read_path(stack: StackFactory, mounts: Mounts) -> None:
    """FIFOs and device nodes in a lower are shown with their type and device number."""
    st = stack({})
    os.mkfifo(st.lowers[0] / "fifo", 0o600)
    os.mknod(st.lowers[0] / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    mnt = mounts.unionfs(st)
    assert stat.S_ISFIFO(os.lstat(mnt / "fifo").st_mode)
    s = os.lstat(mnt / "null")
    assert stat.S_ISCHR(s.st_mode) and s.st_rdev == os.makedev(1, 3)


def test_statfs_reports_upper_filesystem(stack: StackFactory, mounts: Mounts,
                                         tmpfs: Callable[..., Path]) -> None:
    """statvfs of the mount is the upper's filesystem (a small tmpfs here)."""
    st = stack({"a": "a"})
    small = tmpfs("up", "4m")
    st = dataclasses.replace(st, upper=small / "upper", work=small / "work")
    st.upper.mkdir()
    mnt = mounts.unionfs(st)
    got, want = os.statvfs(mnt), os.statvfs(small)
    assert (got.f_blocks * got.f_frsize) == (want.f_blocks * want.f_frsize)
    assert got.f_namemax == 255


def test_readdir_offsets_large_directory(stack: StackFactory, mounts: Mounts) -> None:
    """A directory bigger than one readdir buffer lists every name exactly once."""
    names = {f"d/{'n' * 100}{i:04d}": "" for i in range(600)}
    st = stack(names, {f"d/low{i}": "" for i in range(100)})
    mnt = mounts.unionfs(st)
    listed = os.listdir(mnt / "d")
    assert len(listed) == len(set(listed)) == 700


# ---- inode numbers and links ------------------------------------------------------------


def test_st_ino_stable_for_mount_and_across_remount(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    """Inode numbers survive the kernel forgetting the inode, and a remount."""
    st = stack({"d/f": "a", "g": "b"}, {"d/h": "c"})
    mnt = mounts.unionfs(st)
    paths = [mnt / p for p in ("d", "d/f", "g", "d/h")]
    first = [os.stat(p).st_ino for p in paths]
    assert len(set(first)) == 4
    drop_caches()
    assert [os.stat(p).st_ino for p in paths] == first
    mounts.unmount(mnt)
    mounts.unionfs(st)
    assert [os.stat(p).st_ino for p in paths] == first


def test_lower_hard_links_share_inode(stack: StackFactory, mounts: Mounts) -> None:
    """Two names of one lower file: one union inode, link count 2."""
    st = stack({"a": "data"})
    os.link(st.lowers[0] / "a", st.lowers[0] / "b")
    mnt = mounts.unionfs(st)
    a, b = os.stat(mnt / "a"), os.stat(mnt / "b")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == b.st_nlink == 2


def test_dir_nlink(stack: StackFactory, mounts: Mounts) -> None:
    """A single-layer dir has its real count (2 + subdirs); a merged dir 1 or at least 2."""
    st = stack({"one/s1/": None, "one/s2/": None, "m/x/": None}, {"m/y/": None})
    mnt = mounts.unionfs(st)
    assert os.stat(mnt / "one").st_nlink == 4
    assert os.stat(mnt / "m").st_nlink in (1, 4)


# ---- symlinks are never followed by the server --------------------------------------------


def test_symlink_to_etc_is_returned_not_followed(stack: StackFactory, mounts: Mounts) -> None:
    """A lower dir that is a symlink to /etc is a symlink in the union; the caller follows it."""
    st = stack({"dir": ("symlink", "/etc")}, {"dir/passwd": "fake"})
    mnt = mounts.unionfs(st)
    assert stat.S_ISLNK(os.lstat(mnt / "dir").st_mode)
    assert os.readlink(mnt / "dir") == "/etc"
    # Resolution happens in the caller, exactly as for any symlink: to the host's /etc.
    assert os.path.realpath(mnt / "dir/passwd") == "/etc/passwd"
    assert (mnt / "dir/passwd").read_bytes() == Path("/etc/passwd").read_bytes()


def test_relative_escape_resolves_from_the_mount(stack: StackFactory, mounts: Mounts,
                                                 tmp_path: Path) -> None:
    """``../../..`` in a layer is resolved by the caller from the mount point, not the layer."""
    st = stack({"sub/esc": ("symlink", "../../marker")})
    deep = tmp_path / "x/y/mnt"
    deep.mkdir(parents=True)
    (tmp_path / "x/y/marker").write_text("from the mount side")
    (st.base / "marker").write_text("from the layer side")
    st = dataclasses.replace(st, mnt=deep)
    mnt = mounts.unionfs(st)
    assert os.readlink(mnt / "sub/esc") == "../../marker"
    assert (mnt / "sub/esc").read_text() == "from the mount side"


def test_symlinked_dir_in_lower_is_not_traversed_for_copy_up(stack: StackFactory,
                                                            mounts: Mounts,
                                                            tmp_path: Path) -> None:
    """Writing through a symlinked dir writes where the caller resolves, never into a layer."""
    outside = tmp_path / "outside"
    outside.mkdir()
    st = stack({"link": ("symlink", str(outside))})
    mnt = mounts.unionfs(st)
    (mnt / "link/new").write_text("x")
    assert (outside / "new").read_text() == "x"
    assert sorted(os.listdir(st.upper)) == []


# ---- names and paths ----------------------------------------------------------------------


def test_name_too_long(stack: StackFactory, mounts: Mounts) -> None:
    """Names over 255 bytes: ENAMETOOLONG for lookup, create, mkdir and rename."""
    st = stack({"a": "a"})
    mnt = mounts.unionfs(st)
    long = mnt / ("n" * 256)
    for call in (lambda: os.stat(long), lambda: os.open(long, os.O_CREAT | os.O_WRONLY),
                 lambda: os.mkdir(long), lambda: os.rename(mnt / "a", long)):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.ENAMETOOLONG
    ok = mnt / ("n" * 255)
    ok.write_text("fits")
    assert ok.read_text() == "fits"


def test_deep_path_near_path_max(stack: StackFactory, mounts: Mounts) -> None:
    """A path of about 4080 bytes through the mount reads, and copies up on write."""
    st = stack({})
    budget = 4080 - len(str(st.mnt)) - 1
    parts = ["d" * 200] * (budget // 201)
    rel = "/".join(parts)
    rel += "/" + "f" * max(1, budget - len(rel) - 1)
    lower_dir = st.lowers[0]
    fd = os.open(lower_dir, os.O_RDONLY)
    try:
        for part in parts:  # fd-relative: the layer's own path would be longer than the mount's
            os.mkdir(part, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open(rel.rsplit("/", 1)[1], os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd),
                  "w") as f:
            f.write("deep")
    finally:
        os.close(fd)
    mnt = mounts.unionfs(st)
    path = f"{mnt}/{rel}"
    assert 4070 <= len(path) < 4096
    with open(path) as f:
        assert f.read() == "deep"
    with open(path, "a") as f:
        f.write("er")
    with open(path) as f:
        assert f.read() == "deeper"


# ---- read-only unions ---------------------------------------------------------------------


def _assert_erofs(call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as exc:
        call()
    assert exc.value.errno == errno.EROFS


@pytest.mark.parametrize("with_upper", [False, True])
def test_read_only_union_refuses_writes(stack: StackFactory, mounts: Mounts,
                                        with_upper: bool) -> None:
    """No upper, or ``-o ro`` with one: every write is EROFS and nothing changes on disk."""
    st = stack({"f": "lower", "d/x": "x"}, upper={"u": "upper"} if with_upper else None)
    mnt = mounts.unionfs(st, writable=with_upper, read_only=True) if with_upper else \
        mounts.unionfs(st, writable=False)
    if with_upper:
        assert (mnt / "u").read_text() == "upper"
    _assert_erofs(lambda: os.open(mnt / "f", os.O_WRONLY))
    _assert_erofs(lambda: os.open(mnt / "new", os.O_CREAT | os.O_WRONLY))
    _assert_erofs(lambda: os.mkdir(mnt / "nd"))
    _assert_erofs(lambda: os.unlink(mnt / "f"))
    _assert_erofs(lambda: os.rename(mnt / "f", mnt / "g"))
    _assert_erofs(lambda: os.chmod(mnt / "f", 0o600))
    _assert_erofs(lambda: os.setxattr(mnt / "f", "user.a", b"b"))
    _assert_erofs(lambda: os.truncate(mnt / "f", 0))
    assert (st.lowers[0] / "f").read_text() == "lower"
    assert sorted(os.listdir(st.upper)) == (["u"] if with_upper else [])
