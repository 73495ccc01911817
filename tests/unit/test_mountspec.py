"""Parsing of mount requests: layer lists and options (pure, no I/O)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unionfs.errors import UserError
from unionfs.mount.options import MountOptions, options_from_text, parse_options, split_escaped
from unionfs.mount.spec import parse_lowers


def test_colon_escapes_like_overlayfs() -> None:
    assert split_escaped(r"a\:b:c", ":") == ["a:b", "c"]
    assert split_escaped(r"a\\:b", ":") == ["a\\", "b"]


def test_empty_layer_is_refused() -> None:
    with pytest.raises(UserError, match="empty layer"):
        parse_lowers("a::b")


def test_unknown_option_is_refused() -> None:
    with pytest.raises(UserError, match="unknown mount option 'bogus'"):
        parse_options("ro,bogus")


@given(st.builds(
    MountOptions, read_only=st.booleans(), allow_other=st.booleans(),
    workdir=st.none() | st.sampled_from(["/w", "/a,b", "/c\\d"]),
    entry_timeout=st.sampled_from([0.0, 1.5, 300.0]), attr_timeout=st.sampled_from([0.0, 9.0]),
    negative_timeout=st.sampled_from([0.0, 300.0]), poll_us=st.sampled_from([0, 50, 10_000]),
    userxattr=st.none() | st.booleans(), volatile=st.booleans(), extensions=st.booleans(),
    redirect_dir=st.booleans(), metrics=st.booleans(),
    trace=st.none() | st.sampled_from(["/t.log", "/t/a,b"]),
    fail=st.sampled_from([(), ["write:EIO"], ["write:EIO:path=*.db", "lookup:delay=5ms"]])))
def test_one_option_model_reads_back_what_it_writes(options: MountOptions) -> None:
    """What a caller gives crosses to the server as ``-o`` text and comes back the same."""
    again = options_from_text(",".join(options.option_items()))
    assert again == dataclasses.replace(options, fail=list(options.fail) or ())
