"""Tokenizer for FHIRPath (the grammar of https://hl7.org/fhirpath/, section "Lexical elements")."""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import FhirPathError

__all__ = ["Token", "tokenize"]


class Token(NamedTuple):
    kind: str  # num | str | id | date | time | datetime | const | var | op | eof
    value: object
    pos: int


_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

# Longest operators first so that '<=' wins over '<'.
_OPERATORS = ("<=", ">=", "!=", "!~", "{}", ".", "[", "]", "(", ")", ",", "+", "-", "*", "/", "&", "|",
              "<", ">", "=", "~")

_WS = re.compile(r"\s+|//[^\n]*|/\*.*?\*/", re.S)
_NUMBER = re.compile(r"\d+(\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TIME = r"\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?"
_TZ = r"(Z|[+-]\d{2}:\d{2})?"
_DATETIME = re.compile(r"@(\d{4}(-\d{2}(-\d{2})?)?)T(" + _TIME + _TZ + r")?")
_DATE = re.compile(r"@\d{4}(-\d{2}(-\d{2})?)?")
_TIME_LIT = re.compile(r"@T" + _TIME)


def _read_quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Read a quoted string or delimited identifier beginning at `start`; return (value, end)."""
    out = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6] or ""):
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            if nxt not in _ESCAPES:
                raise FhirPathError(f"unknown escape sequence '\\{nxt}'", expression=text, position=i)
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FhirPathError(f"unterminated {quote}-quoted text", expression=text, position=start)


def tokenize(text: str) -> list[Token]:
    """Split a FHIRPath expression into tokens; raise FhirPathError on characters outside the grammar."""
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        m = _WS.match(text, i)
        if m:
            i = m.end()
            continue
        ch = text[i]
        if ch == "'":
            value, i2 = _read_quoted(text, i, "'")
            tokens.append(Token("str", value, i))
            i = i2
        elif ch == "`":
            value, i2 = _read_quoted(text, i, "`")
            tokens.append(Token("id", value, i))
            i = i2
        elif ch.isdigit():
            m = _NUMBER.match(text, i)
            lexeme = m.group(0)
            tokens.append(Token("num", lexeme, i))
            i = m.end()
        elif ch == "@":
            for kind, rx in (("time", _TIME_LIT), ("datetime", _DATETIME), ("date", _DATE)):
                m = rx.match(text, i)
                if m:
                    tokens.append(Token(kind, m.group(0)[2:] if kind == "time" else m.group(0)[1:], i))
                    i = m.end()
                    break
            else:
                raise FhirPathError("invalid date/time literal", expression=text, position=i)
        elif ch == "%":
            if i + 1 < n and text[i + 1] in "`'":
                value, i2 = _read_quoted(text, i + 1, text[i + 1])
            else:
                m = _IDENT.match(text, i + 1)
                if not m:
                    raise FhirPathError("'%' must be followed by a constant name", expression=text, position=i)
                value, i2 = m.group(0), m.end()
            tokens.append(Token("const", value, i))
            i = i2
        elif ch == "$":
            m = _IDENT.match(text, i + 1)
            if not m or m.group(0) not in ("this", "index", "total"):
                raise FhirPathError("unknown special variable (expected $this, $index or $total)",
                                    expression=text, position=i)
            tokens.append(Token("var", m.group(0), i))
            i = m.end()
        elif ch.isalpha() or ch == "_":
            m = _IDENT.match(text, i)
            tokens.append(Token("id", m.group(0), i))
            i = m.end()
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    # '{ }' with blanks inside is still the empty collection.
                    tokens.append(Token("op", op, i))
                    i += len(op)
                    break
            else:
                if ch == "{":
                    m = re.compile(r"\{\s*\}").match(text, i)
                    if m:
                        tokens.append(Token("op", "{}", i))
                        i = m.end()
                        continue
                raise FhirPathError(f"unexpected character {ch!r}", expression=text, position=i)
    tokens.append(Token("eof", None, n))
    return tokens
