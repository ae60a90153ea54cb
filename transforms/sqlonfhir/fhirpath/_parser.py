"""FHIRPath parser: tokens to a small tuple-based syntax tree.

Nodes (first element is the kind):

- ``("lit", value)``: a literal; ``value`` is a Python str, int, float, bool, or None for ``{}``
- ``("date", text, kind)``: a date, dateTime or time literal (kept as text, as FHIR JSON has it)
- ``("qty", number, unit)``: a quantity literal such as ``4 'mg'``
- ``("id", name)``: member navigation (or a type name where one is expected)
- ``("call", name, args)``: a function invocation
- ``("const", name)``: an external constant ``%name``
- ``("var", name)``: ``$this``, ``$index`` or ``$total``
- ``("dot", left, right)``: ``left.right`` where right is an ``id`` or ``call``
- ``("index", left, expr)``: ``left[expr]``
- ``("op", symbol, left, right)``: a binary operator
- ``("neg", operand)``: unary minus
- ``("type", op, operand, type_name)``: ``is`` / ``as`` with a type specifier

Precedence follows the FHIRPath grammar, from loosest to tightest: implies; or xor; and; in contains;
= ~ != !~; < > <= >=; |; is as; + - &; * / div mod; unary + -; then . and [].
"""

from __future__ import annotations

from ..errors import FhirPathError
from ._lexer import Token, tokenize

__all__ = ["parse"]

_BINARY = {
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6,
    "|": 7, "is": 8, "as": 8, "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}
_WORD_OPERATORS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}
_UNARY_POWER = 11


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers -------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> FhirPathError:
        tok = tok or self.peek()
        return FhirPathError(message, expression=self.text, position=tok.pos)

    def expect_op(self, op: str) -> Token:
        tok = self.advance()
        if tok.kind != "op" or tok.value != op:
            found = "end of expression" if tok.kind == "eof" else repr(tok.value)
            raise self.error(f"expected {op!r}, found {found}", tok)
        return tok

    def binary_op(self, tok: Token) -> str | None:
        """The binary operator this token stands for, if it is one."""
        if tok.kind == "op" and tok.value in _BINARY:
            return tok.value
        if tok.kind == "id" and tok.value in _WORD_OPERATORS and self._is_bare_word(tok):
            return tok.value
        return None

    def _is_bare_word(self, tok: Token) -> bool:
        # A back-quoted `and` is an identifier, never an operator.
        return self.text[tok.pos] != "`"

    # -- grammar -------------------------------------------------------------------------------
    def parse(self):
        if self.peek().kind == "eof":
            raise self.error("empty expression")
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(f"unexpected {tok.value!r}", tok)
        return node

    def expression(self, min_power: int):
        left = self.unary()
        while True:
            tok = self.peek()
            op = self.binary_op(tok)
            if op is None:
                return left
            power = _BINARY[op]
            if power <= min_power:
                return left
            self.advance()
            if op in ("is", "as"):
                left = ("type", op, left, self.type_specifier())
            else:
                left = ("op", op, left, self.expression(power))

    def unary(self):
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("+", "-"):
            self.advance()
            operand = self.expression(_UNARY_POWER)
            return operand if tok.value == "+" else ("neg", operand)
        return self.postfix(self.term())

    def postfix(self, node):
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value == ".":
                self.advance()
                node = ("dot", node, self.invocation())
            elif tok.kind == "op" and tok.value == "[":
                self.advance()
                index = self.expression(0)
                self.expect_op("]")
                node = ("index", node, index)
            else:
                return node

    def term(self):
        tok = self.peek()
        if tok.kind == "num":
            self.advance()
            lexeme = tok.value
            value = float(lexeme) if "." in lexeme else int(lexeme)
            nxt = self.peek()
            if nxt.kind == "str":  # quantity literal: 4 'mg'
                self.advance()
                return ("qty", value, nxt.value)
            if nxt.kind == "id" and nxt.value in _CALENDAR_UNITS:
                self.advance()
                return ("qty", value, nxt.value)
            return ("lit", value)
        if tok.kind == "str":
            self.advance()
            return ("lit", tok.value)
        if tok.kind in ("date", "datetime", "time"):
            self.advance()
            return ("date", tok.value, {"date": "date", "datetime": "dateTime", "time": "time"}[tok.kind])
        if tok.kind == "const":
            self.advance()
            return ("const", tok.value)
        if tok.kind == "op" and tok.value == "(":
            self.advance()
            node = self.expression(0)
            self.expect_op(")")
            return node
        if tok.kind == "op" and tok.value == "{}":
            self.advance()
            return ("lit", None)
        if tok.kind == "id" and tok.value in ("true", "false") and self._is_bare_word(tok):
            self.advance()
            return ("lit", tok.value == "true")
        if tok.kind in ("id", "var"):
            return self.invocation()
        if tok.kind == "eof":
            raise self.error("expression ends too early", tok)
        raise self.error(f"unexpected {tok.value!r}", tok)

    def invocation(self):
        tok = self.advance()
        if tok.kind == "var":
            return ("var", tok.value)
        if tok.kind != "id":
            found = "end of expression" if tok.kind == "eof" else repr(tok.value)
            raise self.error(f"expected a name, found {found}", tok)
        nxt = self.peek()
        if nxt.kind == "op" and nxt.value == "(":
            self.advance()
            args = []
            if not (self.peek().kind == "op" and self.peek().value == ")"):
                args.append(self.expression(0))
                while self.peek().kind == "op" and self.peek().value == ",":
                    self.advance()
                    args.append(self.expression(0))
            self.expect_op(")")
            return ("call", tok.value, args)
        return ("id", tok.value)

    def type_specifier(self) -> str:
        tok = self.advance()
        if tok.kind != "id":
            raise self.error("expected a type name", tok)
        name = tok.value
        while self.peek().kind == "op" and self.peek().value == "." and self.tokens[self.i + 1].kind == "id":
            self.advance()
            name += "." + self.advance().value
        return name


_CALENDAR_UNITS = {
    "year", "years", "month", "months", "week", "weeks", "day", "days",
    "hour", "hours", "minute", "minutes", "second", "seconds", "millisecond", "milliseconds",
}


def parse(text: str):
    """Parse one FHIRPath expression; raise FhirPathError (with the position) when it is malformed."""
    if not isinstance(text, str):
        raise FhirPathError(f"expected a FHIRPath expression as a string, found {type(text).__name__}")
    return _Parser(text).parse()
