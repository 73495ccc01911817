"""Unusual but legal calls, each checked on a real unionfs mount and, where it has an answer,
against the kernel's overlayfs on an identical stack (the oracle)."""

from __future__ import annotations

import errno
import mmap
import os
import select
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mounts, Stack, needs_root, unionfs_cli
from tests.integration.conftest import renameat2

StackFactory = Callable[..., Stack]
RENAME_WHITEOUT = 4
OLD_NS = 1_000_000_000_000_000_000  # 2001: older than any mtime, so relatime would update


def both(stack: StackFactory, mounts: Mounts, lower: dict[str, object],
         call: Callable[[Path], object]) -> tuple[object, object]:
    """Run ``call`` on unionfs and on the kernel's overlayfs (fresh identical stacks)."""
    needs_root()
    results = []
    for name, how in (("u", mounts.unionfs), ("k", mounts.overlay)):
        st = stack(lower, name=name)
        results.append(outcome(call, how(st)))
    return results[0], results[1]


def refused(res: subprocess.CompletedProcess[str], mnt: Path) -> bool:
    """True when a mount command failed with our exit status 2 (a mount it made anyway is
    undone, so a failing test leaves nothing behind)."""
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    return res.returncode == 2


def outcome(call: Callable[[Path], object], mnt: Path) -> object:
    try:
        return call(mnt)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


# ---- 8: the work dir ----------------------------------------------------------------------


def test_workdir_tmp_symlink_is_removed_not_followed(stack: StackFactory, mounts: Mounts,
                                                     tmp_path: Path) -> None:
    """A symlink planted as <work>/unionfs-tmp: the next mount deletes nothing behind it."""
    st = stack({"f": "x"})
    mounts.unionfs(st)
    mounts.unmount(st.mnt)
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep").write_text("precious")
    tmp = st.work / "unionfs-tmp"
    shutil.rmtree(tmp)
    tmp.symlink_to(victim)
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(victim)) == ["keep", "sub"]
    assert tmp.is_dir() and not tmp.is_symlink()
    with open(mnt / "f", "a") as f:  # a copy-up goes through the work dir
        f.write("y")
    assert (st.upper / "f").read_text() == "xy"
    assert sorted(os.listdir(victim)) == ["keep", "sub"]


def test_workdir_leftovers_cleaned_without_following_links(stack: StackFactory,
                                                           mounts: Mounts,
                                                           tmp_path: Path) -> None:
    """Leftovers of a crash holding symlinks to the host are removed; their targets stay."""
    st = stack({"f": "x"})
    mounts.unionfs(st)
    mounts.unmount(st.mnt)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    left = st.work / "unionfs-tmp" / "tmp-1-1"
    left.mkdir()
    (left / "to-host").symlink_to(victim)
    (st.work / "unionfs-tmp" / "tmp-1-2").symlink_to(victim)
    mounts.unionfs(st)
    assert os.listdir(st.work / "unionfs-tmp") == ["upper-format"]  # only the record
    assert os.listdir(victim) == ["keep"]


def test_workdir_parent_must_exist(stack: StackFactory, tmp_path: Path) -> None:
    """-o workdir=/missing/w is refused and creates nothing."""
    st = stack({"f": "x"})
    missing = tmp_path / "missing"
    res = unionfs_cli("mount", str(st.lowers[0]), str(st.upper), str(st.mnt),
                      "-o", f"workdir={missing}/w")
    assert refused(res, st.mnt), res.stderr
    assert "parent" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not missing.exists()


def test_rejected_workdir_leaves_nothing(stack: StackFactory, tmp_path: Path,
                                         tmpfs: Callable[..., Path]) -> None:
    """A work dir on another filesystem than the upper is refused before it is made."""
    st = stack({"f": "x"})
    other = tmpfs("other")
    res = unionfs_cli("mount", str(st.lowers[0]), str(st.upper), str(st.mnt),
                      "-o", f"workdir={other}/w")
    assert refused(res, st.mnt), res.stderr
    assert "filesystem" in res.stderr
    assert os.listdir(other) == []


# ---- 9: bad stacks ------------------------------------------------------------------------


def test_same_lower_twice_is_refused(stack: StackFactory, tmp_path: Path) -> None:
    """The same lower twice, also through another path to it (the kernel: ELOOP)."""
    st = stack({"f": "x"})
    alias = tmp_path / "alias"
    alias.symlink_to(st.lowers[0])
    for second in (st.lowers[0], alias):
        res = unionfs_cli("mount", f"{st.lowers[0]}:{second}", str(st.upper), str(st.mnt))
        assert refused(res, st.mnt), res.stderr
        assert "twice" in res.stderr
    assert not os.path.ismount(st.mnt)


def test_mount_point_that_is_a_layer_is_refused(stack: StackFactory) -> None:
    st = stack({"f": "x"}, {"g": "y"})
    for target in (st.lowers[1], st.upper):
        res = unionfs_cli("mount", f"{st.lowers[0]}:{st.lowers[1]}", str(st.upper),
                          str(target))
        assert refused(res, target), res.stderr
        assert "is a layer" in res.stderr
        assert not os.path.ismount(target)


# ---- 1: device 0/0 and RENAME_WHITEOUT ----------------------------------------------------


def test_mknod_char_0_0_is_refused_as_by_the_kernel(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    def call(mnt: Path) -> object:
        os.mknod(mnt / "d/c", stat.S_IFCHR | 0o644, os.makedev(0, 0))
        return "made"

    ours, kernel = both(stack, mounts, {"d/": None}, call)
    assert ours == kernel == "EPERM"


def test_other_device_nodes_are_kept(stack: StackFactory, mounts: Mounts) -> None:
    """Char 1/3, block 0/0 and 7/0 are ordinary nodes: made, kept across a remount."""
    needs_root()
    st = stack({"d/": None})
    mnt = mounts.unionfs(st)
    os.mknod(mnt / "d/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(mnt / "d/b00", stat.S_IFBLK | 0o600, os.makedev(0, 0))
    os.mknod(mnt / "d/loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    mounts.unmount(st.mnt)
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "d")) == ["b00", "loop", "null"]
    with pytest.raises(OSError) as info:
        os.rmdir(mnt / "d")
    assert info.value.errno == errno.ENOTEMPTY
    assert os.stat(mnt / "d/b00").st_rdev == 0 and stat.S_ISBLK(os.stat(mnt / "d/b00").st_mode)


def test_rename_whiteout_is_refused_as_by_the_kernel(stack: StackFactory,
                                                     mounts: Mounts) -> None:
    def call(mnt: Path) -> object:
        (mnt / "src").write_text("s")
        try:
            renameat2(mnt / "src", mnt / "dst", RENAME_WHITEOUT)
        finally:
            assert (mnt / "src").read_text() == "s"
        return "renamed"

    ours, kernel = both(stack, mounts, {"f": "x"}, call)
    assert ours == kernel == "EINVAL"


# ---- 2: O_DIRECT --------------------------------------------------------------------------


def _direct_io(mnt: Path) -> object:
    """Aligned O_DIRECT writes and reads of a new file and of a lower one (as dd does)."""
    buf = mmap.mmap(-1, 8192)  # page-aligned
    buf.write(b"D" * 8192)
    fd = os.open(mnt / "new", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        written = os.pwritev(fd, [buf], 0)
    finally:
        os.close(fd)
    got = []
    for name in ("new", "lowerfile"):
        rbuf = mmap.mmap(-1, 4096)
        fd = os.open(mnt / name, os.O_RDONLY | os.O_DIRECT)
        try:
            n = os.preadv(fd, [rbuf], 4096)
        finally:
            os.close(fd)
        got.append((n, rbuf[:8]))
    return written, got, (mnt / "new").read_bytes() == b"D" * 8192


def test_o_direct_reads_and_writes(stack: StackFactory, mounts: Mounts) -> None:
    ours, kernel = both(stack, mounts, {"lowerfile": b"L" * 12288}, _direct_io)
    assert ours == kernel == (8192, [(4096, b"D" * 8), (4096, b"L" * 8)], True)


def test_dd_with_direct_flags(stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"lowerfile": b"L" * 4096})
    mnt = mounts.unionfs(st)
    subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/new", "bs=4096", "count=1",
                    "oflag=direct"], check=True, capture_output=True)
    res = subprocess.run(["dd", f"if={mnt}/lowerfile", "of=/dev/stdout", "bs=4096",
                          "count=1", "iflag=direct"], check=True, capture_output=True)
    assert res.stdout == b"L" * 4096
    assert (mnt / "new").read_bytes() == b"\0" * 4096


# ---- 3: removed but open ------------------------------------------------------------------


def _removed_but_open(mnt: Path) -> object:
    out: list[object] = []
    os.mkdir(mnt / "ud")
    fd = os.open(mnt / "ud", os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(mnt / "ud")
    out += [os.fstat(fd).st_nlink, os.listdir(fd)]
    os.fchmod(fd, 0o700)
    os.fchown(fd, 5, 6)
    os.utime(fd, ns=(5, 6))
    st = os.fstat(fd)
    out += [oct(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns]
    os.close(fd)
    fd = os.open(mnt / "ld", os.O_RDONLY | os.O_DIRECTORY)  # a lower directory
    os.unlink(mnt / "ld/f")
    os.rmdir(mnt / "ld")
    out += [os.listdir(fd), stat.S_ISDIR(os.fstat(fd).st_mode)]
    os.close(fd)
    os.mkfifo(mnt / "fifo")
    fd = os.open(mnt / "fifo", os.O_RDWR)
    os.unlink(mnt / "fifo")
    out.append(os.fstat(fd).st_nlink)
    os.fchmod(fd, 0o600)
    os.fchown(fd, 7, 8)
    st = os.fstat(fd)
    out += [oct(st.st_mode), st.st_uid, st.st_gid]
    os.close(fd)
    return out


def test_removed_but_open_dirs_and_fifos(stack: StackFactory, mounts: Mounts) -> None:
    ours, kernel = both(stack, mounts, {"ld/f": "x"}, _removed_but_open)
    assert ours == kernel
    assert ours == [0, [], oct(0o40700), 5, 6, 6, [], True, 0, oct(0o10600), 7, 8]


def test_ls_in_a_removed_current_directory(stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"d/f": "x"})
    mnt = mounts.unionfs(st)
    res = subprocess.run(["sh", "-c", "cd d && rm f && rmdir ../d && ls -la . && pwd -P"],
                         cwd=mnt, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---- 4: lower layers never change, not even an atime --------------------------------------


def _times(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns


def test_reading_and_copy_up_never_touch_lower_atimes(stack: StackFactory,
                                                      mounts: Mounts) -> None:
    st = stack({"d/f": "data", "d/g": "more", "e/x": "x"})
    low = st.lowers[0]
    for rel in ("d/f", "d/g", "d", "e", "e/x"):
        os.utime(low / rel, ns=(OLD_NS, os.lstat(low / rel).st_mtime_ns))
    before = {rel: _times(low / rel) for rel in ("d/f", "d/g", "d", "e", "e/x")}
    mnt = mounts.unionfs(st)
    os.listdir(mnt / "d")
    (mnt / "d/g").read_text()
    with open(mnt / "d/f", "a") as f:  # copies d and d/f up
        f.write("!")
    (mnt / "e/new").write_text("n")  # copies e up
    assert {rel: _times(low / rel) for rel in before} == before
    assert os.stat(mnt / "d").st_atime_ns == OLD_NS  # the copy keeps the lower's atime


def test_utime_omit_keeps_atime_after_copy_up(stack: StackFactory, mounts: Mounts) -> None:
    """utimensat(UTIME_OMIT, t) of a lower directory and file: the atime stays as it was."""
    from tests.differential.execute import UTIME_OMIT, utimensat

    st = stack({"d/f": "data"})
    for rel in ("d/f", "d"):
        os.utime(st.lowers[0] / rel, ns=(OLD_NS, OLD_NS + 5))
    mnt = mounts.unionfs(st)
    os.listdir(mnt / "d")
    for rel in ("d/f", "d"):
        utimensat(str(mnt / rel), UTIME_OMIT, 1_300_000_000_000_000_000, follow=False)
        assert _times(mnt / rel) == (OLD_NS, 1_300_000_000_000_000_000)
    mounts.unmount(st.mnt)
    assert _times(st.upper / "d/f") == (OLD_NS, 1_300_000_000_000_000_000)


# ---- 7: I/O errors of a layer -------------------------------------------------------------


FAILING_FS = Path(__file__).with_name("failing_fs.py")


def test_io_error_while_listing_reaches_the_caller(stack: StackFactory, mounts: Mounts,
                                                   tmp_path: Path) -> None:
    """A lower (a FUSE layer of this test's own) whose lstat of one entry fails with EIO:
    listing the union's directory fails with EIO, it is not a shorter listing."""
    lower = tmp_path / "failing"
    lower.mkdir()
    st = stack({})
    st.lowers[0] = lower
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, str(FAILING_FS), str(lower), str(write_fd)],
                            pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)  # the line comes once mounted
        assert ready and os.read(read_fd, 16) == b"ready\n"
        assert sorted(os.listdir(lower / "d")) == ["bad", "good"]
        with pytest.raises(OSError) as info:
            os.lstat(lower / "d/bad")
        assert info.value.errno == errno.EIO
        mnt = mounts.unionfs(st)
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "d")
        assert info.value.errno == errno.EIO
        res = subprocess.run(["ls", "-l", str(mnt / "d")], capture_output=True, text=True)
        assert res.returncode != 0
    finally:
        mounts.unmount(st.mnt)  # the union first: it holds the failing layer open
        subprocess.run(["fusermount3", "-u", str(lower)], capture_output=True)
        proc.wait(timeout=30)
        os.close(read_fd)


# ---- 6: nested overlays: overlay.* xattrs escaped ------------------------------------------


def _kernel_escapes() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 7)


def _nested_xattrs(mnt: Path) -> object:
    out: list[object] = []
    os.setxattr(mnt / "f", "trusted.overlay.opaque", b"y")  # a lower file: copied up
    os.setxattr(mnt / "f", "trusted.overlay.overlay.deep", b"2")
    out.append(sorted(os.listxattr(mnt / "f")))
    out.append(os.getxattr(mnt / "f", "trusted.overlay.opaque"))
    out.append(os.getxattr(mnt / "esc", "trusted.overlay.whiteout"))  # escaped in the lower
    out.append(sorted(os.listxattr(mnt / "esc")))
    os.removexattr(mnt / "f", "trusted.overlay.opaque")
    out.append(sorted(os.listxattr(mnt / "f")))
    out.append(sorted(os.listdir(mnt / "d")))  # its escaped opaque xattr is no marker
    return out


def _escaped_lower(stack: StackFactory, name: str) -> Stack:
    st = stack({"f": "x", "esc": "", "d/a": "a"}, {"d/b": "b"}, name=name)
    os.setxattr(st.lowers[0] / "esc", "trusted.overlay.overlay.whiteout", b"y")
    os.setxattr(st.lowers[0] / "esc", "trusted.overlay.unionfs.origin", b"1")  # private
    os.setxattr(st.lowers[0] / "d", "trusted.overlay.overlay.opaque", b"y")
    return st


def test_nested_overlay_xattrs_as_the_kernel(stack: StackFactory, mounts: Mounts) -> None:
    """Set, get, list, remove of trusted.overlay.* through the union, and escaped xattrs
    of a lower: the same as the kernel's overlayfs (Linux >= 6.7), and the kernel reads
    the upper unionfs wrote the same way."""
    needs_root()
    st = _escaped_lower(stack, "u")
    ours = _nested_xattrs(mounts.unionfs(st))
    assert ours == [["trusted.overlay.opaque", "trusted.overlay.overlay.deep"], b"y", b"y",
                    ["trusted.overlay.whiteout"], ["trusted.overlay.overlay.deep"],
                    ["a", "b"]]
    assert os.getxattr(st.upper / "f", "trusted.overlay.overlay.overlay.deep") == b"2"
    mounts.unmount(st.mnt)
    if not _kernel_escapes():
        pytest.skip(f"kernel {os.uname().release} predates overlay xattr escaping (6.7)")
    kernel = _nested_xattrs(mounts.overlay(_escaped_lower(stack, "k")))
    assert ours == kernel
    mounts.unmount(st.mnt)
    mnt = mounts.overlay(st)  # the kernel over the upper unionfs wrote
    assert sorted(os.listxattr(mnt / "f")) == ["trusted.overlay.overlay.deep"]


# ---- 5: deeper than PATH_MAX --------------------------------------------------------------

DEEP = [f"{i:03d}" + "x" * 196 for i in range(25)]  # 25 x 200 bytes: 5 KB below the root


def _walk(root: Path, names: list[str], *, make: bool = False) -> int:
    """An fd of ``root/names...`` reached one component at a time (made with ``make``)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        if make:
            os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _deep_calls(mnt: Path) -> object:
    fd = _walk(mnt, DEEP)
    try:
        got: list[object] = [sorted(os.listdir(fd))]
        rfd = os.open("f", os.O_RDONLY, dir_fd=fd)
        got.append(os.read(rfd, 100))
        os.close(rfd)
        wfd = os.open("f", os.O_WRONLY | os.O_APPEND, dir_fd=fd)  # copies 25 dirs up
        os.write(wfd, b"+more")
        os.close(wfd)
        os.mkdir("sub", dir_fd=fd)
        os.rename("f", "sub/g", src_dir_fd=fd, dst_dir_fd=fd)
        os.unlink("gone", dir_fd=fd)
        got.append(sorted(os.listdir(fd)))
        with open(os.open("sub/g", os.O_RDONLY, dir_fd=fd), "rb") as f:
            got.append(f.read())
    finally:
        os.close(fd)
    return got


def test_paths_deeper_than_path_max(stack: StackFactory, mounts: Mounts) -> None:
    """A lower tree 5 KB deep: read, copy-up, create, rename and delete at the bottom, as
    the kernel's overlayfs does; everything is still there after a remount."""
    results = []
    for name, how in (("u", mounts.unionfs), ("k", mounts.overlay)):
        st = stack({}, name=name)
        fd = _walk(st.lowers[0], DEEP, make=True)
        for leaf in ("f", "gone"):
            with open(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                f.write(b"deep data")
        os.close(fd)
        results.append(outcome(_deep_calls, how(st)))
        if name == "u":
            mounts.unmount(st.mnt)
            fd = _walk(mounts.unionfs(st), DEEP)
            assert sorted(os.listdir(fd)) == ["sub"]
            os.close(fd)
    assert results[0] == results[1]
    assert results[0] == [["f", "gone"], b"deep data", ["sub"], b"deep data+more"]


# ---- 10: O(1) rename of lower directories with overlay.redirect -------------------------


def _tree(root: Path) -> dict[str, Any]:
    """Every name below ``root``: file contents, or the names of a directory."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel] = sorted(dirnames + filenames)
        for name in filenames:
            out[os.path.join(rel, name)] = Path(dirpath, name).read_bytes()
    return out


def _files_in(root: Path) -> int:
    """Regular files below ``root`` (whiteouts are not copies)."""
    return sum(1 for dirpath, _, files in os.walk(root) for name in files
               if stat.S_ISREG(os.lstat(os.path.join(dirpath, name)).st_mode))


BIG = {f"src/pkg{i}/mod{j}.py": f"# {i} {j}\n" for i in range(10) for j in range(20)}


def test_rename_of_a_lower_dir_is_a_redirect(stack: StackFactory, mounts: Mounts) -> None:
    """mv of a populated lower directory copies no file up: the moved directory gets
    trusted.overlay.redirect; the tree reads the same through unionfs (also after a
    remount) and through the kernel's overlayfs (redirect_dir=on) over unionfs's upper."""
    needs_root()
    st = stack({**BIG, "src/keep": "k", "other/": None}, {"src/pkg0/low": "l"})
    mnt = mounts.unionfs(st)
    want = _tree(mnt / "src")
    os.rename(mnt / "src", mnt / "moved")  # another name, same directory: relative
    os.rename(mnt / "moved/pkg3", mnt / "other/pkg3")  # across directories: absolute
    assert _files_in(st.upper) == 0
    assert os.getxattr(st.upper / "moved", "trusted.overlay.redirect") == b"src"
    assert os.getxattr(st.upper / "other/pkg3", "trusted.overlay.redirect") == b"/src/pkg3"
    assert not (mnt / "src").exists()
    assert _tree(mnt / "other/pkg3") == _tree(st.lowers[0] / "src/pkg3")
    del want["pkg3"]
    want["."] = [n for n in want["."] if n != "pkg3"]
    assert {k: v for k, v in _tree(mnt / "moved").items() if not k.startswith("pkg3")} == {
        k: v for k, v in want.items() if not k.startswith("pkg3")}
    with open(mnt / "moved/pkg1/mod2.py", "a") as f:  # copy-up inside a redirected dir
        f.write("changed\n")
    os.unlink(mnt / "moved/pkg2/mod0.py")
    got = _tree(mnt / "moved")
    mounts.unmount(st.mnt)
    assert _files_in(st.upper) == 1
    mnt = mounts.unionfs(st)
    assert _tree(mnt / "moved") == got and not (mnt / "src").exists()
    assert got["pkg1/mod2.py"] == b"# 1 2\nchanged\n" and "mod0.py" not in got["pkg2"]
    whole = _tree(mnt)
    mounts.unmount(st.mnt)
    kernel = Stack(st.base, st.lowers, st.upper, st.base / "kwork", st.mnt)
    assert _tree(mounts.overlay(kernel, extra="redirect_dir=on")) == whole


def test_redirects_the_kernel_wrote_are_followed(stack: StackFactory, mounts: Mounts) -> None:
    """An upper the kernel's overlayfs (redirect_dir=on) made by renaming lower directories,
    nested renames included, reads the same through unionfs."""
    needs_root()
    st = stack({**BIG, "a/b/c/f": "f", "x/": None})
    kernel = Stack(st.base, st.lowers, st.upper, st.base / "kwork", st.mnt)
    mnt = mounts.overlay(kernel, extra="redirect_dir=on")
    os.rename(mnt / "src", mnt / "s2")
    os.rename(mnt / "s2/pkg4", mnt / "x/p4")
    os.rename(mnt / "a/b", mnt / "x/b")
    os.rename(mnt / "x", mnt / "y")
    os.rename(mnt / "a", mnt / "y/b/a")
    (mnt / "y/b/c/new").write_text("n")
    want = _tree(mnt)
    mounts.unmount(st.mnt)
    assert _files_in(st.upper) == 1
    assert _tree(mounts.unionfs(st)) == want


def test_redirect_dir_off_copies_the_tree(stack: StackFactory, mounts: Mounts) -> None:
    st = stack({"d/a": "a", "d/e/b": "b"})
    mnt = mounts.unionfs(st, extra=["redirect_dir=off"])
    os.rename(mnt / "d", mnt / "d2")
    assert _files_in(st.upper) == 2
    assert os.getxattr(st.upper / "d2", "trusted.overlay.opaque") == b"y"
    with pytest.raises(OSError):
        os.getxattr(st.upper / "d2", "trusted.overlay.redirect")


def test_an_upper_with_a_redirect_is_not_committed(stack: StackFactory, mounts: Mounts,
                                                   tmp_path: Path) -> None:
    """A layer archive cannot hold a redirect: commit refuses such an upper in one line
    (nothing is stored) rather than storing the moved directory empty."""
    needs_root()
    st = stack({"d/a": "a"})
    mnt = mounts.unionfs(st)
    os.rename(mnt / "d", mnt / "e")
    mounts.unmount(st.mnt)
    store = tmp_path / "store"
    res = unionfs_cli("commit", "--upper", str(st.upper), "moved:1", "--store", str(store))
    assert res.returncode == 2, res.stderr
    assert "redirect_dir=off" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    listing = unionfs_cli("images", "--store", str(store))
    assert "moved" not in listing.stdout
