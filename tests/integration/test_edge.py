"""Corner cases of the write path: merged dirs, open files across renames, links, remounts."""

from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.conftest import RENAME_EXCHANGE, renameat2

StackFactory = Callable[..., Stack]


def listing(root: Path) -> dict[str, str]:
    """Every name under ``root``: file contents, "dir", or "-> target"."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = ("-> " + os.readlink(p) if p.is_symlink() else
                        "dir" if p.is_dir() else p.read_text())
    return out


def remount(mounts: Mounts, st: Stack) -> Path:
    """Unmount and mount the same stack again."""
    mounts.unmount(st.mnt)
    return mounts.unionfs(st)


def test_changes_survive_remount(stack: StackFactory, mounts: Mounts) -> None:
    """A mix of changes reads back the same after a remount."""
    st = stack({"d/a": "a", "d/b": "b", "e/x": "x", "f": "f"}, {"d/c": "c", "g": "g"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "d/b")
    os.rename(mnt / "e", mnt / "e2")
    (mnt / "d/new").write_text("new")
    os.unlink(mnt / "g")
    os.mkdir(mnt / "g")
    (mnt / "g/in").write_text("in")
    os.symlink("d/a", mnt / "lnk")
    before = listing(mnt)
    assert before == listing(remount(mounts, st))


def test_parent_mtime_moves_on_create_and_unlink(stack: StackFactory,
                                                 mounts: Mounts) -> None:
    """Creating and removing names in a lower dir moves the dir's mtime."""
    st = stack({"d/a": "a"})
    os.utime(st.lowers[0] / "d", ns=(10**18, 10**18))
    mnt = mounts.unionfs(st)
    (mnt / "d/new").write_text("x")
    t1 = os.stat(mnt / "d").st_mtime_ns
    assert t1 != 10**18
    time.sleep(0.01)
    os.unlink(mnt / "d/a")
    assert os.stat(mnt / "d").st_mtime_ns > t1


def test_create_exclusive_over_lower_name(stack: StackFactory, mounts: Mounts) -> None:
    """O_CREAT|O_EXCL on a name a lower has: EEXIST, nothing copied up."""
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    with pytest.raises(FileExistsError):
        os.open(mnt / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert os.listdir(st.upper) == []


def test_open_trunc_of_lower_file(stack: StackFactory, mounts: Mounts) -> None:
    """O_TRUNC on a lower file empties the union's copy, not the lower."""
    st = stack({"f": "lower data"})
    mnt = mounts.unionfs(st)
    with open(mnt / "f", "w") as f:
        f.write("w")
    assert (mnt / "f").read_text() == "w"
    assert (st.lowers[0] / "f").read_text() == "lower data"


def test_open_file_survives_rename_of_its_dir(stack: StackFactory, mounts: Mounts) -> None:
    """A file open for writing keeps working after its lower parent dir is renamed."""
    st = stack({"d/f": "abc", "d/g": "g"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "d/f", os.O_RDWR)
    try:
        os.rename(mnt / "d", mnt / "moved")
        os.pwrite(fd, b"X", 0)
        os.fsync(fd)
        assert (mnt / "moved/f").read_text() == "Xbc"
        ro = os.open(mnt / "moved/g", os.O_RDONLY)
        os.close(ro)
    finally:
        os.close(fd)
    assert (st.upper / "moved/f").read_text() == "Xbc"


def test_reader_opened_before_rename_and_copy_up(stack: StackFactory, mounts: Mounts) -> None:
    """A read-only handle on a lower file follows it through a rename and a copy-up."""
    st = stack({"f": "old"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        os.rename(mnt / "f", mnt / "g")
        (mnt / "g").write_text("new")
        assert os.pread(fd, 10, 0) == b"new"
    finally:
        os.close(fd)


def test_unlink_one_of_two_links(stack: StackFactory, mounts: Mounts) -> None:
    """Removing one name of a linked pair leaves the other with nlink 1."""
    st = stack({"f": "data"})
    mnt = mounts.unionfs(st)
    os.link(mnt / "f", mnt / "g")
    os.unlink(mnt / "f")
    assert os.stat(mnt / "g").st_nlink == 1
    assert (mnt / "g").read_text() == "data"
    assert os.listdir(mnt) == ["g"]


def test_rename_onto_nonempty_merged_dir(stack: StackFactory, mounts: Mounts) -> None:
    """A dir whose content is only in a lower is not empty as a rename target."""
    st = stack({"src/": None, "dst/": None}, {"dst/x": "x"})
    mnt = mounts.unionfs(st)
    with pytest.raises(OSError) as exc:
        os.rename(mnt / "src", mnt / "dst")
    assert exc.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "dst/x")
    os.rename(mnt / "src", mnt / "dst")
    assert os.listdir(mnt) == ["dst"]
    assert os.listdir(remount(mounts, st) / "dst") == []


def test_exchange_two_merged_dirs(stack: StackFactory, mounts: Mounts) -> None:
    """RENAME_EXCHANGE of two dirs merged from two layers swaps their whole content."""
    st = stack({"a/a1": "1", "b/b1": "1"}, {"a/a2": "2", "b/b2": "2"})
    mnt = mounts.unionfs(st)
    renameat2(mnt / "a", mnt / "b", RENAME_EXCHANGE)
    want = {"a": "dir", "b": "dir", "a/b1": "1", "a/b2": "2", "b/a1": "1", "b/a2": "2"}
    assert listing(mnt) == want
    assert listing(remount(mounts, st)) == want


def test_rename_file_between_lower_dirs(stack: StackFactory, mounts: Mounts) -> None:
    """Moving a file from one lower dir to another copies both parents up."""
    st = stack({"a/f": "f"}, {"b/g": "g"})
    mnt = mounts.unionfs(st)
    os.rename(mnt / "a/f", mnt / "b/f")
    assert listing(mnt) == {"a": "dir", "b": "dir", "b/f": "f", "b/g": "g"}
    assert listing(remount(mounts, st)) == {"a": "dir", "b": "dir", "b/f": "f", "b/g": "g"}


def test_rmdir_then_mkdir_then_remount_stays_opaque(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    """A dir deleted and made again hides the old content after a remount too."""
    st = stack({"d/old": "x", "d/sub/deep": "y"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "d/old")
    os.unlink(mnt / "d/sub/deep")
    os.rmdir(mnt / "d/sub")
    os.rmdir(mnt / "d")
    os.mkdir(mnt / "d")
    (mnt / "d/fresh").write_text("f")
    assert os.listdir(remount(mounts, st) / "d") == ["fresh"]


def test_mmap_write(stack: StackFactory, mounts: Mounts) -> None:
    """Shared mmap writes to a lower file reach the upper copy."""
    st = stack({"f": "abcdef"})
    mnt = mounts.unionfs(st)
    with open(mnt / "f", "r+b") as f, mmap.mmap(f.fileno(), 6) as m:
        m[0:3] = b"XYZ"
        m.flush()
    assert (mnt / "f").read_text() == "XYZdef"
    assert (st.upper / "f").read_text() == "XYZdef"


def test_append_and_extend(stack: StackFactory, mounts: Mounts) -> None:
    """O_APPEND appends at the end; truncate beyond the end reads as zeros."""
    st = stack({"f": "abc"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"de")
        os.write(fd, b"f")
    finally:
        os.close(fd)
    assert (mnt / "f").read_text() == "abcdef"
    os.truncate(mnt / "f", 10)
    assert (mnt / "f").read_bytes() == b"abcdef\0\0\0\0"


def test_mknod_fifo_and_symlink_create(stack: StackFactory, mounts: Mounts) -> None:
    """New FIFOs, device nodes and symlinks land in the upper as themselves."""
    st = stack({"d/x": "x"})
    mnt = mounts.unionfs(st)
    os.mkfifo(mnt / "d/fifo", 0o640)
    os.mknod(mnt / "d/zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    os.symlink("../nowhere", mnt / "d/l")
    assert stat.S_ISFIFO(os.lstat(st.upper / "d/fifo").st_mode)
    assert os.lstat(st.upper / "d/zero").st_rdev == os.makedev(1, 5)
    assert os.readlink(st.upper / "d/l") == "../nowhere"
    assert stat.S_IMODE(os.lstat(mnt / "d/fifo").st_mode) == 0o640


def test_chmod_root_of_mount(stack: StackFactory, mounts: Mounts) -> None:
    """The union's root takes attribute changes and xattrs (stored on the upper root)."""
    st = stack({"f": "x"})
    mnt = mounts.unionfs(st)
    os.chmod(mnt, 0o711)
    os.setxattr(mnt, "user.root", b"r")
    assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o711
    assert os.getxattr(mnt, "user.root") == b"r"
    assert stat.S_IMODE(os.stat(st.upper).st_mode) == 0o711


def test_xattr_on_dir_copies_dir_only(stack: StackFactory, mounts: Mounts) -> None:
    """setxattr on a lower dir copies the dir up alone; its listing stays merged."""
    st = stack({"d/a": "a", "d/sub/b": "b"})
    mnt = mounts.unionfs(st)
    os.setxattr(mnt / "d", "user.k", b"v")
    assert os.listxattr(mnt / "d") == ["user.k"]
    assert sorted(os.listdir(mnt / "d")) == ["a", "sub"]
    assert os.listdir(st.upper / "d") == []
    os.removexattr(mnt / "d", "user.k")
    assert os.listxattr(mnt / "d") == []
    with pytest.raises(OSError) as exc:
        os.removexattr(mnt / "d", "user.k")
    assert exc.value.errno == errno.ENODATA


def test_overlay_xattrs_set_through_the_union_are_escaped(stack: StackFactory,
                                                          mounts: Mounts) -> None:
    """The overlay's own names set through the union are data, stored one level down (as
    Linux >= 6.7 does): they never act as markers (d stays a merged dir after a remount)."""
    st = stack({"d/a": "a"}, {"d/b": "b"})
    mnt = mounts.unionfs(st)
    os.setxattr(mnt / "d", "trusted.overlay.opaque", b"y")
    assert os.listxattr(mnt / "d") == ["trusted.overlay.opaque"]
    assert os.getxattr(st.upper / "d", "trusted.overlay.overlay.opaque") == b"y"
    mounts.unmount(st.mnt)
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "d")) == ["a", "b"]


def test_concurrent_writers_of_one_lower_file(stack: StackFactory, mounts: Mounts) -> None:
    """Two handles opened for write on a lower file write into the same upper copy."""
    st = stack({"f": "0123456789"})
    mnt = mounts.unionfs(st)
    a = os.open(mnt / "f", os.O_RDWR)
    b = os.open(mnt / "f", os.O_RDWR)
    try:
        os.pwrite(a, b"A", 0)
        os.pwrite(b, b"B", 9)
    finally:
        os.close(a)
        os.close(b)
    assert (mnt / "f").read_text() == "A12345678B"
    assert (st.upper / "f").read_text() == "A12345678B"


def test_root_xattrs_of_top_layer_show(stack: StackFactory, mounts: Mounts) -> None:
    """The union root shows its top layer's root xattrs (read-only union, no upper)."""
    st = stack({"f": "x"})
    os.setxattr(st.lowers[0], "user.rootattr", b"yes")
    mnt = mounts.unionfs(st, writable=False)
    assert os.getxattr(mnt, "user.rootattr") == b"yes"
    assert os.listxattr(mnt) == ["user.rootattr"]


def test_unlink_one_of_two_lower_links(stack: StackFactory, mounts: Mounts) -> None:
    """Two names of one lower file: deleting one leaves the other readable and writable."""
    st = stack({"a": "data"})
    os.link(st.lowers[0] / "a", st.lowers[0] / "b")
    mnt = mounts.unionfs(st)
    assert os.stat(mnt / "a").st_ino == os.stat(mnt / "b").st_ino
    os.unlink(mnt / "a")
    assert (mnt / "b").read_text() == "data"
    (mnt / "b").write_text("new")
    assert (st.upper / "b").read_text() == "new"
    assert os.listdir(mnt) == ["b"]


def test_rmtree_of_merged_tree(stack: StackFactory, mounts: Mounts) -> None:
    """``rm -rf`` of a tree merged from two layers leaves nothing, also after a remount."""
    top = {f"t/d{i}/f{j}": "x" for i in range(20) for j in range(20)}
    low = {f"t/d{i}/g{j}": "y" for i in range(25) for j in range(10)}
    st = stack(top, low)
    mnt = mounts.unionfs(st)
    import shutil

    shutil.rmtree(mnt / "t")
    assert os.listdir(mnt) == []
    assert os.listdir(remount(mounts, st)) == []


def test_rename_dir_with_deleted_lower_entry(stack: StackFactory, mounts: Mounts) -> None:
    """A name deleted in a lower dir stays deleted after the dir is renamed."""
    st = stack({"d/a": "a", "d/b": "b"})
    mnt = mounts.unionfs(st)
    os.unlink(mnt / "d/a")
    os.rename(mnt / "d", mnt / "e")
    assert os.listdir(mnt / "e") == ["b"]
    assert os.listdir(remount(mounts, st) / "e") == ["b"]
    assert os.listdir(mnt) == ["e"]


def test_setgid_dir_and_umask(stack: StackFactory, mounts: Mounts) -> None:
    """New entries in a set-gid lower dir take its group (dirs also the bit); umask applies."""
    st = stack({"g/": None})
    os.chown(st.lowers[0] / "g", 0, 1234)
    os.chmod(st.lowers[0] / "g", 0o2775)
    mnt = mounts.unionfs(st)
    old = os.umask(0o077)
    try:
        (mnt / "g/f").write_text("x")
        os.mkdir(mnt / "g/sub")
    finally:
        os.umask(old)
    f, sub = os.stat(mnt / "g/f"), os.stat(mnt / "g/sub")
    assert (f.st_gid, stat.S_IMODE(f.st_mode)) == (1234, 0o600)
    assert sub.st_gid == 1234 and sub.st_mode & stat.S_ISGID
    assert stat.S_IMODE(sub.st_mode) & 0o777 == 0o700


def test_unlinked_open_file_has_nlink_zero(stack: StackFactory, mounts: Mounts) -> None:
    """fstat of an open file after its only name is removed shows st_nlink 0."""
    st = stack({"lower": "l"}, upper={"upper": "u"})
    mnt = mounts.unionfs(st)
    fds = [os.open(mnt / "lower", os.O_RDONLY), os.open(mnt / "upper", os.O_RDWR)]
    try:
        os.unlink(mnt / "lower")
        os.unlink(mnt / "upper")
        assert [os.fstat(fd).st_nlink for fd in fds] == [0, 0]
        assert [os.pread(fd, 5, 0) for fd in fds] == [b"l", b"u"]
    finally:
        for fd in fds:
            os.close(fd)


def test_type_errnos(stack: StackFactory, mounts: Mounts) -> None:
    """unlink of a dir, rmdir of a file, mkdir over a name, rename across types."""
    st = stack({"d/x": "x", "f": "f"}, {"e/": None})
    mnt = mounts.unionfs(st)
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: os.unlink(mnt / "d"), errno.EISDIR),
        (lambda: os.rmdir(mnt / "f"), errno.ENOTDIR),
        (lambda: os.mkdir(mnt / "e"), errno.EEXIST),
        (lambda: os.rename(mnt / "e", mnt / "f"), errno.ENOTDIR),
        (lambda: os.rename(mnt / "f", mnt / "e"), errno.EISDIR),
        (lambda: os.rename(mnt / "d", mnt / "d/x/y"), errno.ENOTDIR),
        (lambda: os.rename(mnt / "e", mnt / "e/sub"), errno.EINVAL),
        (lambda: os.link(mnt / "d", mnt / "d2"), errno.EPERM),
        (lambda: os.rmdir(mnt / "d"), errno.ENOTEMPTY),
    ]
    for call, code in cases:
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == code, (call, exc.value)
    assert os.listdir(st.upper) == []


def test_lower_hard_links_stay_one_file_after_write(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    """Writing through one name of a lower hard-linked pair changes both, for good."""
    st = stack({"a": "old"})
    os.link(st.lowers[0] / "a", st.lowers[0] / "b")
    mnt = mounts.unionfs(st)
    (mnt / "a").write_text("new")
    assert (mnt / "b").read_text() == "new"
    remount(mounts, st)
    assert (mnt / "b").read_text() == "new"  # b first: the kernel's cache of a is no help
    assert (mnt / "a").read_text() == "new"
    assert os.stat(mnt / "a").st_ino == os.stat(mnt / "b").st_ino


def test_lower_hard_links_across_dirs_and_hidden_names(stack: StackFactory,
                                                       mounts: Mounts) -> None:
    """Every visible name of a lower inode is linked at copy-up (parents copied up first);
    a whited-out name and a name shadowed by a higher layer are left alone. The kernel's
    overlayfs then reads the upper the same way."""
    st = stack({"shadowed": "from lower0"},
               {"a": "old", "x/y/b": "", "gone": "", "shadowed": ""})
    low = st.lowers[1]
    for alias in ("x/y/b", "gone", "shadowed"):
        (low / alias).unlink()
        os.link(low / "a", low / alias)
    mnt = mounts.unionfs(st)
    (mnt / "gone").unlink()
    with open(mnt / "a", "a") as f:
        f.write("+new")
    assert (mnt / "x/y/b").read_text() == "old+new"
    assert os.stat(mnt / "x/y/b").st_ino == os.stat(mnt / "a").st_ino
    assert (st.upper / "x/y/b").stat().st_ino == (st.upper / "a").stat().st_ino
    assert (st.upper / "a").stat().st_nlink == 2
    gone = os.lstat(st.upper / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0  # still a whiteout
    assert not (st.upper / "shadowed").exists()
    assert (low / "a").read_text() == "old"
    mounts.unmount(st.mnt)
    kernel = mounts.overlay(st)
    assert (kernel / "x/y/b").read_text() == "old+new"
    assert os.stat(kernel / "x/y/b").st_ino == os.stat(kernel / "a").st_ino
    assert (kernel / "shadowed").read_text() == "from lower0"
    assert not (kernel / "gone").exists()


MAKERS: dict[str, Callable[[Path, Path], object]] = {
    "create": lambda old, new: new.write_text("x"),
    "mkdir": lambda old, new: os.mkdir(new),
    "symlink": lambda old, new: os.symlink("t", new),
    "link": lambda old, new: os.link(old, new),
    "rename": lambda old, new: os.rename(old, new),
}


@pytest.mark.parametrize("how", sorted(MAKERS))
def test_oci_marker_names_are_refused(stack: StackFactory, mounts: Mounts, how: str) -> None:
    """``.wh.*`` names cannot be created or renamed to: the upper would read them back as
    whiteouts at the next mount, losing the file and the name it marks."""
    st = stack({"foo": "lower foo"})
    mnt = mounts.unionfs(st)
    for name in (".wh.foo", ".wh.bar", ".wh..wh..opq"):
        with pytest.raises(OSError) as exc:
            MAKERS[how](mnt / "foo", mnt / name)
        assert exc.value.errno == errno.EINVAL
    assert os.listdir(remount(mounts, st)) == ["foo"]
    assert (mnt / "foo").read_text() == "lower foo"


def test_unlinked_lower_file_open_readonly_never_changes_the_lower(stack: StackFactory,
                                                                   mounts: Mounts) -> None:
    """fchmod/fchown/futimens through an fd of a deleted lower file must not reach the lower
    layer (it has no upper copy to change): ENOENT, the lower untouched."""
    st = stack({"f": "lower"})
    low = st.lowers[0] / "f"
    os.chmod(low, 0o644)
    before = os.stat(low)
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        os.unlink(mnt / "f")
        for call in (lambda: os.fchmod(fd, 0o600), lambda: os.fchown(fd, 5, 5)):
            with pytest.raises(FileNotFoundError):
                call()
        os.utime(fd, ns=(1, 2))  # times of an unlinked file: accepted, changes nothing below
        assert os.pread(fd, 10, 0) == b"lower"
    finally:
        os.close(fd)
    after = os.stat(low)
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == (
        before.st_mode, before.st_uid, before.st_mtime_ns)


def test_unlinked_upper_file_takes_fchmod_and_fchown(stack: StackFactory,
                                                     mounts: Mounts) -> None:
    """fchmod/fchown of an unlinked file open for writing change the open file."""
    st = stack({"f": "lower"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.unlink(mnt / "f")
        os.fchmod(fd, 0o600)
        os.fchown(fd, 5, 6)
        s = os.fstat(fd)
        assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) == (0o600, 5, 6)
    finally:
        os.close(fd)


def test_xattrs_of_unlinked_open_file_readable(stack: StackFactory, mounts: Mounts) -> None:
    """fgetxattr/flistxattr of an unlinked file still open (lower or upper) work, as on
    any filesystem."""
    st = stack({"low": "l"}, upper={"up": "u"})
    os.setxattr(st.lowers[0] / "low", "user.k", b"lower")
    os.setxattr(st.upper / "up", "user.k", b"upper")
    mnt = mounts.unionfs(st)
    fds = [os.open(mnt / "low", os.O_RDONLY), os.open(mnt / "up", os.O_RDWR)]
    try:
        os.unlink(mnt / "low")
        os.unlink(mnt / "up")
        assert [os.getxattr(fd, "user.k") for fd in fds] == [b"lower", b"upper"]
        assert [os.listxattr(fd) for fd in fds] == [["user.k"], ["user.k"]]
    finally:
        for fd in fds:
            os.close(fd)


def test_fsetxattr_of_unlinked_open_file(stack: StackFactory, mounts: Mounts) -> None:
    """fsetxattr/fremovexattr on an unlinked file open for writing change that file; on one
    open only read-only in a lower they are ENOENT and the lower is untouched."""
    st = stack({"low": "l"}, upper={"up": "u"})
    mnt = mounts.unionfs(st)
    fd = os.open(mnt / "up", os.O_RDWR)
    ro = os.open(mnt / "low", os.O_RDONLY)
    try:
        os.unlink(mnt / "up")
        os.unlink(mnt / "low")
        os.setxattr(fd, "user.k", b"v")
        assert os.getxattr(fd, "user.k") == b"v"
        os.removexattr(fd, "user.k")
        assert os.listxattr(fd) == []
        with pytest.raises(FileNotFoundError):
            os.setxattr(ro, "user.k", b"v")
    finally:
        os.close(fd)
        os.close(ro)
    assert os.listxattr(st.lowers[0] / "low") == []


def test_exchange_of_a_hard_link_keeps_its_other_name(stack: StackFactory,
                                                      mounts: Mounts) -> None:
    """A hard-linked file known to the kernel under another name: moving one name (here by
    RENAME_EXCHANGE) and unlinking it leaves the other name whole (differential seed 15)."""
    st = stack({"f": "data", "a/": None, "b/other": "o"})
    mnt = mounts.unionfs(st)
    os.link(mnt / "f", mnt / "a/n1")
    assert sorted(os.listdir(mnt)) == ["a", "b", "f"]  # readdirplus: the node is named f again
    renameat2(mnt / "a/n1", mnt / "b/other", RENAME_EXCHANGE)
    assert (mnt / "b/other").read_text() == "data"
    os.unlink(mnt / "b/other")
    assert sorted(os.listdir(mnt)) == ["a", "b", "f"]
    assert (mnt / "f").read_text() == "data"
    assert os.stat(mnt / "f").st_nlink == 1
    assert (mnt / "a/n1").read_text() == "o"


def test_hard_link_looked_up_after_the_kernel_forgot_it(stack: StackFactory,
                                                        mounts: Mounts) -> None:
    """A node with two names leaves the server's table under one of them when the kernel
    forgets it; a lookup of the other name must make a fresh node, not hand out the
    forgotten one (the kernel's next request on it got ESTALE)."""
    st = stack({"f": "data"})
    mnt = mounts.unionfs(st)
    os.link(mnt / "f", mnt / "g")
    assert os.stat(mnt / "f").st_ino == os.stat(mnt / "g").st_ino
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    for name in ("f", "g"):
        with open(mnt / name, "a") as out:
            out.write(name)
    assert (mnt / "f").read_text() == "datafg"
