"""Binary operators: boolean logic, equality, comparison, arithmetic, union and membership."""

from __future__ import annotations

from ..errors import FhirPathError
from . import _ops
from ._compile import _BUILTIN_CONSTANTS

__all__ = ["compile_operator", "string_constant", "string_test"]


def _logic(op: str, lf, rf):
    what = f"operator {op!r}"
    if op == "and":
        def fn(focus, env):
            a = _ops.to_bool(lf(focus, env), what)
            if a is False:
                return [False]
            b = _ops.to_bool(rf(focus, env), what)
            if b is False:
                return [False]
            return [True] if a is True and b is True else []
    elif op == "or":
        def fn(focus, env):
            a = _ops.to_bool(lf(focus, env), what)
            if a is True:
                return [True]
            b = _ops.to_bool(rf(focus, env), what)
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
    elif op == "xor":
        def fn(focus, env):
            a = _ops.to_bool(lf(focus, env), what)
            b = _ops.to_bool(rf(focus, env), what)
            return [] if a is None or b is None else [a != b]
    else:  # implies
        def fn(focus, env):
            a = _ops.to_bool(lf(focus, env), what)
            if a is False:
                return [True]
            b = _ops.to_bool(rf(focus, env), what)
            if b is True:
                return [True]
            if a is True and b is False:
                return [False]
            return []
    return fn


def string_test(negate: bool, const: str):
    """``a = const`` (or ``!=``) for a single string `a`: True, False or None (unknown, so empty), as the
    general operator gives it: `_ops.equal` with its string branch inlined and the constant's half of
    its tests decided once."""
    temporal, colon = const[:4].isdigit(), ":" in const[:3]

    def test(a: str):
        if a == const:
            return not negate
        if not (temporal and a[:4].isdigit() or colon and ":" in a[:3]):
            return negate
        r = _ops.equal(a, const)
        return None if r is None else r != negate
    return test


def _equality_with_string(negate: bool, lf, const: str):
    """``x = 'text'`` (or ``!=``) against a string known when compiling, as in most where() criteria."""
    test = string_test(negate, const)
    right = [const]

    def fn(focus, env):
        left = lf(focus, env)
        if len(left) == 1:
            a = left[0]
            if type(a) is str:
                r = test(a)
                return [] if r is None else [r]
            r = _ops.equal(a, const)
        else:
            r = _ops.collections_equal(left, right)
        if r is None:
            return []
        return [r != negate]
    return fn


def _equality(op: str, lf, rf, const=None):
    if op in ("=", "!=") and type(const) is str:
        return _equality_with_string(op == "!=", lf, const)
    if op in ("=", "!="):
        negate = op == "!="

        def fn(focus, env):
            left = lf(focus, env)
            right = rf(focus, env)
            if len(left) == 1 and len(right) == 1:
                r = _ops.equal(left[0], right[0])
            else:
                r = _ops.collections_equal(left, right)
            if r is None:
                return []
            return [r != negate]
    else:
        negate = op == "!~"

        def fn(focus, env):
            return [_ops.collections_equivalent(lf(focus, env), rf(focus, env)) != negate]
    return fn


_ORDER = {"<": lambda c: c < 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0, ">=": lambda c: c >= 0}


def _comparison(op: str, lf, rf):
    test = _ORDER[op]
    what = f"operator {op!r}"

    def fn(focus, env):
        a = _ops.singleton(lf(focus, env), what)
        if a is None:
            return []
        b = _ops.singleton(rf(focus, env), what)
        if b is None:
            return []
        c = _ops.compare(a, b, op)
        return [] if c is None else [test(c)]
    return fn


def _arith(op: str, lf, rf):
    what = f"operator {op!r}"
    if op == "&":
        def fn(focus, env):
            a = _ops.singleton(lf(focus, env), what)
            b = _ops.singleton(rf(focus, env), what)
            return [("" if a is None else str(a)) + ("" if b is None else str(b))]
        return fn

    def fn(focus, env):
        a = _ops.singleton(lf(focus, env), what)
        if a is None:
            return []
        b = _ops.singleton(rf(focus, env), what)
        if b is None:
            return []
        r = _ops.arithmetic(op, a, b)
        return [] if r is None else [r]
    return fn


def string_constant(compiler, node):
    """The string a literal (``'official'``) or a view constant (``%loinc``) always gives, else None."""
    if node[0] == "lit" and type(node[1]) is str:
        return node[1]
    if node[0] == "const" and node[1] not in ("rowIndex", "resource", "rootResource", "context"):
        value = compiler.constants[node[1]] if node[1] in compiler.constants else _BUILTIN_CONSTANTS.get(node[1])
        return value if type(value) is str else None
    return None


def compile_operator(compiler, node):
    op, left, right = node[1], node[2], node[3]
    lf, lhint = compiler.compile(left)
    rf, rhint = compiler.compile(right)
    if op in ("and", "or", "xor", "implies"):
        return _logic(op, lf, rf), "boolean"
    if op in ("=", "!=", "~", "!~"):
        return _equality(op, lf, rf, string_constant(compiler, right)), "boolean"
    if op in _ORDER:
        return _comparison(op, lf, rf), "boolean"
    if op in ("+", "-", "*", "/", "div", "mod", "&"):
        hint = "string" if op == "&" else ("decimal" if op == "/" else (lhint if lhint == rhint else None))
        return _arith(op, lf, rf), hint
    if op == "|":
        return (lambda focus, env: _ops.distinct(lf(focus, env) + rf(focus, env))), None
    if op in ("in", "contains"):
        item_f, coll_f = (lf, rf) if op == "in" else (rf, lf)

        def member(focus, env):
            item = _ops.singleton(item_f(focus, env), f"operator {op!r}")
            if item is None:
                return []
            return [_ops.contains_item(coll_f(focus, env), item)]
        return member, "boolean"
    raise FhirPathError(f"unsupported operator {op!r}", expression=compiler.expression)
