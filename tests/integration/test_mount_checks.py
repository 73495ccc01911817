"""Checks of mount requests against the machine: layers exist, no overlap, /dev/fuse usable.

No mount is made; these read the file system, so they are not in tests/unit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unionfs.errors import UserError
from unionfs.mount.spec import build_spec


def test_upper_inside_lower_is_refused(tmp_path: Path) -> None:
    lower = tmp_path / "l"
    (lower / "up").mkdir(parents=True)
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="overlaps lower"):
        build_spec(str(lower), str(lower / "up"), str(tmp_path / "m"), None)


def test_missing_layer_is_named(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match=r"lower layer .*/nope does not exist"):
        build_spec(str(tmp_path / "nope"), None, str(tmp_path / "m"), None)


def test_workdir_defaults_beside_upper(tmp_path: Path) -> None:
    for d in ("l", "u", "m"):
        (tmp_path / d).mkdir()
    spec = build_spec(str(tmp_path / "l"), str(tmp_path / "u"), str(tmp_path / "m"), None)
    assert spec.workdir == str(tmp_path / "u.work")
    assert spec.writable


@pytest.mark.parametrize(("option", "expected"), [(None, 50), ("poll_us=0", 0),
                                                  ("poll_us=2000", 2000)])
def test_poll_us(tmp_path: Path, option: str | None, expected: int) -> None:
    for d in ("l", "m"):
        (tmp_path / d).mkdir(exist_ok=True)
    spec = build_spec(str(tmp_path / "l"), None, str(tmp_path / "m"), option)
    assert spec.poll_us == expected


@pytest.mark.parametrize("value", ["-1", "10001", "fast"])
def test_bad_poll_us_is_refused(tmp_path: Path, value: str) -> None:
    for d in ("l", "m"):
        (tmp_path / d).mkdir(exist_ok=True)
    with pytest.raises(UserError, match="poll_us must be"):
        build_spec(str(tmp_path / "l"), None, str(tmp_path / "m"), f"poll_us={value}")
