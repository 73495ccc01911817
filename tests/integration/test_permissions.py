"""Permission checks by the kernel (default_permissions) for a caller that is not root."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounts, Stack
from tests.integration.conftest import run_as

StackFactory = Callable[..., Stack]
USER = 1000
ACL_ACCESS = "system.posix_acl_access"
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def acl(owner: int, group: int, other: int, users: dict[int, int]) -> bytes:
    """The xattr form of a POSIX access ACL (version 2): permissions as rwx bits."""
    entries = [(ACL_USER_OBJ, owner, NO_ID)]
    entries += [(ACL_USER, perm, uid) for uid, perm in sorted(users.items())]
    entries += [(ACL_GROUP_OBJ, group, NO_ID)]
    if users:
        entries.append((ACL_MASK, 0o7, NO_ID))
    entries.append((ACL_OTHER, other, NO_ID))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)

PROBE = """
import errno, os, sys
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
m = sys.argv[1] if len(sys.argv) > 1 else {mnt!r}
attempt("chmod_root", lambda: os.chmod(m + "/rootfile", 0o600))
attempt("chown_root", lambda: os.chown(m + "/rootfile", {user}, -1))
attempt("write_root", lambda: os.open(m + "/rootfile", os.O_WRONLY))
attempt("chmod_own", lambda: os.chmod(m + "/own", 0o600))
attempt("chown_own_to_other", lambda: os.chown(m + "/own", {user} + 1, -1))
attempt("chgrp_own_to_own_group", lambda: os.chown(m + "/own", -1, {user}))
attempt("chgrp_own_to_root", lambda: os.chown(m + "/own", -1, 0))
attempt("utime_root_explicit", lambda: os.utime(m + "/rootfile", (1, 1)))
attempt("create_in_own_dir", lambda: open(m + "/owndir/new", "w").close())
attempt("create_in_root_dir", lambda: open(m + "/new", "w").close())
attempt("unlink_root_sticky", lambda: os.unlink(m + "/sticky/rootfile"))
"""

EXPECTED = {
    "chmod_root": "EPERM", "chown_root": "EPERM", "write_root": "EACCES",
    "chmod_own": "ok", "chown_own_to_other": "EPERM", "chgrp_own_to_own_group": "ok",
    "chgrp_own_to_root": "EPERM", "utime_root_explicit": "EPERM",
    "create_in_own_dir": "ok", "create_in_root_dir": "EACCES", "unlink_root_sticky": "EPERM",
}


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="unionfs-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_non_owner_follows_posix(stack: StackFactory, mounts: Mounts, open_dir: Path) -> None:
    """chmod/chown/utime/write/create by uid 1000 get the errnos POSIX prescribes; what it
    may do lands in the upper with the right owner."""
    st = stack({"rootfile": "r", "own": "o", "owndir/": None, "sticky/rootfile": "s"})
    low = st.lowers[0]
    os.chmod(low, 0o755)
    os.chmod(low / "rootfile", 0o644)
    os.chown(low / "own", USER, USER)
    os.chown(low / "owndir", USER, USER)
    os.chmod(low / "sticky", 0o1777)
    mnt = open_dir / "mnt"
    mnt.mkdir()
    st = dataclasses.replace(st, mnt=mnt)
    mounts.unionfs(st, allow_other=True)
    res = run_as(USER, PROBE.format(mnt=str(mnt), user=USER))
    assert res.returncode == 0, res.stderr
    got = dict(line.split() for line in res.stdout.splitlines())
    assert got == EXPECTED
    up = st.upper
    assert (os.stat(up / "owndir/new").st_uid, os.stat(up / "owndir/new").st_gid) == (USER,
                                                                                       USER)
    assert os.stat(up / "own").st_mode & 0o777 == 0o600
    assert os.stat(low / "rootfile").st_mode & 0o777 == 0o644
    assert not os.path.lexists(up / "rootfile")


def test_lower_acl_grants_access(stack: StackFactory, mounts: Mounts, open_dir: Path) -> None:
    """The kernel checks POSIX ACLs of lower files (mode 0600 alone would refuse uid 4321)."""
    st = stack({"secret": "for 4321"})
    path = st.lowers[0] / "secret"
    os.chmod(path, 0o600)
    os.setxattr(path, ACL_ACCESS, acl(0o6, 0, 0, {4321: 0o4}))
    mnt = open_dir / "mnt"
    mnt.mkdir()
    mounts.unionfs(dataclasses.replace(st, mnt=mnt), allow_other=True)
    code = f"print(open({str(mnt / 'secret')!r}).read())"
    allowed = run_as(4321, code)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "for 4321"
    refused = run_as(4322, code)
    assert "Permission denied" in refused.stderr


def test_acl_set_through_the_mount_lands_in_upper(stack: StackFactory, mounts: Mounts,
                                                  open_dir: Path) -> None:
    st = stack({"f": "data"})
    os.chmod(st.lowers[0] / "f", 0o644)
    mnt = open_dir / "mnt"
    mnt.mkdir()
    mounts.unionfs(dataclasses.replace(st, mnt=mnt), allow_other=True)
    value = acl(0o6, 0o4, 0, {4321: 0o6})
    os.setxattr(mnt / "f", ACL_ACCESS, value)
    assert os.getxattr(mnt / "f", ACL_ACCESS) == value
    assert os.getxattr(st.upper / "f", ACL_ACCESS) == value
    assert ACL_ACCESS not in os.listxattr(st.lowers[0] / "f")
    done = run_as(4321, f"open({str(mnt / 'f')!r}, 'a').write('more')")
    assert done.returncode == 0, done.stderr
    assert (st.upper / "f").read_text() == "datamore"
