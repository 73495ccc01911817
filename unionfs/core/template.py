"""The small part of Go's text/template that ``inspect -f`` and ``ps --format`` need:
``{{.A.B}}``, ``{{json .A}}``, ``{{json .}}`` and a method with one string argument
(``{{.Label "com.example"}}``: a callable value in the data).

Values print as Go prints them (lists ``[a b]``, maps ``map[k:v]``, missing ``<no value>``),
so ``-f '{{.Config.Cmd}}'`` gives what docker gives. Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from unionfs.errors import UserError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_MISSING = object()


def render(template: str, data: Any) -> str:
    """``template`` with each ``{{...}}`` replaced by its value in ``data``."""
    return _ACTION.sub(lambda m: _action(m.group(1), data), template)


def _action(text: str, data: Any) -> str:
    words = text.split()
    if len(words) == 2 and words[0] == "json":
        value = _lookup(words[1], data, strict=True)
        if isinstance(value, dict):  # methods (callables) are not data
            value = {k: v for k, v in value.items() if not callable(v)}
        return json.dumps(value, separators=(",", ":"))
    if len(words) == 1:
        value = _lookup(words[0], data, strict=False)
        return "<no value>" if value is _MISSING else go_format(value)
    if len(words) == 2 and len(words[1]) >= 2 and words[1][0] == words[1][-1] == '"':
        method = _lookup(words[0], data, strict=False)
        if callable(method):
            return go_format(method(words[1][1:-1]))
    raise UserError(f"template: unsupported action {{{{{text}}}}} (use {{{{.Field}}}} or "
                    "{{json .Field}})")


def _lookup(path: str, data: Any, *, strict: bool) -> Any:
    if not path.startswith("."):
        raise UserError(f"template: unsupported action {{{{{path}}}}}")
    value = data
    for name in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and name in value:
            value = value[name]
        elif isinstance(value, dict) or value is None:
            return None if strict else _MISSING
        else:
            raise UserError(f"template: can't evaluate field {name} in {path}")
    return value


def go_format(value: Any) -> str:
    """A value as Go's ``fmt.Print`` shows it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
