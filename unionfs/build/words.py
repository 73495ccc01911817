"""Variable expansion and word splitting of instruction arguments, as docker's builder does.

``$NAME``, ``${NAME}``, ``${NAME:-default}``, ``${NAME:+alternative}`` (and the forms without
``:``) are replaced from the build's variables; single quotes keep text literal, double quotes
keep spaces, the escape character keeps the next character literal. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from unionfs.errors import UserError


def split(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """``text`` expanded and split into words at unquoted whitespace."""
    return _Lexer(text, env, escape).words()


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """``text`` expanded as one word (whitespace kept, quotes removed)."""
    return _Lexer(text, env, escape).words(split=False)[0]


def key_values(text: str, env: Mapping[str, str], escape: str, what: str
               ) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` or the old one-pair form ``K some value`` (ENV, LABEL)."""
    words = split(text, env, escape)
    if not words:
        raise UserError(f"{what} requires at least one argument")
    if "=" not in words[0]:
        key, _, rest = text.strip().partition(" ")
        if not rest.strip():
            raise UserError(f"{what} {key} needs a value ({key}=VALUE)")
        return [(expand(key, env, escape), expand(rest.strip(), env, escape))]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UserError(f"{what} expects KEY=VALUE, got {word!r}")
        pairs.append((key, value))
    return pairs


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text, self.env, self.escape, self.pos = text, env, escape, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def words(self, *, split: bool = True) -> list[str]:
        out: list[str] = []
        word: list[str] = []
        started = False
        while self.pos < len(self.text):
            ch = self.take()
            if split and ch.isspace():
                if started:
                    out.append("".join(word))
                    word, started = [], False
                continue
            started = True
            if ch == self.escape:
                word.append(self.take())
            elif ch == "'":
                word.append(self._until("'"))
            elif ch == '"':
                word.append(self._double_quoted())
            elif ch == "$":
                word.append(self._variable())
            else:
                word.append(ch)
        if started or not split:
            out.append("".join(word))
        return out

    def _until(self, end: str) -> str:
        start = self.pos
        found = self.text.find(end, start)
        if found < 0:
            raise UserError(f"unterminated quote in {self.text!r}")
        self.pos = found + 1
        return self.text[start:found]

    def _double_quoted(self) -> str:
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise UserError(f"unterminated quote in {self.text!r}")
            ch = self.take()
            if ch == '"':
                return "".join(out)
            if ch == self.escape and self.peek() in ('"', "$", self.escape):
                out.append(self.take())
            elif ch == "$":
                out.append(self._variable())
            else:
                out.append(ch)

    def _variable(self) -> str:
        if self.peek() == "{":
            self.take()
            close = self.text.find("}", self.pos)
            if close < 0:
                raise UserError(f"missing '}}' in {self.text!r}")
            body = self.text[self.pos:close]
            self.pos = close + 1
            return self._braced(body)
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.pos += 1
        name = self.text[start:self.pos]
        return self.env.get(name, "") if name else "$"

    def _braced(self, body: str) -> str:
        for op in (":-", ":+", "-", "+"):
            name, sep, word = body.partition(op)
            if sep and name.replace("_", "a").isalnum():
                value = self.env.get(name)
                empty = value is None or (op.startswith(":") and value == "")
                word = expand(word, self.env, self.escape)
                if op.endswith("-"):
                    return word if empty else str(value)
                return "" if empty else word
        if not body.replace("_", "a").isalnum():
            raise UserError(f"bad substitution: ${{{body}}}")
        return self.env.get(body, "")
