"""The FHIRPath function library: what SQL-on-FHIR v2 requires, plus common extras.

Required by the specification: where, exists, empty, first, extension, join, ofType, lowBoundary,
highBoundary, not, getResourceKey, getReferenceKey. The others (last, count, select, iif, string and math
functions, ...) come from FHIRPath itself and cost nothing until a view uses them.

Each entry of FUNCTIONS is ``name -> (min_args, max_args, build)``; ``build(compiler, args, input_hint)``
returns ``(inv, result_type_hint)`` where ``inv(input, focus, env) -> list``.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from ..errors import FhirPathError
from . import _ops
from ._compile import Env, type_name_of, uses_variable
from ._model import high_boundary, low_boundary, matches_type

__all__ = ["FUNCTIONS", "reference_key", "resource_key"]

FUNCTIONS: dict = {}


def _register(name: str, min_args: int = 0, max_args: int | None = None):
    def deco(build):
        FUNCTIONS[name] = (min_args, min_args if max_args is None else max_args, build)
        return build
    return deco


def _simple(name: str, fn, hint: str | None = None):
    """A function of its input collection alone."""
    FUNCTIONS[name] = (0, 0, lambda c, args, h: ((lambda inp, focus, env: fn(inp)), hint))


def _iterator(compiler, node):
    """Compile `node` to run once per input item, with that item as $this (and $index when used)."""
    cf, _ = compiler.compile(node)
    if uses_variable(node, "index"):
        def each(item, i, env):
            return cf([item], Env(env.resource, env.row_index, i))
    else:
        def each(item, i, env):
            return cf([item], env)
    return each


def _single_arg(compiler, node, what: str):
    """Compile an argument evaluated once against the enclosing $this, expected to be one item."""
    cf, _ = compiler.compile(node)

    def value(focus, env):
        return _ops.singleton(cf(focus, env), what)
    return value


# -- existence ---------------------------------------------------------------------------------------
_simple("empty", lambda inp: [not inp], "boolean")
_simple("count", lambda inp: [len(inp)], "integer")
_simple("hasValue", lambda inp: [len(inp) == 1 and type(inp[0]) is not dict], "boolean")
_simple("distinct", _ops.distinct)
_simple("isDistinct", lambda inp: [len(_ops.distinct(inp)) == len(inp)], "boolean")
_simple("allTrue", lambda inp: [all(v is True for v in inp)], "boolean")
_simple("anyTrue", lambda inp: [any(v is True for v in inp)], "boolean")
_simple("allFalse", lambda inp: [all(v is False for v in inp)], "boolean")
_simple("anyFalse", lambda inp: [any(v is False for v in inp)], "boolean")


@_register("exists", 0, 1)
def _exists(c, args, hint):
    if not args:
        return (lambda inp, focus, env: [bool(inp)]), "boolean"
    each = _iterator(c, args[0])

    def exists(inp, focus, env):
        for i, item in enumerate(inp):
            if _ops.to_bool(each(item, i, env), "exists() criteria") is True:
                return [True]
        return [False]
    return exists, "boolean"


@_register("all", 1)
def _all(c, args, hint):
    each = _iterator(c, args[0])

    def all_(inp, focus, env):
        return [all(_ops.to_bool(each(item, i, env), "all() criteria") is True for i, item in enumerate(inp))]
    return all_, "boolean"


# -- filtering and projection ------------------------------------------------------------------------
@_register("where", 1)
def _where(c, args, hint):
    # `to_bool(criteria) is True`, unrolled: one item that is True or not a boolean keeps the item; an
    # empty result drops it; several items are an error, which to_bool raises.
    if uses_variable(args[0], "index"):
        each = _iterator(c, args[0])

        def where(inp, focus, env):
            out = []
            for i, item in enumerate(inp):
                r = each(item, i, env)
                if r:
                    if len(r) > 1:
                        _ops.to_bool(r, "where() criteria")
                    v = r[0]
                    if v is True or type(v) is not bool:
                        out.append(item)
            return out
        return where, hint

    criteria, _ = c.compile(args[0])

    def where_(inp, focus, env):  # without $index: the criteria called directly, one call less per item
        out = []
        for item in inp:
            r = criteria([item], env)
            if r:
                if len(r) > 1:
                    _ops.to_bool(r, "where() criteria")
                v = r[0]
                if v is True or type(v) is not bool:
                    out.append(item)
        return out

    member_test = _member_equals_string(c, args[0])
    if member_test is None:
        return where_, hint
    name, test = member_test

    def where_member(inp, focus, env):
        # `where(system = 'x')`: an item whose member is one string is judged on the spot, with the
        # operator's own test; anything else (absent, a list, a choice element...) by the general criteria
        out = []
        for item in inp:
            value = item.get(name) if type(item) is dict else None
            if type(value) is str:
                if test(value) is True:
                    out.append(item)
            elif where_([item], focus, env):
                out.append(item)
        return out
    return where_member, hint


def _member_equals_string(c, node):
    """(member name, test) when `node` is ``member = 'text'`` or ``member != %constant``, else None."""
    if node[0] != "op" or node[1] not in ("=", "!=") or node[2][0] != "id" or node[2][1][:1].isupper():
        return None
    from ._operators import string_constant, string_test

    const = string_constant(c, node[3])
    return None if const is None else (node[2][1], string_test(node[1] == "!=", const))


@_register("select", 1)
def _select(c, args, hint):
    each = _iterator(c, args[0])

    def select(inp, focus, env):
        out: list = []
        for i, item in enumerate(inp):
            out.extend(each(item, i, env))
        return out
    return select, None


@_register("repeat", 1)
def _repeat(c, args, hint):
    each = _iterator(c, args[0])

    def repeat(inp, focus, env):
        out: list = []
        queue = list(inp)
        while queue:
            nxt: list = []
            for i, item in enumerate(queue):
                for child in each(item, i, env):
                    if not _ops.contains_item(out, child):
                        out.append(child)
                        nxt.append(child)
            queue = nxt
        return out
    return repeat, None


@_register("ofType", 1)
def _of_type(c, args, hint):
    type_name = type_name_of(args[0], c.expression)
    return (lambda inp, focus, env: [v for v in inp if matches_type(v, type_name)]), type_name


@_register("as", 1)
def _as(c, args, hint):
    type_name = type_name_of(args[0], c.expression)

    def as_(inp, focus, env):
        v = _ops.singleton(inp, f"as({type_name})")
        return [v] if v is not None and matches_type(v, type_name) else []
    return as_, type_name


@_register("is", 1)
def _is(c, args, hint):
    type_name = type_name_of(args[0], c.expression)

    def is_(inp, focus, env):
        v = _ops.singleton(inp, f"is({type_name})")
        return [] if v is None else [matches_type(v, type_name)]
    return is_, "boolean"


# -- subsetting --------------------------------------------------------------------------------------
_simple("first", lambda inp: inp[:1])
_simple("last", lambda inp: inp[-1:])
_simple("tail", lambda inp: inp[1:])


@_register("single")
def _single(c, args, hint):
    return (lambda inp, focus, env: [] if not inp else [_ops.singleton(inp, "single()")]), hint


def _int_arg_function(name: str, apply):
    @_register(name, 1)
    def build(c, args, hint):
        value = _single_arg(c, args[0], f"{name}()")

        def fn(inp, focus, env):
            n = value(focus, env)
            if n is None:
                return []
            if type(n) is not int:
                raise FhirPathError(f"{name}() expects an integer")
            return apply(inp, n)
        return fn, hint


_int_arg_function("skip", lambda inp, n: inp[max(n, 0):])
_int_arg_function("take", lambda inp, n: inp[:max(n, 0)])


def _collection_function(name: str, apply):
    @_register(name, 1)
    def build(c, args, hint):
        other, _ = c.compile(args[0])
        return (lambda inp, focus, env: apply(inp, other(focus, env))), hint


_collection_function("union", lambda a, b: _ops.distinct(a + b))
_collection_function("combine", lambda a, b: a + b)
_collection_function("intersect", lambda a, b: _ops.distinct([x for x in a if _ops.contains_item(b, x)]))
_collection_function("exclude", lambda a, b: [x for x in a if not _ops.contains_item(b, x)])
_collection_function("subsetOf", lambda a, b: [all(_ops.contains_item(b, x) for x in a)])
_collection_function("supersetOf", lambda a, b: [all(_ops.contains_item(a, x) for x in b)])


# -- boolean and conditional -------------------------------------------------------------------------
@_register("not")
def _not(c, args, hint):
    def not_(inp, focus, env):
        b = _ops.to_bool(inp, "not()")
        return [] if b is None else [not b]
    return not_, "boolean"


@_register("iif", 2, 3)
def _iif(c, args, hint):
    crit, _ = c.compile(args[0])
    then, then_hint = c.compile(args[1])
    other = c.compile(args[2])[0] if len(args) == 3 else (lambda focus, env: [])

    def iif(inp, focus, env):
        # iif() evaluates against its input when it has one (`x.iif(...)`), else the enclosing $this.
        ctx = inp
        if _ops.to_bool(crit(ctx, env), "iif() criterion") is True:
            return then(ctx, env)
        return other(ctx, env)
    return iif, then_hint


FUNCTIONS["trace"] = (1, 2, lambda c, args, h: ((lambda inp, focus, env: inp), h))


# -- conversion --------------------------------------------------------------------------------------
def _to_string(v):
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is float:
        return repr(v)
    if type(v) in (int, str, Decimal):
        return str(v)
    if type(v) is dict and "value" in v:  # Quantity
        unit = v.get("code") or v.get("unit")
        return f"{_to_string(v['value'])} '{unit}'" if unit else _to_string(v["value"])
    return None


def _to_integer(v):
    if type(v) is bool:
        return int(v)
    if type(v) is int:
        return v
    if type(v) is str and re.fullmatch(r"[+-]?\d+", v):
        return int(v)
    return None


def _to_decimal(v):
    if type(v) is bool:
        return 1.0 if v else 0.0
    if type(v) in (int, float):
        return float(v)
    if type(v) is Decimal:
        return float(v)
    if type(v) is str and re.fullmatch(r"[+-]?\d+(\.\d+)?", v):
        return float(v)
    return None


def _to_boolean(v):
    if type(v) is bool:
        return v
    if type(v) is str:
        low = v.lower()
        if low in ("true", "t", "yes", "y", "1", "1.0"):
            return True
        if low in ("false", "f", "no", "n", "0", "0.0"):
            return False
    if type(v) in (int, float) and v in (0, 1):
        return bool(v)
    return None


def _conversion(name: str, convert, hint: str):
    def fn(inp):
        v = _ops.singleton(inp, f"{name}()")
        if v is None:
            return []
        r = convert(v)
        return [] if r is None else [r]
    _simple(name, fn, hint)
    check_name = "convertsTo" + name[2:]

    def check(inp):
        v = _ops.singleton(inp, f"{check_name}()")
        return [] if v is None else [convert(v) is not None]
    _simple(check_name, check, "boolean")


_conversion("toString", _to_string, "string")
_conversion("toInteger", _to_integer, "integer")
_conversion("toDecimal", _to_decimal, "decimal")
_conversion("toBoolean", _to_boolean, "boolean")


# -- strings -----------------------------------------------------------------------------------------
def _string_function(name: str, nargs: int, apply, hint: str | None = "string", max_args: int | None = None):
    @_register(name, nargs, max_args)
    def build(c, args, h):
        arg_fns = [_single_arg(c, a, f"{name}()") for a in args]
        from ._operators import string_constant

        constants = [string_constant(c, a) for a in args]
        if args and all(type(v) is str for v in constants):
            def fn_const(inp, focus, env):  # `startsWith('urn:')`: the arguments are known, not evaluated per item
                s = _ops.singleton(inp, f"{name}()")
                if s is None:
                    return []
                if type(s) is not str:
                    raise FhirPathError(f"{name}() expects a string input, found {type(s).__name__}")
                r = apply(s, *constants)
                return [] if r is None else [r]
            return fn_const, hint

        def fn(inp, focus, env):
            s = _ops.singleton(inp, f"{name}()")
            if s is None:
                return []
            if type(s) is not str:
                raise FhirPathError(f"{name}() expects a string input, found {type(s).__name__}")
            values = [f(focus, env) for f in arg_fns]
            if any(v is None for v in values):
                return []
            r = apply(s, *values)
            return [] if r is None else [r]
        return fn, hint


_string_function("startsWith", 1, lambda s, p: s.startswith(p), "boolean")
_string_function("endsWith", 1, lambda s, p: s.endswith(p), "boolean")
_string_function("contains", 1, lambda s, p: p in s, "boolean")
_string_function("indexOf", 1, lambda s, p: s.find(p), "integer")
_string_function("upper", 0, str.upper)
_string_function("lower", 0, str.lower)
_string_function("trim", 0, str.strip)
_string_function("length", 0, len, "integer")
_string_function("replace", 2, lambda s, a, b: s.replace(a, b))
_string_function("matches", 1, lambda s, rx: re.search(rx, s, re.S) is not None, "boolean")
_string_function("replaceMatches", 2, lambda s, rx, sub: re.sub(rx, re.sub(r"\$(\d+)", r"\\\1", sub), s))
_string_function(
    "substring", 1,
    lambda s, start, length=None: None if start < 0 or start >= len(s) else (
        s[start:] if length is None else s[start:start + max(length, 0)]),
    max_args=2,
)
FUNCTIONS["toChars"] = (0, 0, lambda c, args, h: (
    (lambda inp, focus, env: list(_ops.singleton(inp, "toChars()") or "")), "string"))


@_register("split", 1)
def _split(c, args, hint):
    sep = _single_arg(c, args[0], "split()")

    def split(inp, focus, env):
        s = _ops.singleton(inp, "split()")
        d = sep(focus, env)
        if s is None or d is None:
            return []
        return s.split(d) if d else list(s)
    return split, "string"


@_register("join", 0, 1)
def _join(c, args, hint):
    sep = _single_arg(c, args[0], "join()") if args else (lambda focus, env: "")

    def join(inp, focus, env):
        d = sep(focus, env) or ""
        return [d.join(v if type(v) is str else (_to_string(v) or "") for v in inp)]
    return join, "string"


# -- math --------------------------------------------------------------------------------------------
def _math(name: str, apply, hint=None):
    def fn(inp):
        v = _ops.singleton(inp, f"{name}()")
        if v is None:
            return []
        if type(v) is bool or not isinstance(v, (int, float, Decimal)):
            raise FhirPathError(f"{name}() expects a number")
        r = apply(v)
        return [] if r is None else [r]
    _simple(name, fn, hint)


_math("abs", abs)
_math("ceiling", lambda v: math.ceil(v), "integer")
_math("floor", lambda v: math.floor(v), "integer")
_math("truncate", lambda v: math.trunc(v), "integer")
_math("sqrt", lambda v: math.sqrt(v) if v >= 0 else None, "decimal")
_math("exp", lambda v: math.exp(v), "decimal")
_math("ln", lambda v: math.log(v) if v > 0 else None, "decimal")


@_register("round", 0, 1)
def _round(c, args, hint):
    places = _single_arg(c, args[0], "round()") if args else (lambda focus, env: 0)

    def round_(inp, focus, env):
        v = _ops.singleton(inp, "round()")
        if v is None:
            return []
        p = places(focus, env) or 0
        d = Decimal(repr(v) if type(v) is float else v).quantize(Decimal(10) ** -p, rounding="ROUND_HALF_UP")
        return [float(d)]
    return round_, "decimal"


# -- tree navigation ---------------------------------------------------------------------------------
def _children(inp):
    out: list = []
    for item in inp:
        if type(item) is dict:
            for key, value in item.items():
                if key == "resourceType" or key.startswith("_"):
                    continue
                if type(value) is list:
                    out.extend(v for v in value if v is not None)
                elif value is not None:
                    out.append(value)
    return out


def _descendants(inp):
    out: list = []
    level = _children(inp)
    while level:
        out.extend(level)
        level = _children(level)
    return out


_simple("children", _children)
_simple("descendants", _descendants)


# -- FHIR-specific -----------------------------------------------------------------------------------
@_register("extension", 1)
def _extension(c, args, hint):
    url_of = _single_arg(c, args[0], "extension()")

    def extension(inp, focus, env):
        url = url_of(focus, env)
        if url is None:
            return []
        out: list = []
        for item in inp:
            if type(item) is dict:
                for ext in item.get("extension") or ():
                    if type(ext) is dict and ext.get("url") == url:
                        out.append(ext)
        return out
    return extension, "Extension"


def resource_key(resource) -> str | None:
    """The key getResourceKey() gives a resource: its logical id (carelake ids are unique across types)."""
    if type(resource) is dict and resource.get("resourceType"):
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    return None


_RELATIVE_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def reference_key(reference, resource_type: str | None = None) -> str | None:
    """The key getReferenceKey() gives a Reference, matching resource_key() of its target.

    Only relative literal references (``Patient/123``, with or without ``/_history/n``) resolve, as the
    specification requires; absolute URLs, ``#contained`` and ``urn:uuid:`` give None (load_resources()
    rewrites a Bundle's ``urn:uuid:`` references to relative ones as it reads them).
    """
    if type(reference) is not dict:
        return None
    ref = reference.get("reference")
    if type(ref) is not str:
        return None
    m = _RELATIVE_REFERENCE.match(ref)
    if m is None:
        return None
    if resource_type is not None and m.group(1) != resource_type:
        return None
    return m.group(2)


@_register("getResourceKey")
def _get_resource_key(c, args, hint):
    def get_resource_key(inp, focus, env):
        out = []
        for item in inp:
            key = resource_key(item)
            if key is not None:
                out.append(key)
        return out
    return get_resource_key, "string"


@_register("getReferenceKey", 0, 1)
def _get_reference_key(c, args, hint):
    resource_type = type_name_of(args[0], c.expression) if args else None

    def get_reference_key(inp, focus, env):
        out = []
        for item in inp:
            key = reference_key(item, resource_type)
            if key is not None:
                out.append(key)
        return out
    return get_reference_key, "string"


def _boundary_function(name: str, bound):
    @_register(name, 0, 1)
    def build(c, args, hint):
        precision = _single_arg(c, args[0], f"{name}()") if args else (lambda focus, env: None)

        def fn(inp, focus, env):
            p = precision(focus, env)
            out = []
            for v in inp:
                r = bound(v, hint, p)
                if r is not None:
                    out.append(r)
            return out
        return fn, hint


_boundary_function("lowBoundary", low_boundary)
_boundary_function("highBoundary", high_boundary)
