"""Parsing of mount requests: layer lists and options (pure, no I/O)."""

from __future__ import annotations

import pytest

from unionfs.errors import UserError
from unionfs.mountspec import parse_lowers, parse_options, split_escaped


def test_colon_escapes_like_overlayfs() -> None:
    assert split_escaped(r"a\:b:c", ":") == ["a:b", "c"]
    assert split_escaped(r"a\\:b", ":") == ["a\\", "b"]


def test_empty_layer_is_refused() -> None:
    with pytest.raises(UserError, match="empty layer"):
        parse_lowers("a::b")


def test_unknown_option_is_refused() -> None:
    with pytest.raises(UserError, match="unknown mount option 'bogus'"):
        parse_options("ro,bogus")
