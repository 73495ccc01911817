"""A container's private network: pasta (Debian's ``passt``), for root and rootless alike.

``--network private`` (the default) gives the container its own network namespace with one
interface, configured by pasta as a copy of the host's (address, default route), outbound
TCP/UDP/ICMP through pasta's sockets on the host, DNS forwarded from ``DNS_ADDRESS`` to the
host's resolver, and the published ports (``-p``) bound on the host by pasta. The gateway
address leads to the host's loopback (pasta's gateway mapping), named
``host.containers.internal`` in the container's /etc/hosts.

pasta also serves root: no bridge, no veth, no NAT rules and no ``ip_forward`` written into
the host's shared network configuration, one process that holds everything and ends with the
container (it is killed at cleanup).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unionfs.errors import UserError

DNS_ADDRESS = "169.254.1.1"  # what the container's resolv.conf names; pasta forwards it
HOST_ALIAS = "host.containers.internal"
PASTA_START_TIMEOUT = 20.0
_PORT_RE = re.compile(r"^(?:(?:\[(?P<ip6>[0-9a-fA-F:.]+)\]|(?P<ip>\d+\.\d+\.\d+\.\d+)):)?"
                      r"(?:(?P<host>\d*):)?(?P<ctr>\d+)(?:/(?P<proto>tcp|udp))?$")


@dataclass(frozen=True)
class Port:
    """One published port: ``host_ip:host_port -> container_port/proto``."""

    container_port: int
    host_port: int
    host_ip: str = ""
    proto: str = "tcp"

    def show(self) -> str:
        """As ``docker ps`` shows it: ``127.0.0.1:8080->80/tcp``."""
        ip = self.host_ip or "0.0.0.0"
        return f"{ip}:{self.host_port}->{self.container_port}/{self.proto}"

    def pasta_spec(self) -> str:
        """pasta's ``[ADDR/]PORT:TARGET``."""
        addr = f"{self.host_ip}/" if self.host_ip else ""
        return f"{addr}{self.host_port}:{self.container_port}"


def parse_port(text: str) -> Port:
    """``-p [IP:][HOST:]CTR[/tcp|udp]`` (no HOST: a free port is chosen at start)."""
    m = _PORT_RE.match(text.strip())
    if not m:
        raise UserError(f"invalid publish spec {text!r}: expected [IP:]HOST:CTR[/tcp|udp]")
    ip = m.group("ip") or m.group("ip6") or ""
    if ip:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        except OSError:
            raise UserError(f"invalid IP address {ip!r} in publish spec {text!r}") from None
    ctr = int(m.group("ctr"))
    host = int(m.group("host")) if m.group("host") else 0
    if not 1 <= ctr <= 65535 or host > 65535:
        raise UserError(f"invalid port in publish spec {text!r}: must be 1-65535")
    return Port(ctr, host, ip, m.group("proto") or "tcp")


def exposed_ports(image_config: dict[str, Any]) -> list[Port]:
    """``-P``: the image's ``ExposedPorts`` ("80/tcp"), each on a free host port."""
    exposed = (image_config.get("config") or {}).get("ExposedPorts") or {}
    ports = []
    for key in sorted(exposed):
        number, _, proto = str(key).partition("/")
        if number.isdigit():
            ports.append(Port(int(number), 0, "", proto or "tcp"))
    return ports


def check_mode(mode: str) -> str:
    """``private`` (default), ``none`` (loopback only) or ``host``."""
    if mode not in ("private", "none", "host"):
        raise UserError(f"network {mode} not found (supported: private, none, host)")
    return mode


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def claim_ports(ports: list[Port]) -> list[Port]:
    """Choose free host ports for those without one; a port that is taken is one line."""
    out = []
    for p in ports:
        kind = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
        ip = p.host_ip or "0.0.0.0"
        with socket.socket(_family(ip), kind) as s:
            try:
                s.bind((ip, p.host_port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UserError(f"cannot publish port {ip}:{p.host_port}/{p.proto}: "
                                    "address already in use") from None
                raise UserError(f"cannot publish port {ip}:{p.host_port}/{p.proto}: "
                                f"{exc.strerror}") from None
            out.append(Port(p.container_port, s.getsockname()[1], p.host_ip, p.proto))
    return out


def host_gateway() -> str | None:
    """The host's IPv4 default gateway (pasta gives the container the same one)."""
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                    return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    except OSError:
        return None
    return None


@dataclass
class Network:
    """A started pasta: its pid and what ``inspect`` shows."""

    pid: int
    ports: list[Port]
    address: str = ""
    gateway: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "ports": [asdict(p) for p in self.ports],
                "address": self.address, "gateway": self.gateway}

    def stop(self) -> None:
        """End pasta (idempotent)."""
        stop_pid(self.pid)


def stop_pid(pid: int | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to a pasta we started; returns once it is gone."""
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def pasta_command(netns_fd: int, userns_fd: int | None, ports: list[Port],
                  pidfile: Path) -> list[str]:
    """pasta's argv for the namespaces open at ``netns_fd`` (and ``userns_fd``).

    The namespaces are handed over as open fds: pasta started by root switches to nobody
    unless told ``--runas 0``, and even then keeps no right to open another root process's
    namespaces by path; its own fds it may always reopen.
    """
    tcp = [p.pasta_spec() for p in ports if p.proto == "tcp"]
    udp = [p.pasta_spec() for p in ports if p.proto == "udp"]
    argv = ["pasta", "--config-net", "--quiet", "--pid", os.fspath(pidfile),
            "-t", ",".join(tcp) or "none", "-u", ",".join(udp) or "none",
            "-T", "none", "-U", "none", "--dns-forward", DNS_ADDRESS, "--no-dhcpv6",
            "--no-ra"]
    if os.geteuid() == 0:
        argv += ["--runas", "0:0"]
    if userns_fd is not None:
        argv += ["--userns", f"/proc/self/fd/{userns_fd}"]
    argv += ["--netns", f"/proc/self/fd/{netns_fd}"]
    return argv


def start(pid: int, ports: list[Port], state_dir: Path, *, join_userns: bool) -> Network:
    """Connect the network namespace of ``pid`` through pasta; returns once it is up."""
    if shutil.which("pasta") is None:
        raise UserError("a private network needs pasta (Debian's passt package); use "
                        "--network host or none without it")
    if os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise UserError("a private network needs /dev/net/tun readable and writable by you "
                        "(mode 0666, as Debian's udev rules make it); or use --network host "
                        "or none")
    pidfile = state_dir / "pasta.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    fds = [os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)]
    if join_userns:
        fds.append(os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC))
    argv = pasta_command(fds[0], fds[1] if join_userns else None, ports, pidfile)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=PASTA_START_TIMEOUT,
                             stdin=subprocess.DEVNULL, pass_fds=fds)
    except subprocess.TimeoutExpired:
        raise UserError("the container's network did not come up: pasta timed out") from None
    finally:
        for fd in fds:
            os.close(fd)
    if res.returncode != 0 or not pidfile.exists():
        raise UserError(f"cannot set up the container's network: {_last_line(res.stderr)}")
    daemon = int(pidfile.read_text().split()[0])
    net = Network(daemon, ports, gateway=host_gateway() or "")
    net.address = _address_of(pid)
    return net


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and "syslog" not in ln]
    if not lines:
        return "pasta failed"
    for ln in lines:
        if "bind" in ln.lower() or "in use" in ln.lower():
            return ln
    return lines[-1]


def _address_of(pid: int) -> str:
    """The IPv4 address pasta gave the namespace's interface (from its fib trie)."""
    try:
        with open(f"/proc/{pid}/net/fib_trie") as f:
            text = f.read()
    except OSError:
        return ""
    # "|-- 192.0.2.2" followed by "/32 host LOCAL": the namespace's own addresses.
    found = re.findall(r"\|-- ([0-9.]+)\n\s+/32 host LOCAL", text)
    return next((a for a in found if not a.startswith("127.")), "")


def resolv_conf() -> str:
    """The container's /etc/resolv.conf on a private network."""
    return f"nameserver {DNS_ADDRESS}\n"


def hosts_extra() -> str:
    """/etc/hosts lines of a private network: the host (its loopback) by name."""
    gw = host_gateway()
    return f"{gw}\t{HOST_ALIAS}\n" if gw else ""
