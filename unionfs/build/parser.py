"""Containerfile text into instructions, each with the line it starts on.

The grammar of docker's reference: parser directives at the top (``# escape=``, ``# syntax=``),
comment lines (also inside a continued instruction), line continuations with the escape
character, an instruction keyword (any case) and its arguments, ``--flag=value`` options
before the arguments of FROM/RUN/COPY/ADD, and exec form (a JSON array) or shell form.
Heredocs are not supported. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from unionfs.errors import UserError

KEYWORDS = frozenset({
    "FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
    "LABEL", "EXPOSE", "VOLUME", "SHELL", "STOPSIGNAL", "MAINTAINER", "HEALTHCHECK", "ONBUILD",
})
UNSUPPORTED = frozenset({"HEALTHCHECK", "ONBUILD"})
FLAGS = {
    "FROM": frozenset({"platform"}),
    "RUN": frozenset({"network"}),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}),
}
JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME", "COPY", "ADD"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_KEYWORD = re.compile(r"^\s*([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
_FLAG = re.compile(r"^--([a-z][a-z-]*)(?:=(\S*))?(?:\s+|$)")
# ``<<EOF`` / ``<<-"EOF"`` as a word of RUN, COPY or ADD: BuildKit's heredoc, not supported
_HEREDOC = re.compile(r"(?:^|\s)<<-?([\"']?)[A-Za-z_][A-Za-z0-9_]*\1(?=\s|$)")


class BuildError(UserError):
    """Bad input of a build: printed as ``FILE:LINE: message``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``keyword`` upper-case, ``args`` the text after flags.

    ``exec_form`` is the parsed JSON array when the arguments are one; ``text`` is the
    instruction as written (continuations joined), as the history shows it.
    """

    keyword: str
    args: str
    line: int
    where: str
    flags: dict[str, str] = field(default_factory=dict)
    exec_form: list[str] | None = None
    text: str = ""

    def error(self, message: str) -> BuildError:
        """A :class:`BuildError` at this instruction's line."""
        return BuildError(self.where, message)


@dataclass(frozen=True)
class Containerfile:
    """The instructions of a file, and its escape character."""

    instructions: list[Instruction]
    escape: str = "\\"


def parse(text: str, filename: str = "Containerfile") -> Containerfile:
    """Parse a Containerfile; :class:`BuildError` naming ``filename:line`` on a syntax error."""
    lines = text.splitlines()
    escape, start = _directives(lines, filename)
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        first = i
        joined, i = _join_continued(lines, i, escape)
        out.append(_instruction(joined, first + 1, filename))
    return Containerfile(out, escape)


def _directives(lines: list[str], filename: str) -> tuple[str, int]:
    """The escape character and the index of the first line after the directives."""
    escape = "\\"
    seen: set[str] = set()
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip()) if line.strip().startswith("#") else None
        if m is None or m.group(1).lower() not in ("escape", "syntax"):
            return escape, i
        name = m.group(1).lower()
        if name in seen:
            raise BuildError(f"{filename}:{i + 1}", f"only one {name} parser directive can be "
                             "used")
        seen.add(name)
        if name == "escape":
            if m.group(2) not in ("\\", "`"):
                raise BuildError(f"{filename}:{i + 1}", f"invalid escape token {m.group(2)!r}"
                                 " does not match ` or \\")
            escape = m.group(2)
    return escape, len(lines)


def _join_continued(lines: list[str], i: int, escape: str) -> tuple[str, int]:
    """Physical lines from ``i`` joined while they end in the escape character."""
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        i += 1
        if parts and (line.lstrip().startswith("#") or not line.strip()):
            continue  # comment and empty lines inside a continuation are dropped
        stripped = line.rstrip()
        if stripped.endswith(escape) and not stripped.endswith(escape * 2):
            parts.append(stripped[:-1])
            continue
        if stripped.endswith(escape * 2):  # an escaped escape: literal, the line ends
            parts.append(stripped[:-1])
            break
        parts.append(line)
        break
    return "".join(parts), i


def _instruction(text: str, line: int, filename: str) -> Instruction:
    where = f"{filename}:{line}"
    m = _KEYWORD.match(text)
    if m is None:
        raise BuildError(where, f"syntax error: {text.strip()[:60]!r}")
    keyword = m.group(1).upper()
    rest = (m.group(2) or "").strip()
    if keyword not in KEYWORDS:
        raise BuildError(where, f"unknown instruction: {m.group(1)}")
    if keyword in UNSUPPORTED:
        raise BuildError(where, f"{keyword} is not supported")
    flags: dict[str, str] = {}
    allowed = FLAGS.get(keyword, frozenset())
    while (fm := _FLAG.match(rest)) is not None:
        name = fm.group(1)
        if name not in allowed:
            raise BuildError(where, f"unknown flag: --{name} for {keyword}")
        if fm.group(2) is None:
            raise BuildError(where, f"--{name} needs a value (--{name}=VALUE)")
        flags[name] = fm.group(2)
        rest = rest[fm.end():]
    exec_form = _json_array(rest) if keyword in JSON_FORMS else None
    if keyword in ("RUN", "COPY", "ADD") and exec_form is None and _HEREDOC.search(rest):
        raise BuildError(where, f"heredocs ({keyword} <<WORD) are not supported")
    if not rest and keyword not in ("CMD", "ENTRYPOINT"):
        raise BuildError(where, f"{keyword} requires at least one argument")
    return Instruction(keyword, rest, line, where, flags, exec_form, text.strip())


def _json_array(text: str) -> list[str] | None:
    """The list of strings ``text`` spells as JSON, else None (then it is shell form)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None
