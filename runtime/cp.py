"""``cp``: files between the host and a container, running or stopped, as docker's ``cp``.

``cp SRC CTR:DST``, ``cp CTR:SRC DST``; ``-`` is a tar stream on stdin (into a directory of
the container) or stdout. The two sides are two processes joined by a pipe that carries a
tar stream, as docker's are: the container's side works in a child that sees the container's
root as a directory fd, and the host's side in the command itself.

The container's paths are untrusted. Every one is resolved with ``openat2`` and
``RESOLVE_IN_ROOT`` (``..`` and absolute symlinks stay inside the container's root, no
``/proc`` magic links), and below that one directory fd the copy opens each entry with
``O_NOFOLLOW`` relative to its parent: nothing is followed out of the root, and an archive
entry is never written through a symlink. The child does no lookups by name (no NSS: the
container's libraries are never loaded) and imports nothing once it is inside.

Where the container's root comes from: a running container's is ``/proc/<pid 1>/root`` (its
union with its volumes; the child joins its user namespace first, so owners are the
container's and ``chown`` works); a stopped container's union is mounted for the copy in a
mount namespace of the child's own (rootless: in a user namespace with the container's map).
Writes go through the union, so its copy-up rules apply.

Owners as docker's: files copied in belong to the container's root, files copied out to the
caller; ``-a`` keeps the source's owners. A file whose owner so changes loses its setuid and
setgid bits (as ``chown`` clears them): a container's setuid-root file copied out by root
without ``-a`` is not a setuid-root file on the host. Device nodes are not copied (a
container may not make them); hard links are copied as separate files, and extended
attributes are not copied.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import stat
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from unionfs.errors import OperationFailed, UserError
from unionfs.runtime import idmap, linux, state
from unionfs.runtime.rootfs import mount_root, private_mounts

IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
BENEATH = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
_PATH_DIR = os.O_PATH | os.O_DIRECTORY
_CHUNK = 1 << 20


class CopyError(OperationFailed):
    """A copy that cannot be done (docker: exit status 1)."""


@dataclass
class Options:
    """What ``cp``'s flags ask: keep owners (``-a``), follow a symlink source (``-L``)."""

    archive: bool = False
    follow: bool = False


def split_arg(arg: str) -> tuple[str | None, str]:
    """``CTR:PATH`` as (container, path); a local path (absolute, or starting with ``.``,
    or without ``:``) as (None, path), as docker splits them."""
    if arg.startswith("/"):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep or name.startswith("."):
        return None, arg
    return name, path or "/"


def copy(store: Any, src: str, dst: str, options: Options) -> None:
    """``cp SRC DST``: one of the two names a container."""
    src_ctr, src_path = split_arg(src)
    dst_ctr, dst_path = split_arg(dst)
    if src_ctr and dst_ctr:
        raise UserError("copying between containers is not supported")
    if not src_ctr and not dst_ctr:
        raise UserError("must specify at least one container source")
    if dst_ctr:
        copy_in(state.get(store, dst_ctr), src_path, _in_container(dst_path), options)
    else:
        assert src_ctr is not None
        copy_out(state.get(store, src_ctr), _in_container(src_path), dst_path, options)


def _in_container(path: str) -> str:
    """A container path is relative to its root."""
    return path if path.startswith("/") else "/" + path


# -- the two directions ------------------------------------------------------------------


def copy_in(container: state.Container, src: str, dst: str, options: Options) -> None:
    """Host ``src`` (or a tar on stdin for ``-``) into the container at ``dst``."""
    _check_usable(container)
    if src == "-":
        child = in_container(container, lambda root: extract(
            0, root, dst, options, what=container.name, source=None))
        child.wait()
        return
    host = os.path.abspath(src)
    try:
        os.lstat(host)
    except OSError as exc:
        raise CopyError(f"lstat {host}: {exc.strerror}") from None
    r, w = os.pipe2(os.O_CLOEXEC)
    producer = _fork(lambda: _host_send(host, options, w), close=r)
    os.close(w)
    child = in_container(container, lambda root: extract(r, root, dst, options,
                                                         what=container.name, source=src))
    os.close(r)
    try:
        child.wait()
    finally:
        producer.wait()


def copy_out(container: state.Container, src: str, dst: str, options: Options) -> None:
    """The container's ``src`` to host ``dst`` (or a tar on stdout for ``-``)."""
    _check_usable(container)
    r, w = os.pipe2(os.O_CLOEXEC)
    child = in_container(container, lambda root: send(root, src, options, w,
                                                      what=container.name))
    os.close(w)
    try:
        if dst == "-":
            sys.stdout.flush()
            _pump(r, sys.stdout.buffer)
        else:
            root = os.open("/", _PATH_DIR | os.O_CLOEXEC)
            try:
                here = os.path.abspath(dst) + ("/" if dst.endswith("/") else "")
                extract(r, root, here, options, what="the host", source=src)
            finally:
                os.close(root)
    except BaseException:
        os.close(r)
        child.wait()  # its error (the source is missing) explains ours
        raise
    os.close(r)
    child.wait()


def _check_usable(container: state.Container) -> None:
    if container.broken:
        raise CopyError(f"container {container.id[:12]} is broken: {container.broken}")


def _pump(fd: int, out: IO[bytes]) -> None:
    while chunk := os.read(fd, _CHUNK):
        out.write(chunk)
    out.flush()


def _host_send(path: str, options: Options, fd: int) -> None:
    root = os.open("/", _PATH_DIR | os.O_CLOEXEC)
    send(root, path, options, fd, what="the host")


# -- child processes ----------------------------------------------------------------------


@dataclass
class Child:
    """A forked helper and the pipe its one-line error comes on."""

    pid: int
    err: int

    def wait(self) -> None:
        """Reap it; its error as :class:`CopyError`."""
        _, status = os.waitpid(self.pid, 0)
        chunks = []
        while chunk := os.read(self.err, 4096):
            chunks.append(chunk)
        os.close(self.err)
        message = b"".join(chunks).decode(errors="replace").strip()
        if message or status != 0:
            raise CopyError(message or f"the copy failed (status {status})")


def _fork(body: Callable[[], None], close: int | None = None) -> Child:
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        if close is not None:
            os.close(close)
        _guarded(err_w, body)
    os.close(err_w)
    return Child(pid, err_r)


def _guarded(err_w: int, body: Callable[[], None]) -> Any:
    """Run ``body`` in a child; a failure becomes one line on ``err_w``; never returns."""
    code = 0
    try:
        body()
    except UserError as exc:
        os.write(err_w, str(exc).encode())
        code = 1
    except OSError as exc:
        where = f": {os.fsdecode(exc.filename)}" if exc.filename else ""
        os.write(err_w, f"{exc.strerror or exc}{where}".encode())
        code = 1
    except BaseException as exc:  # never into the parent's code
        os.write(err_w, f"copy failed: {exc!r}".encode())
        code = 1
    os._exit(code)


def in_container(container: state.Container, body: Callable[[int], None]) -> Child:
    """Run ``body(root_fd)`` in a child that sees the container's root at ``root_fd``."""
    if container.running():
        return _fork(lambda: _enter_running(container, body))
    if os.geteuid() == 0:
        return _fork(lambda: _enter_stopped(container, body))
    # Rootless: in a user namespace with the container's map, where its owners are real.
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os._exit(idmap.in_userns(lambda: _guarded(err_w, lambda: _enter_stopped(container,
                                                                                 body))))
    os.close(err_w)
    return Child(pid, err_r)


def _enter_running(container: state.Container, body: Callable[[int], None]) -> None:
    """Open the root of PID 1, then join its user namespace (as its root)."""
    st = container.state()
    pid = int(st["pid"])
    root = os.open(f"/proc/{pid}/root", _PATH_DIR | os.O_CLOEXEC)
    userns = f"/proc/{pid}/ns/user"
    theirs = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
    if not state.pid_alive(pid, st.get("pid_start")):
        raise CopyError(f"container {container.name} stopped during the copy")
    if os.fstat(theirs).st_ino != os.stat("/proc/self/ns/user").st_ino:
        linux.setns(theirs, linux.CLONE_NEWUSER)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        with contextlib.suppress(OSError):
            os.setgroups([])
    os.close(theirs)
    body(root)


def _enter_stopped(container: state.Container, body: Callable[[int], None]) -> None:
    """Mount the container's union (image layers + upper) in a mount namespace of our own."""
    if os.geteuid() == 0:
        private_mounts()  # (rootless: in_userns made the mount namespace already)
    mountpoint = container.dir / f"cp-{os.getpid()}"
    mountpoint.mkdir(mode=0o700)
    try:
        mounted = mount_root(list(container.config["layer_dirs"]), container.upper,
                             container.work, mountpoint, allow_other=True,
                             log_file=container.dir / "unionfs.log")
        try:
            root = os.open(mountpoint, _PATH_DIR | os.O_CLOEXEC)
            try:
                body(root)
            finally:
                os.close(root)
        finally:
            mounted.release()
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


# -- the sending side: a tree as a tar stream ---------------------------------------------


def send(root: int, path: str, options: Options, fd: int, *, what: str) -> None:
    """Write ``path`` (resolved inside ``root``) to ``fd`` as a tar stream."""
    try:
        dir_fd, name, arcname = _open_source(root, path, options.follow)
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        raise CopyError(f"Could not find the file {path} in {_where(what)}") from None
    with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                   format=tarfile.PAX_FORMAT) as tar:
        _add(tar, dir_fd, name, arcname)


def _where(what: str) -> str:
    return what if what == "the host" else f"container {what}"


def _open_source(root: int, path: str, follow: bool) -> tuple[int, str, str]:
    """(directory fd, entry name in it, name in the archive) of the source ``path``.

    Symlinks on the way are followed inside the root; the last one only with ``follow``.
    """
    trimmed = path.rstrip("/") or "/"
    parent, name = posixpath.split(trimmed)
    if name in ("", ".", "..") or follow:
        fd = linux.openat2(root, trimmed, os.O_PATH, IN_ROOT)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return fd, ".", posixpath.basename(posixpath.normpath(trimmed)) or "."
        os.close(fd)
        if follow:  # the link's target, under the link's name
            parent, target = posixpath.split(_resolved_name(root, trimmed))
            return linux.openat2(root, parent, _PATH_DIR, IN_ROOT), target, name
    return linux.openat2(root, parent or "/", _PATH_DIR, IN_ROOT), name, name


def _resolved_name(root: int, path: str, depth: int = 0) -> str:
    """``path`` with every symlink resolved inside ``root`` (for ``-L``)."""
    if depth > 40:
        raise CopyError(f"too many levels of symbolic links: {path}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done = "/"
    for i, part in enumerate(parts):
        if part == "..":
            done = posixpath.dirname(done)
            continue
        here = posixpath.join(done, part)
        parent = linux.openat2(root, done, _PATH_DIR, IN_ROOT)
        try:
            st = os.stat(part, dir_fd=parent, follow_symlinks=False)
            link = os.readlink(part, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        finally:
            os.close(parent)
        if link is not None:
            rest = "/".join(parts[i + 1:])
            base = link if link.startswith("/") else posixpath.join(done, link)
            return _resolved_name(root, posixpath.join(base, rest), depth + 1)
        done = here
    return done


def _add(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str) -> None:
    """One entry (and, for a directory, everything below it), never following a link."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    info = _info(arcname, st)
    if stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode):
                return  # replaced meanwhile
            info.size = now.st_size
            tar.addfile(info, f)
    elif stat.S_ISDIR(st.st_mode):
        tar.addfile(info)
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=dir_fd)
        try:
            for child in sorted(os.listdir(sub)):
                _add(tar, sub, child, f"{arcname}/{child}")
        finally:
            os.close(sub)
    elif stat.S_ISLNK(st.st_mode):
        info.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISFIFO(st.st_mode):
        tar.addfile(info)
    # device nodes and sockets are not copied


def _info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    kinds = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFLNK: tarfile.SYMTYPE,
             stat.S_IFIFO: tarfile.FIFOTYPE}
    info.type = kinds.get(stat.S_IFMT(st.st_mode), tarfile.REGTYPE)
    return info


# -- the receiving side: a tar stream into a directory ------------------------------------


def extract(fd: int, root: int, dst: str, options: Options, *, what: str,
            source: str | None) -> None:
    """Unpack the tar stream on ``fd`` at ``dst`` (resolved inside ``root``), as docker's
    rules say where: into an existing directory, as a new name, or over a file.

    ``source`` is the path the stream was made of (``x/.``: its contents, not itself); None
    for a tar given on stdin, which is unpacked as it is into the directory ``dst``.
    """
    with os.fdopen(fd, "rb", closefd=False) as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                _unpack(tar, root, dst, options, what, source)
        except tarfile.ReadError:
            if source is None:
                raise CopyError("the input is not a valid tar archive") from None
            # else the sender failed (and says why)


def _unpack(tar: tarfile.TarFile, root: int, dst: str, options: Options, what: str,
            source: str | None) -> None:
    first = tar.next()
    if first is None:
        return
    content_only = source is not None and first.isdir() and (
        source.endswith("/.") or source == ".")
    target, rename = _place(root, dst, first, source is None, content_only, what)
    writer = Writer(target, options.archive)
    try:
        member: tarfile.TarInfo | None = first
        while member is not None:
            rel = rename(member.name)
            if rel is not None:
                writer.add(tar, member, rel, rename)
            member = tar.next()
        writer.finish()
    finally:
        os.close(target)


def _clean(name: str) -> str:
    """An archive name as a relative path; an error for ``..``."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CopyError(f"invalid path in the archive: {name}")
    return "/".join(parts)


Rename = Callable[[str], str | None]


def _place(root: int, dst: str, first: tarfile.TarInfo, from_stream: bool,
           content_only: bool, what: str) -> tuple[int, Rename]:
    """The directory fd the entries go below, and each entry's name there."""
    trimmed = dst.rstrip("/") or "/"
    existing = _stat_in(root, trimmed)
    if from_stream:
        if existing is None or not stat.S_ISDIR(existing[1].st_mode):
            _close(existing)
            raise CopyError(f"extraction point {dst} in {_where(what)} is not a directory")
        return existing[0], lambda name: _clean(name) or None
    top = _clean(first.name)
    if existing is not None and stat.S_ISDIR(existing[1].st_mode):
        if content_only or top == "":
            return existing[0], _relative_to(top, None)
        return existing[0], _relative_to(top, posixpath.basename(top))
    _close(existing)
    if existing is not None and first.isdir():
        raise CopyError(f"cannot copy a directory to a file: {dst}")
    if existing is None and dst.endswith("/") and not first.isdir():
        raise CopyError(f"no such directory: {dst} in {_where(what)}")
    parent, name = posixpath.split(trimmed)
    if name in ("", ".", ".."):
        raise CopyError(f"invalid destination: {dst}")
    try:
        target = linux.openat2(root, parent or "/", _PATH_DIR, IN_ROOT)
    except (FileNotFoundError, NotADirectoryError):
        raise CopyError(f"no such directory: {parent} in {_where(what)}") from None
    return target, _relative_to(top, name)


def _stat_in(root: int, path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = linux.openat2(root, path, os.O_PATH, IN_ROOT)
    except FileNotFoundError:
        return None
    return fd, os.fstat(fd)


def _close(found: tuple[int, os.stat_result] | None) -> None:
    if found is not None:
        os.close(found[0])


def _relative_to(top: str, new_top: str | None) -> Rename:
    """Entry names below ``top`` renamed below ``new_top`` (None: the top's contents go
    into the target itself)."""
    def rename(name: str) -> str | None:
        clean = _clean(name)
        if clean == top:
            rest = ""
        elif top == "" or clean.startswith(top + "/"):
            rest = clean[len(top) + 1:] if top else clean
        else:
            raise CopyError(f"invalid copy source content: {name}")
        if new_top is None:
            return rest or None
        return f"{new_top}/{rest}" if rest else new_top
    return rename


class Writer:
    """Entries created below one directory fd, each opened beneath it without following
    a symlink; directories' modes and times are set last, deepest first."""

    def __init__(self, target: int, keep_owner: bool) -> None:
        self.target = target
        self.keep_owner = keep_owner
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def _parent(self, rel: str) -> tuple[int, str]:
        parent, name = posixpath.split(rel)
        return linux.openat2(self.target, parent or ".", _PATH_DIR, BENEATH), name

    def add(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, rename: Rename) -> None:
        if m.ischr() or m.isblk():
            print(f"unionfs: warning: device node {m.name} is not copied", file=sys.stderr)
            return
        pfd, name = self._parent(rel)
        try:
            self._make(tar, m, pfd, name, rename)
        finally:
            os.close(pfd)
        if m.isdir():
            self.dirs.append((rel, m))

    def _make(self, tar: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, name: str,
              rename: Rename) -> None:
        if m.isdir():
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=pfd)
                    os.mkdir(name, 0o700, dir_fd=pfd)
            return
        _remove_non_dir(pfd, name)
        if m.isreg():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                source = tar.extractfile(m)
                assert source is not None
                while chunk := source.read(_CHUNK):
                    _write_all(fd, chunk)
                self._attrs(fd, m)
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, name, dir_fd=pfd)
            self._owner(lambda uid, gid: os.chown(name, uid, gid, dir_fd=pfd,
                                                  follow_symlinks=False), m)
            os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            linked = rename(m.linkname)
            if linked is None:
                raise CopyError(f"invalid hard link in the archive: {m.name}")
            lfd, lname = self._parent(linked)
            try:
                os.link(lname, name, src_dir_fd=lfd, dst_dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(lfd)
        elif m.isfifo():
            os.mkfifo(name, m.mode & 0o777, dir_fd=pfd)

    def _owner(self, chown: Callable[[int, int], None], m: tarfile.TarInfo) -> None:
        if not self.keep_owner:
            return
        try:
            chown(m.uid, m.gid)
        except PermissionError:
            if os.geteuid() == 0:
                raise  # an unprivileged caller keeps its own ids, as a user's cp -a does
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: an id the user namespace does not map
                raise

    def _attrs(self, fd: int, m: tarfile.TarInfo) -> None:
        self._owner(lambda uid, gid: os.fchown(fd, uid, gid), m)
        # A file that changes owner loses setuid/setgid, as chown does: only -a keeps them.
        keep = 0o7777 if self.keep_owner or m.isdir() else 0o1777
        os.fchmod(fd, m.mode & keep)
        os.utime(fd, (m.mtime, m.mtime))

    def finish(self) -> None:
        """Modes, owners and times of the directories, deepest first."""
        for rel, m in reversed(self.dirs):
            fd = linux.openat2(self.target, rel, os.O_RDONLY | os.O_DIRECTORY, BENEATH)
            try:
                self._attrs(fd, m)
            finally:
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _remove_non_dir(pfd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise CopyError(f"cannot overwrite directory {name} with non-directory")
    os.unlink(name, dir_fd=pfd)


# -- the command --------------------------------------------------------------------------


def register(sub: Any, parser: Callable[..., argparse.ArgumentParser]) -> None:
    p = parser(sub, "cp", "copy files between a container and the host (- is a tar stream)")
    p.add_argument("-a", "--archive", action="store_true", help="keep the source's owners")
    p.add_argument("-L", "--follow-link", action="store_true",
                   help="follow a symlink given as the source")
    p.add_argument("source", metavar="SRC", help="CONTAINER:PATH, a host path or -")
    p.add_argument("dest", metavar="DEST", help="CONTAINER:PATH, a host path or -")
    p.set_defaults(func=cmd_cp)


def cmd_cp(args: argparse.Namespace) -> int:
    from unionfs.store import Store

    store = Store.open(getattr(args, "store", None))
    copy(store, args.source, args.dest, Options(archive=args.archive,
                                                follow=args.follow_link))
    return 0
