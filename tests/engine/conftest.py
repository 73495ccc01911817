"""Fixtures shared by the engine tests (no mount)."""

from __future__ import annotations

import pytest

from unionfs.layers.layer import Layer


@pytest.fixture
def xattr_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The paths of every ``Layer.getxattr`` from here on (a test counts origin reads)."""
    asked: list[bytes] = []
    getxattr = Layer.getxattr

    def counted(self: Layer, rel: bytes, name: bytes) -> bytes | None:
        asked.append(rel)
        return getxattr(self, rel, name)

    monkeypatch.setattr(Layer, "getxattr", counted)
    return asked
