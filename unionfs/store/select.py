"""Which images ``images [REPOSITORY[:TAG]] [--filter ...]`` lists, docker's way.

Filters (``--filter KEY=VALUE``, repeatable; different keys must all match, repeats of one
key match any): ``reference=PATTERN`` (a glob over ``name`` or ``name:tag``; the positional
argument is one too), ``dangling=true|false`` (untagged images), ``before=IMAGE`` and
``since=IMAGE`` (created before/after that image), ``label=KEY`` or ``label=KEY=VALUE``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from unionfs.errors import UserError
from unionfs.store.refs import split_ref
from unionfs.store.store import Image, Store

KEYS = ("reference", "dangling", "before", "since", "label")


@dataclass
class Selection:
    filters: dict[str, list[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        key, sep, value = text.partition("=")
        if not sep or key not in KEYS:
            raise UserError(f"invalid filter {text!r} (expected one of "
                            f"{', '.join(k + '=...' for k in KEYS)})")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise UserError(f"invalid filter {text!r}: dangling is true or false")
        self.filters.setdefault(key, []).append(value)


def _familiar(pattern: str) -> str:
    """``docker.io/library/x`` (and ``docker.io/x``) as the store names it: ``x``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if pattern.startswith(prefix):
            return pattern[len(prefix):]
    return pattern


def tag_matches(tag: str, pattern: str) -> bool:
    """A stored ``name:tag`` against ``REPOSITORY`` or ``REPOSITORY:TAG`` (globs allowed)."""
    pattern = _familiar(pattern)
    name, _t = split_ref(tag)
    pname, sep_tag = split_ref(pattern)
    if ":" in pattern.rpartition("/")[2]:
        return fnmatch.fnmatchcase(tag, f"{pname}:{sep_tag}")
    return fnmatch.fnmatchcase(name, pattern)


def select(store: Store, images: Iterable[Image], repository: str | None,
           selection: Selection) -> list[tuple[Image, list[str]]]:
    """(image, its tags to show) for each listed image, in the order given."""
    refs = list(selection.filters.get("reference", []))
    dangling = selection.filters.get("dangling")
    want_dangling = None if not dangling else dangling[-1].lower() in ("true", "1")
    before = [store.image(r) for r in selection.filters.get("before", [])]
    since = [store.image(r) for r in selection.filters.get("since", [])]
    out = []
    for image in images:
        tags = image.tags
        if refs:  # repeats of one filter: any may match
            tags = [t for t in tags if any(tag_matches(t, p) for p in refs)]
        if repository:
            tags = [t for t in tags if tag_matches(t, repository)]
        if (refs or repository) and not tags:
            continue
        if want_dangling is not None and (not image.tags) != want_dangling:
            continue
        when = _when(image)
        if any(when >= _when(b) for b in before) or any(when <= _when(s) for s in since):
            continue
        if not _labels_match(image, selection.filters.get("label", [])):
            continue
        out.append((image, tags))
    return out


def _when(image: Image) -> tuple[str, int]:
    """Creation order: the created time (whole seconds), then the layer count, so an image
    committed on another within the same second still comes after it."""
    return str(image.config.get("created", "")), len(image.layer_ids)


def _labels_match(image: Image, wanted: list[str]) -> bool:
    labels = (image.config.get("config") or {}).get("Labels") or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True
