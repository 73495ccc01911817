"""The security options of ``run``: ``--security-opt``, ``--cap-add``/``--cap-drop``,
``--privileged`` and ``--device``, checked into a :class:`~runtime.spec.Spec`'s fields, and
what PID 1 needs from them (capability mask, seccomp filter)."""

from __future__ import annotations

import os
import stat

from unionfs.errors import UserError
from unionfs.runtime import capabilities, linux, seccomp
from unionfs.runtime.spec import Device, Spec


def parse_security_opts(values: list[str]) -> str | dict[str, object]:
    """The seccomp setting from ``--security-opt`` values (docker's ``seccomp=`` form; also
    ``no-new-privileges``, which is always on here)."""
    setting: str | dict[str, object] = "default"
    for value in values:
        key, sep, arg = value.partition("=")
        if key == "seccomp" and sep:
            setting = seccomp.parse_option(arg)
        elif key in ("no-new-privileges", "no-new-privileges:true") or value == \
                "no-new-privileges=true":
            continue
        else:
            raise UserError(f"invalid --security-opt: {value!r} (supported: seccomp=unconfined,"
                            " seccomp=PROFILE.json, no-new-privileges)")
    return setting


def parse_device(text: str) -> Device:
    """``HOST[:CTR[:PERMS]]``: the host path must be a character or block device."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"invalid device specification: '{text}'")
    host = parts[0]
    ctr = parts[1] if len(parts) > 1 and parts[1] else host
    try:
        mode = os.stat(host).st_mode
    except OSError as exc:
        raise UserError(f"error gathering device information while adding device {host!r}: "
                        f"{exc.strerror}") from None
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        raise UserError(f"not a device node: {host}")
    if not ctr.startswith("/"):
        raise UserError(f"invalid device path in the container: {ctr} (must be absolute)")
    return Device(os.path.abspath(host), os.path.normpath(ctr))


def check_caps(names: list[str]) -> list[str]:
    """``--cap-add``/``--cap-drop`` values, normalized (unknown names refused)."""
    return [capabilities.normalize(n) for n in names]


def kept_caps(spec: Spec) -> list[str]:
    """The capabilities the container's root keeps: those asked for that this kernel knows
    and our own bounding set still holds (no process can give more)."""
    names = capabilities.names_of(spec.cap_add, spec.cap_drop, spec.privileged,
                                  known=min(linux.last_cap() + 1, len(capabilities.NAMES)))
    return [n for n in names
            if linux.prctl(linux.PR_CAPBSET_READ, capabilities.NAMES.index(n)) == 1]


def prepare_filter(spec: Spec) -> seccomp.Filter | None:
    """The seccomp filter for the container's processes (build before the pivot)."""
    return seccomp.prepare(spec.seccomp, kept_caps(spec), spec.privileged)
