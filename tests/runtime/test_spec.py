"""Parsing and checking a container's options (no system changes)."""

from __future__ import annotations

import os

import pytest

from unionfs.errors import UserError
from unionfs.runtime.spec import (
    Limits,
    Spec,
    Volume,
    check_name,
    check_network,
    parse_cpu_shares,
    parse_cpus,
    parse_memory,
    parse_size,
    parse_volume,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("64m", 64 << 20), ("2g", 2 << 30), ("2G", 2 << 30), ("512MiB", 512 << 20),
    ("1048576", 1 << 20), ("1.5g", 3 << 29), ("10k", 10 << 10), ("100mb", 100 << 20),
])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12q", "-5m", "m", "1..2g"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UserError, match="invalid size"):
        parse_memory(text)


def test_memory_minimum() -> None:
    with pytest.raises(UserError, match="Minimum memory limit"):
        parse_memory("1m")


def test_cpus_and_shares() -> None:
    assert parse_cpus("1.5") == 1.5
    with pytest.raises(UserError):
        parse_cpus("0")
    with pytest.raises(UserError):
        parse_cpus("many")
    assert parse_cpu_shares(256) == 256
    with pytest.raises(UserError):
        parse_cpu_shares(1)


def test_volumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_volume(f"{tmp_path}:/data") == Volume(str(tmp_path), "/data", False)
    assert parse_volume(f"{tmp_path}:/data/:ro") == Volume(str(tmp_path), "/data", True)
    assert parse_volume(f"{tmp_path}/missing:/data").host == f"{tmp_path}/missing"
    assert not (tmp_path / "missing").exists()  # made only when the run goes ahead
    # A bare name is a named volume; a source with / or starting with . a host path.
    assert parse_volume("data:/data:ro") == Volume("", "/data", True, volume="data")
    assert parse_volume("./data:/data").host == os.path.abspath("data")
    assert parse_volume(".hidden:/data").volume == ""
    with pytest.raises(UserError, match="invalid volume name"):
        parse_volume("d:/data")  # docker wants two characters at least
    for bad in (f"{tmp_path}", f"{tmp_path}:rel", f"{tmp_path}:/d:rx", ":/d"):
        with pytest.raises(UserError):
            parse_volume(bad)


def test_names_and_network() -> None:
    assert check_name("web-1.a_b") == "web-1.a_b"
    for bad in ("-x", "a b", "a/b", ""):
        with pytest.raises(UserError, match="Invalid container name"):
            check_name(bad)
    assert check_network("none") == "none"
    with pytest.raises(UserError):
        check_network("bridge")


def test_environment_and_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "yes")
    spec = Spec("busybox", ["env"], hostname="h", tty=True,
                env=["A=1", "FROM_HOST", "NOT_SET", "PATH=/bin"],
                volumes=[Volume("/a", "/b", True)], limits=Limits(memory=1 << 26))
    env = spec.environment()
    assert env["A"] == "1" and env["FROM_HOST"] == "yes" and "NOT_SET" not in env
    assert env["PATH"] == "/bin" and env["HOSTNAME"] == "h" and env["TERM"] == "xterm"
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec("busybox").argv() == ["/bin/sh"]
    assert spec.limits.any() and not Limits().any()
