"""The README's first command runs to the end and shows each step working."""

from __future__ import annotations

from tests.conftest import unionfs_cli


def test_demo_runs_end_to_end() -> None:
    res = unionfs_cli("demo", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "changed in the union" in out
    assert "D /srv/www" in out
    assert "pid 1 on demo-box" in out
    assert "web:3" in out and out.rstrip().endswith("demo finished")
