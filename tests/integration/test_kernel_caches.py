"""What the kernel caches for us, and that the caches stay right when the union changes.

The server answers listings once and lets the kernel keep them (FOPEN_CACHE_DIR, added to
pyfuse3's table by unionfs.fuse.lowlevel), and lets the kernel check and cache POSIX ACLs.
The request counters of the server's control socket show what reached the server.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from unionfs.api import server_stats

StackFactory = Callable[..., Stack]
ACL_ACCESS = "system.posix_acl_access"
SELINUX = "security.selinux"
def requests(mnt: Path, name: str) -> int:
    return int(server_stats(mnt)["requests"].get(name, 0))


def test_extensions_are_installed(stack: StackFactory, mounts: Mounts) -> None:
    """On this machine's pyfuse3 and libfuse, every extension must be in place."""
    mnt = mounts.unionfs(stack({}))
    assert set(server_stats(mnt)["features"]) == {"fallocate", "cache_readdir",
                                                   "cache_symlinks", "lean_wait",
                                                   "parallel_dirops", "readdir_names",
                                                   "getxattr_known", "lseek", "reads",
                                                   "writes"}


def test_without_polling(stack: StackFactory, mounts: Mounts) -> None:
    """-o poll_us=0: the server sleeps between requests and still answers every one."""
    mnt = mounts.unionfs(stack({f"d/f{i}": "x" for i in range(50)}), extra=["poll_us=0"])
    assert sorted(os.listdir(mnt / "d")) == sorted(f"f{i}" for i in range(50))
    (mnt / "d/new").write_text("n")
    assert (mnt / "d/new").read_text() == "n"


def test_second_listing_comes_from_the_kernel_cache(stack: StackFactory,
                                                    mounts: Mounts) -> None:
    st = stack({"d/a": "1", "d/b": "2"}, {"d/c": "3"})
    mnt = mounts.unionfs(st)
    assert sorted(os.listdir(mnt / "d")) == ["a", "b", "c"]
    served = requests(mnt, "readdir")
    assert served >= 1
    assert sorted(os.listdir(mnt / "d")) == ["a", "b", "c"]
    assert requests(mnt, "readdir") == served


def test_cached_listing_follows_changes(stack: StackFactory, mounts: Mounts) -> None:
    """Every change made through the mount shows in the next listing."""
    st = stack({"d/a": "1", "d/sub/x": "2", "e/": None}, {"d/b": "3"})
    mnt = mounts.unionfs(st)
    d = mnt / "d"

    def listing() -> list[str]:
        return sorted(os.listdir(d))

    assert listing() == ["a", "b", "sub"]
    (d / "new").write_text("n")
    assert listing() == ["a", "b", "new", "sub"]
    (d / "b").unlink()
    assert listing() == ["a", "new", "sub"]
    (d / "a").rename(d / "a2")
    assert listing() == ["a2", "new", "sub"]
    (d / "new").rename(mnt / "e" / "moved")
    assert listing() == ["a2", "sub"]
    assert sorted(os.listdir(mnt / "e")) == ["moved"]
    (d / "sub" / "x").unlink()
    (d / "sub").rmdir()
    os.mkdir(d / "sub")  # over the whiteout: an opaque, empty directory
    os.symlink("a2", d / "link")
    os.link(d / "a2", d / "hard")
    assert listing() == ["a2", "hard", "link", "sub"]
    assert os.listdir(d / "sub") == []


def test_acl_lookups_are_cached(stack: StackFactory, mounts: Mounts) -> None:
    """ls -l asks for the ACL of every file: the kernel asks the server once per file
    (here: none of them has one; the kernel caches that too, on the inode)."""
    mnt = mounts.unionfs(stack({f"f{i}": "x" for i in range(20)}))
    names = [mnt / f"f{i}" for i in range(20)]
    # Open files keep their inodes (and the ACLs cached on them) through a drop_caches.
    held = [os.open(name, os.O_RDONLY) for name in names]

    def ask_all() -> None:
        for name in names:
            with contextlib.suppress(OSError):
                os.getxattr(name, ACL_ACCESS)

    try:
        ask_all()
        served = requests(mnt, "getxattr")
        ask_all()
        assert requests(mnt, "getxattr") == served
    finally:
        for fd in held:
            os.close(fd)


def test_xattrs_known_absent_are_answered_at_once_and_stay_right(stack: StackFactory,
                                                                  mounts: Mounts) -> None:
    """ls -l asks security.selinux of every file each time: a file found to have no xattrs
    is answered on the fast path (still counted); one that gets an xattr through the union
    shows it at once, and one with xattrs shows them."""
    st = stack({"bare": "x", "labelled": "y"})
    os.setxattr(st.lowers[0] / "labelled", "user.kept", b"v")
    mnt = mounts.unionfs(st)
    for name in ("bare", "labelled"):
        with pytest.raises(OSError) as exc:
            os.getxattr(mnt / name, SELINUX)
        assert exc.value.errno == errno.ENODATA
    served = requests(mnt, "getxattr")
    for _ in range(3):
        for name in (SELINUX, "user.other"):
            with pytest.raises(OSError) as exc:
                os.getxattr(mnt / "bare", name)
            assert exc.value.errno == errno.ENODATA
    assert requests(mnt, "getxattr") == served + 6  # each reached the server, and counts
    assert os.getxattr(mnt / "labelled", "user.kept") == b"v"
    os.setxattr(mnt / "bare", "user.new", b"w")
    assert os.getxattr(mnt / "bare", "user.new") == b"w"
    assert os.listxattr(mnt / "bare") == ["user.new"]


def test_forgotten_inodes_are_freed(stack: StackFactory, mounts: Mounts) -> None:
    """Memory does not grow with files looked up once: when the kernel forgets them (here
    after drop_caches), the server drops their nodes and merged views."""
    spec: dict[str, object] = {f"d{i // 100}/f{i}": "x" for i in range(2000)}
    mnt = mounts.unionfs(stack(spec, {"d0/extra": "y"}))
    # Looked up one by one (a names-only walk would not hand the kernel any of them).
    looked_up = [os.lstat(os.path.join(root, name))
                 for root, _, files in os.walk(mnt) for name in files]
    assert len(looked_up) == 2001
    held = int(server_stats(mnt)["nodes"])
    assert held > 2000, server_stats(mnt)
    for _ in range(50):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        if int(server_stats(mnt)["nodes"]) < 100:
            break
        time.sleep(0.1)
    assert int(server_stats(mnt)["nodes"]) < 100, server_stats(mnt)
