"""Compile a FHIRPath syntax tree into nested Python closures.

A view's expressions are compiled once and then run on every resource, possibly millions of times in
a Spark worker, so everything that can be decided from the expression alone is decided here: function
names and arities are checked, constants are folded in, and ``value.ofType(Quantity)`` becomes a direct
lookup of ``valueQuantity``. At run time a compiled expression is ``fn(focus, env) -> list``: `focus`
is the input collection (``$this``), `env` carries the resource and ``%rowIndex``.

Invocations (the right-hand side of ``.``) compile to ``inv(input, focus, env)``: `input` is what the
left-hand side produced, `focus` is the ``$this`` of the enclosing expression, which is what function
arguments such as ``join(%sep)`` are evaluated against.
"""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import FhirPathError
from . import _ops
from ._model import choice_keys, matches_type, normalize_type, type_key_suffix
from ._parser import parse

__all__ = ["Env", "CompiledPath", "compile_path", "Compiler"]

Fn = Callable[[list, "Env"], list]
Inv = Callable[[list, list, "Env"], list]

#: Constants every expression may use, besides the view's own and %rowIndex / %resource.
_BUILTIN_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


class Env:
    """Run-time context: the resource under evaluation, ``%rowIndex``, and ``$index`` inside iterations."""

    __slots__ = ("resource", "row_index", "index")

    def __init__(self, resource, row_index: int = 0, index: int | None = None):
        self.resource = resource
        self.row_index = row_index
        self.index = index


class CompiledPath:
    """A compiled FHIRPath expression; call ``evaluate(node)`` or use the raw ``fn`` for speed.

    `fast`, when not None, is ``node -> value``: what a view column gets from ``fn([node], env)`` (None
    for empty, else the only item), computed without collections for the common shapes; it raises
    `Fallback` where ``fn`` must decide (see _fast.py).
    """

    __slots__ = ("expression", "fn", "type_hint", "fast")

    def __init__(self, expression: str, fn: Fn, type_hint: str | None, fast=None):
        self.expression = expression
        self.fn = fn
        self.type_hint = type_hint
        self.fast = fast

    def evaluate(self, node, *, resource=None, row_index: int = 0) -> list:
        """Evaluate on one node (a resource or element); the result is always a list (a collection)."""
        focus = [] if node is None else [node]
        env = Env(resource if resource is not None else node, row_index)
        try:
            return self.fn(focus, env)
        except FhirPathError as exc:
            raise FhirPathError(f"{exc}", expression=self.expression) from None

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"


def _extend(out: list, value) -> None:
    if type(value) is list:
        # JSON arrays hold null only beside `_element` extensions; skip the filter otherwise.
        if None in value:
            out.extend([v for v in value if v is not None])
        else:
            out.extend(value)
    elif value is not None:
        out.append(value)


def _navigate(names: list[str]):
    """One closure for a chain of member steps (``code.coding.system``): fewer calls per resource."""
    steps = [(name, choice_keys(name)) for name in names]
    if len(steps) == 1:
        return _navigate_one(*steps[0])

    def navigate(items: list, env=None) -> list:  # also an `Fn` itself: no wrapping lambda per call
        for name, candidates in steps:
            out: list = []
            for item in items:
                if type(item) is not dict:
                    continue
                value = item.get(name)
                if value is None:
                    for key in item:
                        if key in candidates:
                            value = item[key]
                            break
                    else:
                        continue
                if type(value) is list:
                    if None in value:
                        out.extend([v for v in value if v is not None])
                    else:
                        out.extend(value)
                else:
                    out.append(value)
            if not out:
                return out
            items = out
        return items

    return navigate


def _navigate_one(name: str, candidates: frozenset):
    """`_navigate` of a single member step (``status``, ``subject``, ``system`` inside where()), the most
    common path: the same result without the loop over steps, and without a loop over one input item."""

    def lookup(item) -> list:
        value = item.get(name)
        if value is None:
            for key in item:
                if key in candidates:
                    value = item[key]
                    break
            else:
                return []
        if type(value) is list:
            return [v for v in value if v is not None] if None in value else list(value)
        return [value]

    def navigate(items: list, env=None) -> list:  # also an `Fn` itself: no wrapping lambda per call
        if len(items) == 1:
            item = items[0]
            return lookup(item) if type(item) is dict else []
        out: list = []
        for item in items:
            if type(item) is dict:
                out.extend(lookup(item))
        return out

    return navigate


def _member_chain(node):
    """Split ``x.a.b.c`` into (x or None, [a, b, c]) when the steps are plain member names."""
    names = []
    while node[0] == "dot" and node[2][0] == "id":
        names.append(node[2][1])
        node = node[1]
    if node[0] == "id":
        names.append(node[1])
        node = None
    names.reverse()
    return node, names


def uses_variable(node, name: str) -> bool:
    """Whether the tree refers to ``$name`` anywhere (decides if iterations must track $index)."""
    if isinstance(node, list):
        return any(uses_variable(n, name) for n in node)
    if not isinstance(node, tuple):
        return False
    if node[0] == "var" and node[1] == name:
        return True
    return any(uses_variable(child, name) for child in node[1:])


def type_name_of(node, expression: str) -> str:
    """The type named by a function argument: ``Quantity``, ``FHIR.Quantity``, or ``'Quantity'``."""
    if node[0] == "id":
        return normalize_type(node[1])
    if node[0] == "dot" and node[1][0] == "id" and node[2][0] == "id":
        return normalize_type(f"{node[1][1]}.{node[2][1]}")
    if node[0] == "lit" and isinstance(node[1], str):
        return normalize_type(node[1])
    raise FhirPathError("expected a type name as argument", expression=expression)


class Compiler:
    """Compiles one expression; `constants` are the view's constants (name -> value)."""

    def __init__(self, expression: str, constants: dict | None = None):
        self.expression = expression
        self.constants = constants or {}

    def error(self, message: str) -> FhirPathError:
        return FhirPathError(message, expression=self.expression)

    # -- expressions -------------------------------------------------------------------------
    def compile(self, node) -> tuple[Fn, str | None]:
        kind = node[0]
        method = getattr(self, "_c_" + kind)
        return method(node)

    def _c_lit(self, node):
        value = node[1]
        if value is None:
            return (lambda focus, env: []), None
        hint = {bool: "boolean", int: "integer", float: "decimal", str: "string"}[type(value)]
        return (lambda focus, env: [value]), hint

    def _c_date(self, node):
        value, kind = node[1], node[2]
        return (lambda focus, env: [value]), kind

    def _c_qty(self, node):
        number, unit = node[1], node[2]
        return (lambda focus, env: [{"value": number, "unit": unit, "code": unit}]), "Quantity"

    def _c_const(self, node):
        name = node[1]
        if name == "rowIndex":
            return (lambda focus, env: [env.row_index]), "integer"
        if name in ("resource", "rootResource", "context"):
            return (lambda focus, env: [env.resource] if env.resource is not None else []), None
        if name in self.constants:
            value = self.constants[name]
            if value is None:
                return (lambda focus, env: []), None
            return (lambda focus, env: [value]), None
        if name in _BUILTIN_CONSTANTS:
            value = _BUILTIN_CONSTANTS[name]
            return (lambda focus, env: [value]), "uri"
        known = ", ".join(sorted(self.constants)) or "none"
        raise self.error(f"undefined constant %{name} (constants defined by the view: {known})")

    def _c_var(self, node):
        name = node[1]
        if name == "this":
            return (lambda focus, env: focus), None
        if name == "index":
            return (lambda focus, env: [] if env.index is None else [env.index]), "integer"
        raise self.error("$total is only meaningful inside aggregate(), which views do not support")

    def _c_id(self, node):
        if node[0] == "id" and not node[1][:1].isupper():
            return _navigate([node[1]]), None
        inv, hint = self.invocation(node, None, term=True)
        return (lambda focus, env: inv(focus, focus, env)), hint

    _c_call = _c_id

    def _c_dot(self, node):
        left, right = node[1], node[2]
        base, names = _member_chain(node)
        if names and (base is not None or not names[0][:1].isupper()) and len(names) >= 2 - (base is not None):
            navigate = _navigate(names)
            if base is None:
                return navigate, None
            bf, _ = self.compile(base)
            return (lambda focus, env: navigate(bf(focus, env))), None
        typed = self._typed_member(left, right)
        if typed is not None:
            return typed
        lf, lhint = self.compile(left)
        inv, hint = self.invocation(right, lhint, term=False)
        return (lambda focus, env: inv(lf(focus, env), focus, env)), hint

    def _c_index(self, node):
        lf, _ = self.compile(node[1])
        ef, _ = self.compile(node[2])

        def index(focus, env):
            coll = lf(focus, env)
            i = _ops.singleton(ef(focus, env), "the indexer [ ]")
            if i is None:
                return []
            if type(i) is not int:
                raise FhirPathError("the indexer [ ] expects an integer")
            return [coll[i]] if 0 <= i < len(coll) else []

        return index, None

    def _c_neg(self, node):
        f, hint = self.compile(node[1])

        def neg(focus, env):
            v = _ops.singleton(f(focus, env), "unary '-'")
            if v is None:
                return []
            if type(v) is bool or not isinstance(v, (int, float)):
                raise FhirPathError("unary '-' expects a number")
            return [-v]

        return neg, hint

    def _c_type(self, node):
        op, operand, type_name = node[1], node[2], normalize_type(node[3])
        typed = self._typed_member(operand, ("call", op, [("id", type_name)]))
        if typed is not None:
            return typed
        f, hint = self.compile(operand)
        check = self._type_check(op, type_name, hint)
        return (lambda focus, env: check(f(focus, env))), (type_name if op == "as" else "boolean")

    def _c_op(self, node):
        from ._operators import compile_operator
        return compile_operator(self, node)

    # -- invocations ---------------------------------------------------------------------------
    def invocation(self, node, input_hint: str | None, *, term: bool) -> tuple[Inv, str | None]:
        if node[0] == "id":
            return self._member(node[1], term), None
        if node[0] == "var":
            f, hint = self._c_var(node)
            return (lambda inp, focus, env: f(focus, env)), hint
        if node[0] == "call":
            from ._functions import FUNCTIONS
            name, args = node[1], node[2]
            spec = FUNCTIONS.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, sorted(FUNCTIONS), n=1)
                hint = f" (did you mean {close[0]}()?)" if close else ""
                raise self.error(f"unknown function {name}(){hint}")
            min_args, max_args, build = spec
            if not min_args <= len(args) <= max_args:
                expected = str(min_args) if min_args == max_args else f"{min_args} to {max_args}"
                raise self.error(f"{name}() takes {expected} argument(s), found {len(args)}")
            return build(self, args, input_hint)
        raise self.error("expected a name or a function after '.'")

    def _member(self, name: str, term: bool) -> Inv:
        candidates = choice_keys(name)
        type_filter = term and name[:1].isupper()

        def member(inp, focus, env):
            out: list = []
            for item in inp:
                if type(item) is not dict:
                    continue
                if type_filter and item.get("resourceType") == name:
                    # `Patient.name` starts with the resource type, which selects the resource itself.
                    out.append(item)
                    continue
                value = item.get(name)
                if value is None:
                    # A choice element (`value` -> `valueQuantity`) is stored under a typed key.
                    for key in item:
                        if key in candidates:
                            value = item[key]
                            break
                    else:
                        continue
                _extend(out, value)
            return out

        return member

    def _typed_member(self, left, right):
        """Compile ``x.value.ofType(T)`` (or ``as``/``is``) into a lookup of the typed choice key."""
        if right[0] != "call" or right[1] not in ("ofType", "as", "is") or len(right[2]) != 1:
            return None
        if left[0] == "id" and not left[1][:1].isupper():
            source, name = None, left[1]
        elif left[0] == "dot" and left[2][0] == "id":
            source, name = left[1], left[2][1]
        else:
            return None
        type_name = type_name_of(right[2][0], self.expression)
        key = name + type_key_suffix(type_name)
        is_check = right[1] == "is"

        def typed(inp):
            out: list = []
            for item in inp:
                if type(item) is not dict:
                    continue
                value = item.get(key)
                if value is None:
                    value = item.get(name)
                    if value is None:
                        continue
                    if type(value) is list:
                        value = [v for v in value if v is not None and matches_type(v, type_name)]
                    elif not matches_type(value, type_name):
                        continue
                _extend(out, value)
            return out

        if is_check:
            def check(inp):
                got = typed(inp)
                return [bool(got)] if inp else []
        else:
            check = typed
        hint = "boolean" if is_check else type_name
        if source is None:
            return (lambda focus, env: check(focus)), hint
        sf, _ = self.compile(source)
        return (lambda focus, env: check(sf(focus, env))), hint

    def _type_check(self, op: str, type_name: str, hint: str | None):
        """Run-time ``is``/``as``/``ofType`` on values whose type is not known from a choice key."""
        def known(v) -> bool:
            return hint == type_name or matches_type(v, type_name)

        if op == "is":
            def is_(coll):
                v = _ops.singleton(coll, f"is {type_name}")
                return [] if v is None else [known(v)]
            return is_
        if op == "as":
            def as_(coll):
                v = _ops.singleton(coll, f"as {type_name}")
                return [v] if v is not None and known(v) else []
            return as_
        return lambda coll: [v for v in coll if known(v)]


def compile_path(expression: str, constants: dict | None = None) -> CompiledPath:
    """Parse and compile a FHIRPath expression; `constants` supply ``%name`` values."""
    from ._fast import compile_fast

    tree = parse(expression)
    compiler = Compiler(expression, constants)
    fn, hint = compiler.compile(tree)
    return CompiledPath(expression, fn, hint, compile_fast(tree, compiler))
