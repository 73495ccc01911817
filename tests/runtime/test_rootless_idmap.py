"""Rootless with the whole subordinate range: owners kept end to end, and published ports.

A user of this module's own (``IDMAP_UID``, not the shared ROOTLESS_UID) gets a range in
/etc/subuid and /etc/subgid: copies of the host's files with one more line, bind-mounted in
the test's private mount namespace, so the host's files are never changed. The image has
files of uid 0, 1000 and 65534 and a setgid directory, made by root and imported rootless.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CLI, build_busybox_rootfs, process_leftovers, server_log_problems
from .test_rootless import Rootless

IDMAP_UID = 4317
SUB_START = 3_300_000
SUB_COUNT = 65536
NAME = "ufidmap"
STAT = 'stat -c "%u:%g %a %n"'


def owners_tree(root: Path) -> Path:
    """busybox plus files of 1000 and 65534, a setgid directory of group 1000 and a setuid
    file."""
    build_busybox_rootfs(root)
    (root / "home/user/f").write_text("user's\n")
    os.chown(root / "home/user", 1000, 1000)
    os.chown(root / "home/user/f", 1000, 1000)
    (root / "nobody").mkdir()
    (root / "nobody/f").write_text("nobody's\n")
    os.chown(root / "nobody/f", 65534, 65534)
    (root / "shared").mkdir()
    os.chown(root / "shared", 0, 1000)
    os.chmod(root / "shared", 0o2775)
    (root / "suid").write_text("#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)
    return root


def tar_tree(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for path in sorted(src.iterdir()):
            tar.add(path, arcname=path.name)
    os.chmod(out, 0o644)
    return out


@pytest.fixture(scope="module")
def ranged() -> Iterator[Rootless]:
    base = Path(tempfile.mkdtemp(prefix="unionfs-idmap-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        (base / "passwd").write_text(Path("/etc/passwd").read_text()
                                     + f"{NAME}:x:{IDMAP_UID}:{IDMAP_UID}::{base}:/bin/sh\n")
        for name in ("subuid", "subgid"):
            host = Path(f"/etc/{name}")
            text = host.read_text() if host.exists() else ""
            (base / name).write_text(text + f"{NAME}:{SUB_START}:{SUB_COUNT}\n")
        for node, dev in (("fuse", os.makedev(10, 229)), ("tun", os.makedev(10, 200))):
            os.mknod(base / node, 0o20666, dev)
            os.chmod(base / node, 0o666)
        tar_tree(owners_tree(base / "owners"), base / "owners.tar")
        for mine in ("store", "out"):
            (base / mine).mkdir()
            os.chown(base / mine, IDMAP_UID, IDMAP_UID)
        runner = Rootless(base, IDMAP_UID)
        res = runner("$UF import owners.tar -t owners")
        assert res.returncode == 0, res.stderr
        yield runner
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(autouse=True)
def nothing_left(ranged: Rootless) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    while (left := process_leftovers(str(ranged.base))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"rootless processes left: {left}"
    problems = server_log_problems(ranged.base / "store" / "containers", ranged.kept_logs)
    assert not problems, "a container's unionfs server logged:\n" + "\n".join(problems)
    # rm and --rm removed every upper, though they hold files of other mapped owners.
    uppers = ranged.base / "store/uppers/container"
    assert not uppers.exists() or not list(uppers.iterdir())


def ok(runner: Rootless, script: str, timeout: float = 120) -> list[str]:
    res = runner(script, timeout=timeout)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr
    return res.stdout.splitlines()


def test_container_maps_the_range_and_sees_the_image_owners(ranged: Rootless) -> None:
    out = ok(ranged, "$UF run --rm --network none owners sh -c 'cat /proc/self/uid_map "
                     f"/proc/self/gid_map; {STAT} /home/user/f /nobody/f /shared /etc/passwd "
                     "/suid'")
    assert [ln.split() for ln in out[:4]] == [
        ["0", str(IDMAP_UID), "1"], ["1", str(SUB_START), str(SUB_COUNT)],
        ["0", str(IDMAP_UID), "1"], ["1", str(SUB_START), str(SUB_COUNT)]]
    assert out[4:] == ["1000:1000 644 /home/user/f", "65534:65534 644 /nobody/f",
                       "0:1000 2775 /shared", "0:0 644 /etc/passwd", "0:0 4755 /suid"]
    # On disk the store keeps them shifted into the range (podman's rootless storage).
    layer_file = next((ranged.base / "store/layers/sha256").glob("*/fs/home/user/f"))
    st = os.stat(layer_file)
    assert (st.st_uid, st.st_gid) == (SUB_START + 999, SUB_START + 999)


def test_other_users_and_chown_work(ranged: Rootless) -> None:
    out = ok(ranged, "$UF run --rm --network none -u 1000 owners sh -c 'id -u; id -G; "
                     "echo mine > /home/user/mine; stat -c %u:%g /home/user/mine' && "
                     "$UF run --rm --network none owners sh -c 'chown 1234:4321 /etc/motd && "
                     "touch /shared/new && stat -c %u:%g /etc/motd /shared/new && "
                     "su -s /bin/sh user -c \"id -u\"'")
    assert out == ["1000", "1000", "1000:1000", "1234:4321", "0:1000", "1000"]


def _layer_owners(archive: Path) -> dict[str, tuple[int, int]]:
    """Owners of every entry of every layer of an OCI archive, top layer last."""
    owners: dict[str, tuple[int, int]] = {}
    with tarfile.open(archive) as outer:
        blobs = {m.name: m for m in outer.getmembers() if m.isfile()}
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].replace(":", "/")
        manifest = json.load(outer.extractfile(blobs[f"blobs/{digest}"]))  # type: ignore[arg-type]
        for layer in manifest["layers"]:
            f = outer.extractfile(blobs["blobs/" + layer["digest"].replace(":", "/")])
            with tarfile.open(fileobj=f) as inner:
                for m in inner.getmembers():
                    owners[m.name.rstrip("/")] = (m.uid, m.gid)
    return owners


def test_commit_and_save_write_container_ids_and_root_loads_them(
        ranged: Rootless, cli: CLI, tmp_path: Path) -> None:
    ok(ranged, "$UF run --name ch --network none owners sh -c 'chown 1234:4321 /etc/motd && "
               "touch /shared/new' && $UF commit ch changed && $UF rm ch && "
               "$UF save changed -o out/changed.tar")
    owners = _layer_owners(ranged.base / "out/changed.tar")
    assert owners["etc/motd"] == (1234, 4321)
    assert owners["home/user/f"] == (1000, 1000)
    assert owners["nobody/f"] == (65534, 65534)
    assert owners["shared/new"] == (0, 1000)
    assert all(uid < SUB_START and uid != IDMAP_UID for uid, _ in owners.values())
    root = CLI(tmp_path / "store", dict(cli.env, UNIONFS_STORE=str(tmp_path / "store")))
    root.ok("load", "-i", str(ranged.base / "out/changed.tar"), "-t", "changed")
    out = root.ok("run", "--rm", "--network", "none", "changed", "sh", "-c",
                  f"{STAT} /etc/motd /home/user/f /nobody/f /shared/new /suid")
    assert out.splitlines() == ["1234:4321 644 /etc/motd", "1000:1000 644 /home/user/f",
                                "65534:65534 644 /nobody/f", "0:1000 644 /shared/new",
                                "0:0 4755 /suid"]  # the setuid bit survives, too


def test_commit_of_a_running_rootless_container(ranged: Rootless) -> None:
    out = ok(ranged,
             "$UF run -d --name live --network none owners sh -c 'echo live > /root/state && "
             "chown 1000:1000 /root/state && exec sleep 600' >/dev/null && n=0 && "
             "until $UF exec live test -e /root/state || [ $n -gt 100 ]; do n=$((n+1)); "
             "sleep 0.1; done && $UF commit live liveimg >/dev/null && "
             "$UF exec live cat /root/state && $UF stop -t 1 live >/dev/null && "
             "$UF rm live >/dev/null && "
             "$UF run --rm --network none liveimg stat -c %u:%g /root/state")
    assert out == ["live", "1000:1000"]


def test_an_image_saved_by_root_keeps_its_owners_rootless(
        ranged: Rootless, cli: CLI, tmp_path: Path) -> None:
    root = CLI(tmp_path / "store", dict(cli.env, UNIONFS_STORE=str(tmp_path / "store")))
    root.ok("import", str(ranged.base / "owners.tar"), "-t", "rootmade")
    root.ok("save", "rootmade", "-o", str(ranged.base / "rootmade.tar"))
    os.chmod(ranged.base / "rootmade.tar", 0o644)
    out = ok(ranged, "$UF load -i rootmade.tar -t rootmade >/dev/null && "
                     f"$UF run --rm --network none rootmade {STAT} /home/user/f /nobody/f "
                     "/shared")
    assert out == ["1000:1000 644 /home/user/f", "65534:65534 644 /nobody/f",
                   "0:1000 2775 /shared"]


def test_a_pulled_image_keeps_its_owners_rootless(
        ranged: Rootless, cli: CLI, tmp_path: Path) -> None:
    from tests.store.registry_server import run_registry

    env = dict(cli.env, UNIONFS_STORE=str(tmp_path / "store"), UNIONFS_REGISTRY_LOOPBACK_ONLY="1")
    root = CLI(tmp_path / "store", env)
    root.ok("import", str(ranged.base / "owners.tar"), "-t", "pushed")
    with run_registry(tmp_path / "registry") as registry:
        ref = f"{registry.host}/test/owners:1"
        root.ok("push", "-q", "pushed", ref)
        out = ok(ranged, f"UNIONFS_REGISTRY_LOOPBACK_ONLY=1 $UF pull -q {ref} >/dev/null && "
                         f"$UF run --rm --network none {ref} {STAT} /home/user/f /nobody/f "
                         "/shared /suid")
    assert out == ["1000:1000 644 /home/user/f", "65534:65534 644 /nobody/f",
                   "0:1000 2775 /shared", "0:0 4755 /suid"]


def test_device_nodes_are_left_out_and_named(ranged: Rootless) -> None:
    with tarfile.open(ranged.base / "out/devices.tar", "w") as tar:
        for name, kind in (("dev", tarfile.DIRTYPE), ("dev/null", tarfile.CHRTYPE),
                           ("dev/zero", tarfile.CHRTYPE), ("fifo", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.devmajor, info.devminor = kind, 0o666, 1, 3
            tar.addfile(info)
    res = ranged("$UF import out/devices.tar -t devices")
    assert res.returncode == 0, res.stderr
    assert "2 device node(s) not kept" in res.stderr and "dev/null, dev/zero" in res.stderr
    layer = next(p.parent for p in (ranged.base / "store/layers/sha256").glob("*/fs/fifo"))
    assert stat.S_ISFIFO(os.lstat(layer / "fifo").st_mode)  # a fifo is kept
    assert (layer / "dev").is_dir() and not os.listdir(layer / "dev")


# -- networks -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, timeout: float = 20.0) -> str:
    """GET ``url``, retrying until the server answers (it starts in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on the host's loopback; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


HTTPD = ("sh -c 'mkdir -p /www && echo {text} > /www/index.html && "
         "exec httpd -f -p 80 -h /www'")


def pasta_processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and _comm(p) == "pasta" and os.path.exists(f"/proc/{p}")]


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_rootless_published_port_and_outbound(ranged: Rootless, host_server: int) -> None:
    port = free_port()
    before = set(pasta_processes())
    ok(ranged, f"$UF run -d --name web -p 127.0.0.1:{port}:80 owners "
               + HTTPD.format(text="rootless-site") + " >/dev/null")
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == "rootless-site\n"
        out = ok(ranged, "$UF ps && $UF run --rm owners sh -c 'cat /etc/resolv.conf; "
                         f"wget -q -O - http://host.containers.internal:{host_server}/'")
        assert f"127.0.0.1:{port}->80/tcp" in "\n".join(out)
        assert "nameserver 169.254.1.1" in out
        assert out[-1] == "hello from the host"
    finally:
        ok(ranged, "$UF stop -t 1 web >/dev/null; $UF rm web >/dev/null")
    assert set(pasta_processes()) <= before
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_root_published_port_conflict_outbound_and_cleanup(cli: CLI, host_server: int
                                                           ) -> None:
    port = free_port()
    before = set(pasta_processes())
    cli.ok("run", "-d", "--name", "rootweb", "-p", f"127.0.0.1:{port}:80", "busybox",
           "sh", "-c", "mkdir -p /www && echo root-site > /www/index.html && "
           "exec httpd -f -p 80 -h /www")
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == "root-site\n"
        res = cli("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        assert res.returncode == 125  # docker: unionfs itself failed
        assert res.stderr.strip() == (f"unionfs: error: cannot publish port 127.0.0.1:{port}/tcp:"
                                      " address already in use")
        info = json.loads(cli.ok("inspect", "rootweb"))[0]["NetworkSettings"]
        assert info["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert info["IPAddress"] and info["Gateway"]
        assert cli.ok("run", "--rm", "busybox", "wget", "-q", "-O", "-",
                      f"http://host.containers.internal:{host_server}/") == \
            "hello from the host\n"  # outbound, from root's private network too
    finally:
        cli.ok("stop", "-t", "1", "rootweb")
        cli.ok("rm", "rootweb")
    assert set(pasta_processes()) <= before


def test_publish_all_uses_the_images_exposed_ports(
        ranged: Rootless, cli: CLI, tmp_path: Path) -> None:
    from unionfs.store import Store

    root = CLI(tmp_path / "store", dict(cli.env, UNIONFS_STORE=str(tmp_path / "store")))
    root.ok("import", str(ranged.base / "owners.tar"), "-t", "plain")
    store = Store.open(tmp_path / "store")
    config = json.loads(json.dumps(store.image("plain").config))
    config.setdefault("config", {})["ExposedPorts"] = {"80/tcp": {}}
    store.publish_image(config, "exposed:latest")
    root.ok("run", "-d", "--name", "ex", "-P", "exposed", "sh", "-c",
            "mkdir -p /www && echo exposed > /www/index.html && exec httpd -f -p 80 -h /www")
    try:
        ports = json.loads(root.ok("inspect", "ex"))[0]["NetworkSettings"]["Ports"]
        host_port = ports["80/tcp"][0]["HostPort"]
        assert f"0.0.0.0:{host_port}->80/tcp" in root.ok("ps")
        assert fetch(f"http://127.0.0.1:{host_port}/") == "exposed\n"
    finally:
        root.ok("rm", "-f", "ex")


DNS_HOST = "127.0.0.153"  # the host's "resolver" in the tests: a loopback address
DNS_ANSWER = "192.0.2.77"  # TEST-NET-1: only ever an answer, never a destination


def _dns_reply(query: bytes) -> bytes:
    """An answer to a one-question query: DNS_ANSWER for an A record, none for others."""
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    qtype = int.from_bytes(query[end + 1:end + 3], "big")
    answers = b""
    if qtype == 1:
        answers = (b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big")
                   + (60).to_bytes(4, "big") + (4).to_bytes(2, "big")
                   + socket.inet_aton(DNS_ANSWER))
    header = query[:2] + b"\x81\x80" + (1).to_bytes(2, "big") \
        + (1 if answers else 0).to_bytes(2, "big") + b"\x00\x00\x00\x00"
    return header + question + answers


@pytest.fixture
def host_resolver(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A DNS server on the host's loopback and a resolv.conf naming it; the names asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((DNS_HOST, 53))
    sock.settimeout(0.2)
    asked: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            asked.append(query[12:])
            sock.sendto(_dns_reply(query), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_HOST}\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(resolv, 0o644)
    try:
        yield resolv, asked
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_dns_inside_reaches_the_hosts_resolver(
        ranged: Rootless, cli: CLI, host_resolver: tuple[Path, list[bytes]]) -> None:
    """The container's resolv.conf names pasta's forwarder, which asks the resolver of the
    host's /etc/resolv.conf (bound here to a test server on loopback), rootful and rootless."""
    resolv, asked = host_resolver
    bind = f"mount --bind {resolv} /etc/resolv.conf && "
    root = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         bind + 'exec "$@"', "sh",
         *cli.argv("run", "--rm", "busybox", "nslookup", "-type=a", "root.probe.test")],
        capture_output=True, text=True, env=cli.env, timeout=60, stdin=subprocess.DEVNULL)
    assert root.returncode == 0, root.stderr
    assert f"Address: {DNS_ANSWER}" in root.stdout, root.stdout
    out = ok(ranged, bind + "$UF run --rm owners nslookup -type=a rootless.probe.test")
    assert f"Address: {DNS_ANSWER}" in out, out
    names = b"".join(asked)
    assert b"\x04root\x05probe\x04test" in names and b"\x08rootless\x05probe" in names


def test_network_none_and_host_stay(cli: CLI) -> None:
    none = cli.ok("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert none.split() == ["lo"]
    res = cli("run", "--rm", "--network", "host", "-p", "8080:80", "busybox", "true")
    assert res.returncode == 125  # docker: unionfs itself failed
    assert "published ports need the private network" in res.stderr





def test_a_volume_is_filled_with_the_image_owners_as_the_container_sees_them(
        ranged: Rootless) -> None:
    out = ok(ranged, "$UF run --rm --network none -v hv:/home/user owners sh -c "
                     f"'{STAT} /home/user /home/user/f; echo new > /home/user/g; {STAT} "
                     "/home/user/g' && stat -c '%u:%g' store/volumes/hv/_data/f && "
                     "$UF volume rm hv && ls store/volumes")
    assert out[:3] == ["1000:1000 755 /home/user", "1000:1000 644 /home/user/f",
                       "0:0 644 /home/user/g"]
    assert out[3] == f"{SUB_START + 999}:{SUB_START + 999}"  # shifted as the layers are
    assert out[4:] == ["hv"]  # removed, files of mapped owners too
