"""Rootless id maps: the user's subordinate ranges, written with newuidmap/newgidmap.

A rootless container's user namespace maps container 0 to the user and container 1..65536 to
the first 65536 ids of the user's range in /etc/subuid and /etc/subgid, as podman does. Only
the setuid helpers of Debian's ``uidmap`` may write such maps; without a range there is one id
(container 0 = the user) and a warning says what will not work.

The layer store of such a user keeps files *shifted*: on disk an image's file of container uid
1000 belongs to host uid ``start + 999``. Every command that writes or reads layers therefore
runs inside a user namespace with the same map (:func:`reexec_in_userns`, podman's
``unshare``), where the files show their container owners and chown works.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from unionfs.errors import UserError
from unionfs.runtime import linux
from unionfs.runtime.namespaces import IdMap

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
CONTAINER_RANGE = 65536  # ids 1..65536 come from the subordinate range (0 is the user)
IN_USERNS_ENV = "UNIONFS_IN_USERNS"  # set in a command re-executed in the user namespace
# Commands that run on the host as the user: they touch no layer files, or must signal and
# join namespaces of containers (which a sibling user namespace may not).
HOST_COMMANDS = frozenset({
    "mount", "umount", "unmount", "exec", "stop", "ps", "logs", "top", "stats", "demo",
    "images", "inspect", "tag", "run", "start", "restart", "rm",
    "pause", "unpause", "cp",  # cp enters a user namespace itself, where it needs one
})


@dataclass(frozen=True)
class Range:
    """One subordinate range: ``count`` ids from ``start``."""

    start: int
    count: int


def subordinate_range(path: str, user: str, uid: int) -> Range | None:
    """The first range of ``user`` (by name or number) in ``path``, or None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            return Range(start, count)
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class Maps:
    """A user namespace's maps; ``full`` when they come from subordinate ranges."""

    uid: list[IdMap]
    gid: list[IdMap]
    full: bool

    def args(self, which: str) -> list[str]:
        """newuidmap/newgidmap arguments (``inside outside count`` triples)."""
        out: list[str] = []
        for m in self.uid if which == "uid" else self.gid:
            out += [str(m.inside), str(m.outside), str(m.count)]
        return out


def rootless_maps(uid: int | None = None, gid: int | None = None) -> Maps:
    """The maps of a rootless user: 0 -> the user, 1..65536 -> its ranges (when it has both)."""
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    name = _user_name(uid)
    ur = subordinate_range(SUBUID, name, uid)
    gr = subordinate_range(SUBGID, name, uid)
    if ur is None or gr is None or shutil.which("newuidmap") is None:
        return Maps([IdMap(0, uid, 1)], [IdMap(0, gid, 1)], full=False)
    return Maps([IdMap(0, uid, 1), IdMap(1, ur.start, min(ur.count, CONTAINER_RANGE))],
                [IdMap(0, gid, 1), IdMap(1, gr.start, min(gr.count, CONTAINER_RANGE))],
                full=True)


def has_ranges() -> bool:
    """True for an unprivileged user whose namespaces get the full map."""
    return os.geteuid() != 0 and rootless_maps().full


def one_id_warning() -> str:
    """What a rootless user without subordinate ranges is told."""
    name = _user_name(os.geteuid())
    what = ("no subordinate ids for " + name + f" in {SUBUID} and {SUBGID}"
            if shutil.which("newuidmap") else "newuidmap/newgidmap (Debian's uidmap) missing")
    return (f"unionfs: warning: {what}: the container maps one id (root = you); other users, "
            "chown, su and apt-get will fail. Add a range: usermod --add-subuids "
            f"100000-165535 --add-subgids 100000-165535 {name}")


def write_maps(pid: int, maps: Maps) -> None:
    """Write the maps of ``pid`` (a process in a new user namespace) from outside it."""
    if maps.full:
        for which, tool in (("uid", "newuidmap"), ("gid", "newgidmap")):
            res = subprocess.run([tool, str(pid), *maps.args(which)], capture_output=True,
                                 text=True)
            if res.returncode != 0:
                msg = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
                raise UserError(f"cannot write the container's {which} map with {tool}: {msg}")
        return
    if os.geteuid() != 0:
        # An unprivileged gid_map needs setgroups disabled first.
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for which, lines in (("uid", maps.uid), ("gid", maps.gid)):
        with open(f"/proc/{pid}/{which}_map", "w") as f:
            f.write("".join(m.line() for m in lines))


def parse_map(text: str, flag: str) -> list[IdMap]:
    """``--uidmap``/``--gidmap``: ``inside:outside:count`` (repeatable)."""
    parts = text.split(":")
    try:
        inside, outside, count = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"invalid {flag} {text!r}: expected CONTAINER:HOST:COUNT") from None
    if inside < 0 or outside < 0 or count < 1:
        raise UserError(f"invalid {flag} {text!r}: ids must be >= 0 and the count >= 1")
    return [IdMap(inside, outside, count)]


def check_root_maps(maps: list[IdMap], flag: str) -> list[IdMap]:
    """Root's ``--uidmap``/``--gidmap`` must map container 0 to host 0: root's store is not
    shifted into a range, so a container root of another host id could not reach its own
    root tree (refused here in one line instead of a failed mount later)."""
    if maps and not any(m.inside == 0 and m.outside == 0 for m in maps):
        raise UserError(f"{flag}: container id 0 must map to host id 0 (e.g. {flag} 0:0:1 "
                        f"{flag} 1:100000:65536): root's store keeps the image's own owners, "
                        "not owners shifted into a range")
    return maps


# -- running code inside a user namespace with the rootless map -------------------------


def in_userns(body: Callable[[], object], *, mount_ns: bool = True) -> int:
    """Run ``body`` in a forked child inside a new user namespace (and mount namespace) with
    the rootless maps, as root there; its exit status."""
    maps = rootless_maps()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _child(body, ready_w, go_r, mount_ns)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) == b"U":
            write_maps(pid, maps)
            os.write(go_w, b"M")
    finally:
        os.close(ready_r)
        os.close(go_w)
    return _wait_forwarding(pid)


def _child(body: Callable[[], object], ready_w: int, go_r: int, mount_ns: bool) -> NoReturn:
    try:
        linux.unshare(linux.CLONE_NEWUSER)
        os.write(ready_w, b"U")
        if os.read(go_r, 1) != b"M":
            os._exit(125)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        with contextlib.suppress(OSError):
            os.setgroups([])
        if mount_ns:
            linux.unshare(linux.CLONE_NEWNS)
        body()
        os._exit(0)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except UserError as exc:
        print(f"unionfs: error: {exc}", file=sys.stderr)
        os._exit(exc.exit_code)
    except BaseException as exc:
        print(f"unionfs: error: in the user namespace: {exc}", file=sys.stderr)
        os._exit(125)


def _wait_forwarding(pid: int) -> int:
    """Wait for ``pid``, passing on TERM and HUP (INT/QUIT reach it from the terminal)."""
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda signum, _f: _forward(pid, signum)) for s in forwarded}
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for s, h in {**old, **ignored}.items():
            signal.signal(s, h)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def reexec_in_userns(command: str | None, argv: list[str],
                     server: int | None = None) -> int | None:
    """For a rootless user with ranges, run store command ``command`` again inside a user
    namespace with the rootless map (its exit status); None when it runs here as it is.

    With ``server`` (the unionfs server of a running rootless container) it joins that
    server's user and mount namespaces instead, where the container's root is mounted, so
    ``commit`` of a running container switches its upper live as it does for root.
    """
    if (command is None or command in HOST_COMMANDS or os.environ.get(IN_USERNS_ENV)
            or not has_ranges()):
        return None
    env = dict(os.environ, **{IN_USERNS_ENV: "1"})
    exe = [sys.executable, "-m", "unionfs", *argv]
    if server is not None:
        joined = ["nsenter", f"--target={server}", "--user", "--mount", "--", *exe]
        return subprocess.run(joined, env=env, check=False).returncode
    return in_userns(lambda: os.execve(sys.executable, exe, env))


def remove_tree(path: str) -> None:
    """``rm -rf`` a tree that holds files of other mapped owners (a rootless upper)."""
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        if not has_ranges() or os.environ.get(IN_USERNS_ENV):
            raise
    in_userns(lambda: shutil.rmtree(path, ignore_errors=True), mount_ns=False)
