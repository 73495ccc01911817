"""Image references (``name[:tag]``), digests and image configs as plain data."""

from __future__ import annotations

import os
import re
from typing import Any

from unionfs.errors import UserError

DEFAULT_TAG = "latest"
# docker's reference grammar: lowercase path components, an optional host[:port]/ first
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+|/|:[0-9]+/)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_NAME = 255
_HEX = re.compile(r"^[0-9a-f]+$")


def split_ref(ref: str) -> tuple[str, str]:
    """``name[:tag]`` into (name, tag); the tag is after the last ':' not followed by '/'."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, DEFAULT_TAG
    return name, tag


def normalize_tag(ref: str) -> str:
    """A valid ``name:tag`` (``latest`` when no tag is given); rejects malformed names."""
    name, tag = split_ref(ref)
    if name and name.lower() != name and _NAME.match(name.lower()):
        raise UserError(f"invalid image name: {ref!r} (repository names must be lowercase)")
    if not _TAG.match(tag):
        raise UserError(f"invalid image name: {ref!r} (a tag is 1-128 of [A-Za-z0-9_.-], "
                        "not starting with '.' or '-')")
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise UserError(f"invalid image name: {ref!r} (expected NAME[:TAG])")
    return f"{name}:{tag}"


def short_name(name: str) -> str:
    """``docker.io/library/x`` and ``docker.io/x`` as Docker shows them: ``x``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def hex_of(ref: str) -> str | None:
    """The hex part of a (possibly abbreviated) ``sha256:`` id, or None if not one."""
    text = ref.removeprefix("sha256:")
    return text if len(text) >= 4 and _HEX.match(text) else None


def short(digest: str) -> str:
    """The 12-hex-digit short form of a digest, as shown in tables."""
    return digest.removeprefix("sha256:")[:12]


def oci_arch() -> str:
    """This machine's architecture in OCI/Go terms."""
    machine = os.uname().machine  # what platform.machine() reads, without importing it
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def new_config(
    parent: dict[str, Any] | None, layer: str, history: dict[str, Any],
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config of an image made by adding ``layer`` (a diff_id) on top of ``parent``.

    ``container`` (an OCI ``config`` object: Cmd, Env, ...) replaces the parent's.
    """
    base = parent or {"architecture": oci_arch(), "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    config = {k: v for k, v in base.items() if k not in ("rootfs", "history", "created",
                                                          "author")}
    config["created"] = history["created"]
    if history.get("author"):
        config["author"] = history["author"]
    config["rootfs"] = {"type": "layers", "diff_ids": [*base["rootfs"]["diff_ids"], layer]}
    config["history"] = [*base.get("history", []), history]
    if container is not None:
        config["config"] = container
    return config


def history_entry(created: str, created_by: str = "", comment: str = "",
                  author: str | None = None) -> dict[str, Any]:
    """One OCI history record (empty fields left out)."""
    entry: dict[str, Any] = {"created": created}
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = author
    return entry


def layer_history(config: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The history record of each layer, bottom first (None where the history is short)."""
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    records = [h for h in config.get("history", []) if not h.get("empty_layer")]
    out: list[dict[str, Any] | None] = list(records[: len(diff_ids)])
    return out + [None] * (len(diff_ids) - len(out))
