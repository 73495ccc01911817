"""The fixtures' check of the containers' unionfs server logs finds what it must."""

from __future__ import annotations

from pathlib import Path

from .conftest import _REPORTED, CLI, server_log_problems


def test_an_error_or_a_traceback_in_a_server_log_is_found(tmp_path: Path) -> None:
    for name, text in (("a", "[x] ERROR something failed unexpectedly\n"),
                       ("b", "Traceback (most recent call last):\n  File ...\n"),
                       ("c", "[x] INFO all is well\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "unionfs.log").write_text(text)
    (tmp_path / "d.unionfs.log").write_text("[x] CRITICAL gone\n")
    found = server_log_problems(tmp_path)
    names = sorted(Path(p.split(":")[0]).name for p in found)
    assert names == ["d.unionfs.log", "unionfs.log", "unionfs.log"]
    assert not any("/c/" in p for p in found)
    assert server_log_problems(tmp_path) == []  # each file is reported once
    _REPORTED.difference_update(tmp_path.rglob("*"))


def test_a_removed_container_leaves_its_server_log_for_the_check(cli: CLI,
                                                                 kept_logs: Path) -> None:
    cid = cli.ok("run", "-d", "busybox", "true").strip()
    cli.ok("wait", cid)
    cli.ok("rm", cid)
    kept = kept_logs / f"{cid}.unionfs.log"
    assert kept.exists()
    assert server_log_problems(kept_logs) == []
