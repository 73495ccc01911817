"""Containers on disk: ``<store.root>/containers/<id>/`` holds ``config.json`` (what to run),
``state.json`` (pid, status, exit code), ``container.log``, the ``rootfs`` mount point and the
files bound onto /etc (hostname, hosts, resolv.conf).

The store's CLI calls :func:`container_upper` and :func:`container_info` when the argument of
``unionfs commit`` or ``unionfs inspect`` is a container, and :func:`image_user` (``rmi``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unionfs.errors import NotFound, UserError
from unionfs.runtime.spec import Spec

# A directory where removed containers leave their unionfs server log (``<id>.unionfs.log``),
# for debugging and for the tests' check that no server logged an unexpected failure.
KEEP_SERVER_LOGS_ENV = "UNIONFS_KEEP_SERVER_LOGS"

_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen")
_NOUNS = ("babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "kepler",
          "lovelace", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak")


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Container:
    """One container's directory and its two JSON files.

    ``broken`` says why ``config.json`` could not be read (None for a healthy container): a
    broken entry is still listed and can be removed, its processes and mount ended.
    """

    dir: Path
    config: dict[str, Any]
    broken: str | None = None

    @property
    def id(self) -> str:
        return str(self.config["id"])

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def spec(self) -> Spec:
        return Spec.from_dict(self.config["spec"])

    @property
    def upper(self) -> Path | None:
        return Path(self.config["upper"]) if self.config.get("upper") else None

    @property
    def work(self) -> Path | None:
        return Path(self.config["work"]) if self.config.get("work") else None

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def log_path(self) -> Path:
        return self.dir / "container.log"

    def state(self) -> dict[str, Any]:
        """The saved state; a "running" container whose supervisor is gone is recorded, the
        first time it is seen, as exited with status 255 and an error."""
        data = self._read_state()
        if data.get("status") == "running" and not pid_alive(data.get("supervisor"),
                                                             data.get("supervisor_start")):
            # Its supervisor was killed: PID 1 died with it (its parent-death signal).
            ended = {"status": "exited", "finished_at": now_iso(),
                     "exit_code": data.get("exit_code") or 255,
                     "error": "the container's supervisor was killed"}
            try:
                data = self.write_state(**ended)
            except OSError:  # removed meanwhile, or not ours to write
                data.update(ended)
        return data

    def _read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / "state.json").read_text())
        except FileNotFoundError:
            data = {"status": "created"}
        except (OSError, json.JSONDecodeError):
            data = {"status": "created", "error": "state.json is unreadable"}
        return data

    def write_state(self, **changes: Any) -> dict[str, Any]:
        """Update state.json atomically with ``changes``."""
        with self.locked():
            data = self._read_state()
            data.update(changes)
            write_json(self.dir / "state.json", data)
        return data

    def running(self) -> bool:
        """True while the container's PID 1 is alive."""
        st = self.state()
        return st.get("status") == "running" and pid_alive(st.get("pid"), st.get("pid_start"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """This container's lock (state updates, start, remove)."""
        with open(self.dir / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` by ``data`` atomically: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def containers_dir(store: Any) -> Path:
    """Where containers live in a store (reachable only by the store's owner)."""
    path = Path(store.root) / "containers"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def all_containers(store: Any) -> list[Container]:
    """Every container, oldest first; broken entries (unreadable config) are included."""
    found = []
    for d in containers_dir(store).iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue  # the store lock, a container being created
        try:
            found.append(Container(d, json.loads((d / "config.json").read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            found.append(_broken(d, exc))
    return sorted(found, key=lambda c: str(c.config.get("created", "")))


def _broken(d: Path, exc: Exception) -> Container:
    """A container whose config.json is missing or damaged: its id, and what it ran if known."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    created = datetime.fromtimestamp(d.stat().st_mtime, UTC).isoformat(timespec="seconds")
    config: dict[str, Any] = {
        "id": d.name, "name": d.name[:12], "created": created, "image": "<unknown>",
        "image_id": "", "layer_dirs": [], "spec": {"image": "<unknown>"}, "upper": None,
        "work": None,
    }
    upper_root = d.parent.parent / "uppers" / "container" / d.name
    if upper_root.is_dir():
        config["upper"] = str(upper_root / "upper")
    return Container(d, config, broken=f"config.json: {why}")


def find(store: Any, ref: str) -> Container | None:
    """The container called ``ref``, or with this (abbreviated) id."""
    containers = all_containers(store)
    for c in containers:
        if ref in (c.name, c.id):
            return c
    matches = [c for c in containers if len(ref) >= 3 and c.id.startswith(ref)]
    if len(matches) > 1:
        raise UserError(f"multiple containers match {ref}")
    return matches[0] if matches else None


def get(store: Any, ref: str) -> Container:
    """Like :func:`find`, but a one-line error when there is no such container."""
    c = find(store, ref)
    if c is None:
        raise NotFound(f"No such container: {ref}")
    return c


@contextlib.contextmanager
def store_lock(store: Any) -> Iterator[None]:
    with open(containers_dir(store) / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def create(store: Any, spec: Spec, image: Any) -> Container:
    """Record a new container (name checked unique under the lock) and make its upper."""
    cid = secrets.token_hex(32)
    with store_lock(store):
        names = {c.name for c in all_containers(store)}
        if spec.name and spec.name in names:
            raise UserError(f'Conflict. The container name "/{spec.name}" is already in use')
        if not spec.name:
            spec.name = _random_name(names)
        upper = work = None
        if not spec.read_only:
            upper, work = store.new_upper("container", cid, image=image)
        spec.hostname = spec.hostname or cid[:12]
        config = {
            "id": cid, "name": spec.name, "spec": spec.to_dict(),
            "created": datetime.now(UTC).isoformat(timespec="microseconds"),  # ps's order
            "image": spec.image, "image_id": image.id,
            "layer_dirs": [str(p) for p in image.layer_dirs],
            "upper": str(upper) if upper else None, "work": str(work) if work else None,
        }
        # Made complete under a hidden name, then renamed: never seen half-written.
        staging = containers_dir(store) / f".new-{cid}"
        staging.mkdir(mode=0o700)
        write_json(staging / "config.json", config)
        write_json(staging / "state.json", {"status": "created"})
        d = containers_dir(store) / cid
        staging.rename(d)
    return Container(d, config)


def write_config(container: Container) -> None:
    """Save a changed ``container.config`` (e.g. a new name) atomically."""
    write_json(container.dir / "config.json", container.config)


def _random_name(taken: set[str]) -> str:
    while True:
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if name not in taken:
            return name
        name = f"{name}{secrets.randbelow(100)}"
        if name not in taken:
            return name


def delete(container: Container) -> None:
    """Remove the container's directory and its upper (the container must have ended)."""
    from unionfs.runtime.idmap import remove_tree

    upper_root = container.upper.parent if container.upper else None
    keep = os.environ.get(KEEP_SERVER_LOGS_ENV)
    if keep:
        with contextlib.suppress(OSError):
            shutil.move(container.dir / "unionfs.log", Path(keep) / f"{container.id}.unionfs.log")
    shutil.rmtree(container.dir, ignore_errors=True)
    if upper_root is not None:
        with contextlib.suppress(OSError):
            remove_tree(str(upper_root))  # a rootless upper holds files of mapped owners


def pid_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks (``/proc/<pid>/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[19])


def pid_alive(pid: int | None, start: int | None) -> bool:
    """True when ``pid`` runs and is the same process as when ``start`` was recorded."""
    if not pid:
        return False
    now = pid_start_time(pid)
    if now is None:
        return False
    if _is_zombie(pid):
        return False
    return start is None or now == start


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def wait_gone(pid: int | None, start: int | None, timeout: float) -> bool:
    """Wait until the process has ended; False on timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- for the store's CLI ----------------------------------------------------------------


def container_upper(store: Any, name: str) -> Path | None:
    """The upper directory of container ``name`` (None: no such container, or read-only)."""
    c = find(store, name)
    return c.upper if c else None


def container_info(store: Any, name: str) -> dict[str, Any] | None:
    """``inspect`` data for container ``name``, or None when there is no such container."""
    c = find(store, name)
    if c is None:
        return None
    st = c.state()
    running = st.get("status") == "running"
    paused = running and _frozen(st)
    return {
        "Id": c.id, "Name": c.name, "Created": c.config["created"],
        "Image": c.config["image"], "ImageId": c.config["image_id"],
        "Config": {**c.config["spec"], "Labels": container_labels(store, c)},
        "State": {
            "Status": "paused" if paused else st.get("status"), "Running": running,
            "Paused": paused,
            "Pid": st.get("pid") if running else 0, "ExitCode": st.get("exit_code", 0),
            "OOMKilled": bool(st.get("oom_killed")), "StartedAt": st.get("started_at"),
            "FinishedAt": st.get("finished_at"), "Error": st.get("error") or c.broken or "",
        },
        "Cgroup": st.get("cgroup") if running else None,
        "NetworkSettings": _network_settings(c.spec.network, c.spec.ports,
                                             st.get("network") if running else None),
        "Upper": c.config.get("upper"), "LowerDirs": c.config["layer_dirs"],
        "RootFs": str(c.rootfs), "LogPath": str(c.log_path),
    }


def _frozen(st: dict[str, Any]) -> bool:
    """True when the container's cgroup is frozen (``pause``)."""
    from unionfs.runtime import cgroups

    return bool(st.get("cgroup")) and cgroups.load(st["cgroup"]).frozen()


def container_labels(store: Any, c: Container) -> dict[str, str]:
    """The labels of the container's image (docker shows them in the container's Config)."""
    try:
        config = store.image(c.config["image_id"]).config
    except (UserError, KeyError):
        return {}  # the image was removed meanwhile
    labels = (config.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _network_settings(mode: str, ports: list[Any], net: dict[str, Any] | None
                      ) -> dict[str, Any]:
    """``inspect``'s NetworkSettings: the mode, the address and gateway, the ports."""
    published: dict[str, list[dict[str, str]]] = {}
    for p in ports:
        published.setdefault(f"{p.container_port}/{p.proto}", []).append(
            {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)})
    net = net or {}
    return {"Mode": mode, "IPAddress": net.get("address", ""),
            "Gateway": net.get("gateway", ""), "Ports": published}


def enter_container_mounts(store: Any, name: str) -> None:
    """Join the mount namespace that holds running container ``name``'s root mount.

    A root-run container's union is mounted in a namespace of its own, never in the host's
    (so it is not copied into namespaces made later); ``commit`` of a running container joins
    it to reach the live mount. Nothing happens when there is no such namespace.
    """
    from unionfs.runtime import linux

    c = find(store, name)
    if c is None or not c.running():
        return
    st = c.state()
    server = st.get("server")
    if not st.get("private_mounts") or not pid_alive(server, st.get("server_start")):
        return
    fd = os.open(f"/proc/{server}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWNS)
    finally:
        os.close(fd)


def container_lowers(store: Any, name: str) -> list[str] | None:
    """The image layer directories (top first) container ``name`` runs on."""
    c = find(store, name)
    return list(c.config["layer_dirs"]) if c else None


def image_user(store: Any, image: Any) -> str | None:
    """For ``rmi``: a container using ``image``, as ``container <name>``, or None."""
    for c in all_containers(store):
        if c.config.get("image_id") == image.id:
            return f"container {c.name} ({c.id[:12]})"
    return None


def running_server(store_root: str, container: str) -> int | None:
    """The unionfs server pid of running rootless container ``container``, if any."""
    class _Store:
        root = store_root

    try:
        c = find(_Store(), container)
    except UserError:
        return None
    if c is None or not c.running():
        return None
    st = c.state()
    server = st.get("server")
    return int(server) if server and pid_alive(server, st.get("server_start")) else None
