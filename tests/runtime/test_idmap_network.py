"""The pure parts of id maps and networks: ranges, maps, port specs, pasta's argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from unionfs.errors import UserError
from unionfs.runtime import idmap, network
from unionfs.runtime.namespaces import IdMap
from unionfs.runtime.network import Port


def test_subordinate_range_by_name_or_uid(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("bob:100000:65536\n# comment\nbad line\n1001:200000:1000\nalice:x:1\n")
    assert idmap.subordinate_range(str(f), "bob", 1000) == idmap.Range(100000, 65536)
    assert idmap.subordinate_range(str(f), "carol", 1001) == idmap.Range(200000, 1000)
    assert idmap.subordinate_range(str(f), "alice", 5) is None
    assert idmap.subordinate_range(str(tmp_path / "missing"), "bob", 1000) is None


def test_rootless_maps_full_and_one_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "subuid").write_text("4000:300000:100000\n")
    (tmp_path / "subgid").write_text("4000:400000:1000\n")
    monkeypatch.setattr(idmap, "SUBUID", str(tmp_path / "subuid"))
    monkeypatch.setattr(idmap, "SUBGID", str(tmp_path / "subgid"))
    full = idmap.rootless_maps(4000, 4001)
    assert full.full
    # 0 is the user; 1..65536 the range (a smaller range is used whole).
    assert full.uid == [IdMap(0, 4000, 1), IdMap(1, 300000, 65536)]
    assert full.gid == [IdMap(0, 4001, 1), IdMap(1, 400000, 1000)]
    assert full.args("uid") == ["0", "4000", "1", "1", "300000", "65536"]
    one = idmap.rootless_maps(4002, 4002)
    assert not one.full and one.uid == [IdMap(0, 4002, 1)]


def test_parse_map() -> None:
    assert idmap.parse_map("0:100000:65536", "--uidmap") == [IdMap(0, 100000, 65536)]
    for bad in ("0:1", "a:b:c", "0:1:0", "-1:0:1"):
        with pytest.raises(UserError, match="--uidmap"):
            idmap.parse_map(bad, "--uidmap")


def test_root_maps_keep_container_root_on_host_root() -> None:
    layout = [IdMap(0, 0, 1), IdMap(1, 100000, 65536)]
    assert idmap.check_root_maps(layout, "--uidmap") == layout
    assert idmap.check_root_maps([], "--gidmap") == []
    with pytest.raises(UserError, match="--gidmap: container id 0 must map to host id 0"):
        idmap.check_root_maps([IdMap(0, 100000, 65536)], "--gidmap")


@pytest.mark.parametrize(("text", "port"), [
    ("80", Port(80, 0)),
    ("8080:80", Port(80, 8080)),
    ("127.0.0.1:8080:80/udp", Port(80, 8080, "127.0.0.1", "udp")),
    ("127.0.0.1::80", Port(80, 0, "127.0.0.1")),
    ("[::1]:8443:443/tcp", Port(443, 8443, "::1")),
])
def test_parse_port(text: str, port: Port) -> None:
    assert network.parse_port(text) == port


@pytest.mark.parametrize("text", ["", "0", "70000:80", "80:70000", "a:b", "1.2.3:80:80",
                                  "999.1.1.1:80:80", "80/sctp"])
def test_parse_port_refuses(text: str) -> None:
    with pytest.raises(UserError):
        network.parse_port(text)


def test_port_shown_as_docker_does() -> None:
    assert Port(80, 8080, "127.0.0.1").show() == "127.0.0.1:8080->80/tcp"
    assert Port(53, 5353, "", "udp").show() == "0.0.0.0:5353->53/udp"


def test_exposed_ports_from_the_image_config() -> None:
    ports: dict[str, object] = {"80/tcp": {}, "53/udp": {}, "junk": {}}
    config: dict[str, object] = {"config": {"ExposedPorts": ports}}
    assert network.exposed_ports(config) == [Port(53, 0, "", "udp"), Port(80, 0)]
    assert network.exposed_ports({}) == []


def test_pasta_argv(tmp_path: Path) -> None:
    argv = network.pasta_command(7, 8, [Port(80, 8080, "127.0.0.1"), Port(53, 5353, "", "udp")],
                                 tmp_path / "pid")
    assert argv[:2] == ["pasta", "--config-net"]
    assert argv[argv.index("-t") + 1] == "127.0.0.1/8080:80"
    assert argv[argv.index("-u") + 1] == "5353:53"
    assert argv[argv.index("-T") + 1] == "none" and argv[argv.index("-U") + 1] == "none"
    assert argv[-4:] == ["--userns", "/proc/self/fd/8", "--netns", "/proc/self/fd/7"]
    assert network.pasta_command(7, None, [], tmp_path / "pid")[-2:] == [
        "--netns", "/proc/self/fd/7"]


def test_claim_ports_names_a_taken_port() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(UserError, match=f"127.0.0.1:{taken}/tcp: address already in use"):
            network.claim_ports([Port(80, taken, "127.0.0.1")])
    chosen = network.claim_ports([Port(80, 0, "127.0.0.1")])
    assert chosen[0].host_port > 0
