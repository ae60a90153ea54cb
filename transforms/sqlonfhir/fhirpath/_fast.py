"""A fast path for the FHIRPath shapes views use most: straight from the JSON to one column value.

The general compiler (_compile.py) builds a collection (a list) at every step and runs a closure per
operator; for a column that holds one value most of that work is thrown away. This module compiles
the common shapes into functions ``node -> value`` that walk the parsed JSON directly and stop as soon
as the answer is known (``first()`` needs only the first match):

- member paths ``a.b.c``, choice types ``value.ofType(Quantity)`` (the ``valueQuantity`` key),
  ``getResourceKey()``, ``getReferenceKey(Type)``;
- ``where(criteria)``, ``first()``, and a union under ``first()``: ``(a | b).first()``;
- criteria and boolean columns: ``and``, ``or``, ``= / !=`` against a string constant,
  ``startsWith / endsWith`` of a string constant, ``empty()``, ``exists()``, and a path used as a
  boolean.

A fast function gives what the general expression would as a column value: None for an empty
collection, else its only item (for a boolean expression True, False, or None for empty).

**Exactness.** A fast function handles only plain data, where every step has one obvious outcome. On
anything else it raises `Fallback`, and the caller evaluates the general compiled expression from
scratch, so every result is the general engine's. Fallback cases: a choice element under a typed key
when the plain name is asked for (``valueString`` for ``value``, where the general engine has quirks
with JSON null), a non-object item reaching where(), a compared or tested value that is not one
string, and more than one item where a column or operator expects one.

Stopping early is exact because the general engine never raises in what gets skipped: member steps,
key functions, ``first()`` and ``=``/``!=``/``empty()``/``exists()`` cannot fail. Criteria that can
fail (``startsWith`` on several values, a path as a boolean with several items) mark their path as
`raises`; such a path is walked in full, like the general engine does, before its first item is
taken.

Item order is the general engine's: it goes level by level (all ``coding`` of all ``code``, then
their ``code``), this walks depth first, and both give items in the same document order.
"""

from __future__ import annotations

import functools

from ._compile import type_name_of
from ._functions import _RELATIVE_REFERENCE
from ._model import choice_keys, type_key_suffix
from ._operators import string_constant, string_test

__all__ = ["Fallback", "compile_fast"]


class Fallback(Exception):
    """The data is not plain enough for the fast path: evaluate the general expression instead."""


# -- steps --------------------------------------------------------------------------------------------
# A path is a sequence of steps from one item, each a small tuple the code generator below reads:
#   ("member", name)          JSON member `name`; a list gives each of its non-null entries
#   ("typed", name, type)     ``name.ofType(type)`` read from the typed key (``valueQuantity``), as the
#                             general compiler does
#   ("filter", condition, on_string)
#                             where(): the item itself when condition(item) is True; on_string, when
#                             not None, is (member, expression) deciding it when that member is a string
#   ("resource_key",)         getResourceKey()
#   ("reference_key", type)   getReferenceKey(type), type None for any
def _member_step(name: str) -> tuple:
    return ("member", name)


def _typed_step(name: str, type_name: str) -> tuple:
    return ("typed", name, type_name)


# -- walking a path: generated Python ------------------------------------------------------------------
# A path runs once per resource per column, millions of times. Interpreting its steps costs a Python
# call per step and per item; the generated function walks the JSON in nested blocks with the member
# names as constants. Depth first, which gives the items in the general engine's (level by level)
# order. What the walk does with each item it reaches (the sink) depends on the mode:
_SINKS = {
    # the first item, and stop
    "first": ("", "return {item}", "return None"),
    # the first item, after visiting every item (a path whose criteria can fail in the general engine)
    "first_all": ("found = None", "if found is None:\n    found = {item}", "return found"),
    # the only item; Fallback at a second one, where the general engine has several
    "single": ("found = None", "if found is not None:\n    raise Fallback\nfound = {item}", "return found"),
    # every item
    "all": ("out = []", "out.append({item})", "return out"),
}
#: The sink where no loop over a list encloses it: that item is the only one the walk can reach.
_ALONE_SINKS = {"first": "return {item}", "first_all": "return {item}", "single": "return {item}",
                "all": "return [{item}]"}
_MAX_STEPS = 12  # nested loops: Python allows 20 per function
#: Below this many member steps the code for a member that is not a list is written out apart from
#: the loop over a list (the common case saves building a 1-tuple and a loop); deeper, one loop serves
#: both, so that the code does not double with every step.
_UNROLL_DEPTH = 4


class _Emitter:
    """Writes the body of ``walk(x0)`` for one path and mode; `ns` collects the objects it refers to."""

    def __init__(self, steps: tuple, mode: str):
        self.steps, self.sink, self.alone_sink = steps, _SINKS[mode][1], _ALONE_SINKS[mode]
        self.ns: dict = {"Fallback": Fallback, "match_reference": _RELATIVE_REFERENCE.match}
        self.lines: list[str] = []

    def write(self, indent: str, line: str) -> None:
        self.lines.append(indent + line)

    def emit(self, i: int, item: str, indent: str, depth: int = 0, looped: bool = False) -> None:
        """Code applying steps[i:] to the variable `item`, handing each resulting item to the sink;
        `looped`: inside a loop over a list, where more items may follow."""
        if i == len(self.steps):
            sink = self.sink if looped else self.alone_sink
            for line in sink.format(item=item).split("\n"):
                self.write(indent, line)
            return
        step = self.steps[i]
        getattr(self, "_" + step[0])(i, step, item, indent, depth, looped)

    def _filter(self, i, step, item, indent, depth, looped):
        condition, on_string = step[1], step[2]
        self.ns[f"cond{i}"] = condition
        self.write(indent, f"if type({item}) is not dict:")
        self.write(indent, "    raise Fallback  # where() on a non-object: left to the general engine")
        if on_string is None:
            self.write(indent, f"if cond{i}({item}) is True:")
        else:
            member, expression = on_string
            s = f"s{i}"
            self.write(indent, f"{s} = {item}.get({member!r})")
            self.write(indent, f"if ({expression(s)}) if type({s}) is str else cond{i}({item}) is True:")
        self.emit(i + 1, item, indent + "    ", depth, looped)

    def _resource_key(self, i, step, item, indent, depth, looped):
        value = f"v{i + 1}"  # as resource_key()
        self.write(indent, f"if type({item}) is dict and {item}.get('resourceType'):")
        self.write(indent, f"    {value} = {item}.get('id')")
        self.write(indent, f"    if isinstance({value}, str) and {value}:")
        self.emit(i + 1, value, indent + "        ", depth, looped)

    def _reference_key(self, i, step, item, indent, depth, looped):
        ref, m = f"r{i + 1}", f"m{i + 1}"  # as reference_key()
        same_type = "" if step[1] is None else f" and {m}[1] == {step[1]!r}"
        self.write(indent, f"if type({item}) is dict:")
        self.write(indent, f"    {ref} = {item}.get('reference')")
        self.write(indent, f"    if type({ref}) is str:")
        self.write(indent, f"        {m} = match_reference({ref})")
        self.write(indent, f"        if {m} is not None{same_type}:")
        self.emit(i + 1, f"{m}[2]", indent + "            ", depth, looped)

    def _member(self, i, step, item, indent, depth, looped):
        name = step[1]
        self._lookup(i, item, name, indent, depth, looped)
        # Absent (or null): the general engine then looks for a choice key (`value` -> `valueString`);
        # one being there is rare, and two of its code paths treat its JSON null differently: leave
        # that to it.
        self.ns[f"choices{i}"] = choice_keys(name)
        self.write(indent, f"    if not choices{i}.isdisjoint({item}):")
        self.write(indent, "        raise Fallback")

    def _typed(self, i, step, item, indent, depth, looped):
        name = step[1]
        self._lookup(i, item, name + type_key_suffix(step[2]), indent, depth, looped)
        # An untyped `value`: the general engine checks its JSON type against the one asked for.
        self.write(indent, f"    if {item}.get({name!r}) is not None:")
        self.write(indent, "        raise Fallback")

    def _lookup(self, i, item, key, indent, depth, looped):
        """`item`[key] to the next steps (a list: each non-null entry), ending in the `elif` of the key
        being absent, whose body the caller writes."""
        value, nxt = f"v{i + 1}", f"x{i + 1}"
        self.write(indent, f"if type({item}) is not dict:")
        self.write(indent, "    pass")
        self.write(indent, f"elif ({value} := {item}.get({key!r})) is not None:")
        inner = indent + "    "
        if depth < _UNROLL_DEPTH:
            self.write(inner, f"if type({value}) is not list:")
            self.emit(i + 1, value, inner + "    ", depth + 1, looped)
            self.write(inner, "else:")
            self.write(inner, f"    for {nxt} in {value}:")
        else:
            self.write(inner, f"for {nxt} in ({value} if type({value}) is list else ({value},)):")
            inner = inner[:-4]
        self.write(inner, f"        if {nxt} is not None:")
        self.emit(i + 1, nxt, inner + "            ", depth + 1, True)
        self.write(indent, "else:")


def _walker(steps: tuple, mode: str, label: str):
    """The generated function ``node -> result`` of `steps` in `mode` (a key of _SINKS)."""
    if len(steps) > _MAX_STEPS:
        raise _Unsupported
    before, _, after = _SINKS[mode]
    emitter = _Emitter(steps, mode)
    if before:
        emitter.write("    ", before)
    emitter.emit(0, "x0", "    ")
    emitter.write("    ", after)
    source = "def walk(x0):\n" + "\n".join(emitter.lines) + "\n"
    return _define("walk", source, emitter.ns, label)


@functools.lru_cache(maxsize=512)
def _code(source: str, label: str):
    # Compiling the source is most of the cost of compiling a view; tests and the CLI compile the
    # same expressions again and again.
    return compile(source, f"<fhirpath fast path: {label!r}>", "exec")


def _define(name: str, source: str, ns: dict, label: str):
    """The function `name` defined by `source`, whose free names are those of `ns`."""
    exec(_code(source, label), ns)
    fn = ns[name]
    fn.source = source  # for debugging and the tests
    return fn


# -- collections: what an expression gives from one node ----------------------------------------------
class _Coll:
    """A compiled collection-valued expression: its first item, its only item, or all its items.

    `first` and `single` give None for an empty collection (items are never None); `single` raises
    Fallback for several. `raises` says the general engine may raise an error evaluating it.
    """

    __slots__ = ("first", "single", "all", "raises")


def _path(steps: list, raises: bool, label: str) -> _Coll:
    """Steps from the node itself; `raises`: a where() criteria in them can fail in the general engine,
    so every item must meet it before the first is taken (no early stop)."""
    steps = tuple(steps)
    coll = _Coll()
    coll.raises = raises
    coll.first = _walker(steps, "first_all" if raises else "first", label)
    coll.single = _walker(steps, "single", label)
    all_walk = None

    def all_(node) -> list:  # rarely needed (a union's failing branch): written on first use
        nonlocal all_walk
        if all_walk is None:
            all_walk = _walker(steps, "all", label)
        return all_walk(node)
    coll.all = all_
    return coll


def _then(head: _Coll, rest: _Coll) -> _Coll:
    """`rest` applied to the one item (at most) of `head`, a ``first()``."""
    coll = _Coll()
    coll.raises = head.raises or rest.raises
    head_first = head.first
    rest_first, rest_single, rest_all = rest.first, rest.single, rest.all

    def first(node):
        item = head_first(node)
        return None if item is None else rest_first(item)

    def single(node):
        item = head_first(node)
        return None if item is None else rest_single(item)

    def all_(node):
        item = head_first(node)
        return [] if item is None else rest_all(item)
    coll.first, coll.single, coll.all = first, single, all_
    return coll


def _first_of(inner: _Coll) -> _Coll:
    """``inner.first()``."""
    coll = _Coll()
    coll.raises = inner.raises
    first = inner.first

    def all_(node):
        item = first(node)
        return [] if item is None else [item]
    coll.first, coll.single, coll.all = first, first, all_
    return coll


def _first_of_union(branches: list[_Coll]) -> _Coll:
    """``(a | b | ...).first()``: the union keeps the first occurrence of each item, so its first item
    is the first branch's first item, else the next branch's... A branch after the one that answered
    is still walked if the general engine could fail in it."""
    if not any(b.raises for b in branches):
        firsts = tuple(b.first for b in branches)

        def first(node):  # the common case: stop at the first branch with an item
            for branch_first in firsts:
                found = branch_first(node)
                if found is not None:
                    return found
            return None
    else:
        def first(node):
            found = None
            for branch in branches:
                if found is None:
                    found = branch.first(node)
                elif branch.raises:
                    branch.all(node)
            return found

    coll = _Coll()
    coll.raises = any(b.raises for b in branches)
    coll.first = coll.single = first
    coll.all = lambda node: [] if (item := first(node)) is None else [item]
    return coll


# -- the compiler ---------------------------------------------------------------------------------------
class _Unsupported(Exception):
    """The expression has a shape this module does not compile; the general compiler alone serves it."""


def _union_branches(node) -> list:
    if node[0] == "op" and node[1] == "|":
        return _union_branches(node[2]) + _union_branches(node[3])
    return [node]


class _FastCompiler:
    def __init__(self, compiler):
        self.compiler = compiler  # the general one: its constants and expression (for error messages)

    # A chain is (head, steps, raises): `head` is None (the node itself) or a _Coll giving one item at
    # most (a first()), then the steps that follow it.
    def chain(self, node):
        kind = node[0]
        if kind == "id":
            if node[1][:1].isupper():  # `Patient.x` selects by resource type: not handled here
                raise _Unsupported
            return None, [_member_step(node[1])], False
        if kind == "call":  # a function of the focus itself, like getResourceKey()
            return self.invoke((None, [], False), node)
        if kind != "dot":
            raise _Unsupported
        left, right = node[1], node[2]
        if right[0] == "id":
            head, steps, raises = self.chain(left)
            return head, steps + [_member_step(right[1])], raises
        if right[0] == "call" and right[1] == "first" and not right[2] and _union_branches(left)[1:]:
            return _first_of_union([self.coll(b) for b in _union_branches(left)]), [], False
        if right[0] == "call" and right[1] == "ofType" and len(right[2]) == 1:
            return self.typed(left, right)
        if right[0] != "call":
            raise _Unsupported
        return self.invoke(self.chain(left), right)

    def typed(self, left, right):
        """``x.name.ofType(T)``: the general compiler reads the typed key when `left` is a member name."""
        if left[0] == "id" and not left[1][:1].isupper():
            base, name = (None, [], False), left[1]
        elif left[0] == "dot" and left[2][0] == "id":
            base, name = self.chain(left[1]), left[2][1]
        else:
            raise _Unsupported
        head, steps, raises = base
        type_name = type_name_of(right[2][0], self.compiler.expression)
        return head, steps + [_typed_step(name, type_name)], raises

    def invoke(self, chain, call):
        """`chain` followed by the function `call` (a ("call", name, args) node)."""
        head, steps, raises = chain
        name, args = call[1], call[2]
        if name == "first" and not args:
            return _first_of(self.as_coll(chain)), [], False
        if name == "where" and len(args) == 1:
            condition, cond_raises = self.condition(args[0])
            step = ("filter", condition, self.string_expression(args[0]))
            return head, steps + [step], raises or cond_raises
        if name == "getResourceKey" and not args:
            return head, steps + [("resource_key",)], raises
        if name == "getReferenceKey" and len(args) <= 1:
            resource_type = type_name_of(args[0], self.compiler.expression) if args else None
            return head, steps + [("reference_key", resource_type)], raises
        raise _Unsupported

    def as_coll(self, chain) -> _Coll:
        head, steps, raises = chain
        label = self.compiler.expression
        if head is None:
            return _path(steps, raises, label)
        return head if not steps else _then(head, _path(steps, raises, label))

    def coll(self, node) -> _Coll:
        return self.as_coll(self.chain(node))

    # -- booleans: fn(item) -> True, False or None (empty), and whether the general engine may raise --
    def boolean(self, node):
        """A boolean-valued expression, or None when `node` is not one of the boolean shapes."""
        kind = node[0]
        if kind == "op" and node[1] in ("and", "or"):
            return self.logic(node[1], self.condition(node[2]), self.condition(node[3]))
        if kind == "op" and node[1] in ("=", "!="):
            const = string_constant(self.compiler, node[3])
            if const is None:
                raise _Unsupported
            return self.equality(self.coll(node[2]), string_test(node[1] == "!=", const))
        if kind == "dot" and node[2][0] == "call":
            name, args = node[2][1], node[2][2]
            if name in ("empty", "exists") and not args:
                inner = self.coll(node[1])
                first = inner.first
                if name == "empty":
                    return (lambda item: first(item) is None), inner.raises
                return (lambda item: first(item) is not None), inner.raises
            if name in ("startsWith", "endsWith") and len(args) == 1:
                const = string_constant(self.compiler, args[0])
                if const is None:
                    raise _Unsupported
                return self.affix(self.coll(node[1]), name == "startsWith", const), True
        return None

    def string_expression(self, node):
        """(member, expression) when `node` is criteria on one member that, when the member is a single
        string, come down to a Python boolean expression of it: `expression(var)` is its text, e.g.
        ``use = 'home' or use.empty()`` -> ``var == 'home' or False``. Else None.

        Only tests that give true or false on a string take part (``=`` / ``!=`` against a string that
        `string_test` compares as plain text, startsWith, endsWith, empty, exists), so Python's and/or
        are FHIRPath's there."""
        kind = node[0]
        if kind == "op" and node[1] in ("and", "or"):
            left, right = self.string_expression(node[2]), self.string_expression(node[3])
            if left is None or right is None or left[0] != right[0]:
                return None
            op, (member, a), (_, b) = node[1], left, right
            return member, lambda var: f"({a(var)}) {op} ({b(var)})"
        if kind == "op" and node[1] in ("=", "!="):
            subject, const = node[2], string_constant(self.compiler, node[3])
            # as in _operators.string_test: a date-like or `x:`-like constant may compare as a date, not as text
            if const is None or const[:4].isdigit() or ":" in const[:3]:
                return None
            member, test = self._member_name(subject), f"{'==' if node[1] == '=' else '!='} {const!r}"
            return None if member is None else (member, lambda var: f"{var} {test}")
        if kind == "dot" and node[2][0] == "call":
            member, (name, args) = self._member_name(node[1]), node[2][1:]
            if member is None:
                return None
            if name in ("empty", "exists") and not args:
                return member, (lambda var: "False") if name == "empty" else (lambda var: "True")
            if name in ("startsWith", "endsWith") and len(args) == 1:
                const = string_constant(self.compiler, args[0])
                method = name.lower()
                return None if const is None else (member, lambda var: f"{var}.{method}({const!r})")
        return None

    @staticmethod
    def _member_name(node):
        return node[1] if node[0] == "id" and not node[1][:1].isupper() else None

    def condition(self, node):
        """`node` in a boolean context (where() criteria, an operand of and/or)."""
        found = self.boolean(node)
        if found is not None:
            return found
        single = self.coll(node).single

        def truth(item):
            # FHIRPath singleton evaluation: one item that is not a boolean counts as true.
            value = single(item)
            return value if value is None or type(value) is bool else True
        return truth, True  # several items: the general engine raises

    @staticmethod
    def logic(op: str, left, right):
        a, a_raises = left
        b, b_raises = right
        # three-valued logic: False decides an `and`, True an `or`; both sides the other value give it,
        # anything else (an empty side) gives empty
        decides = op != "and"
        other = not decides

        def fn(item):
            x = a(item)
            if x is decides:
                return decides
            y = b(item)
            if y is decides:
                return decides
            return other if x is other and y is other else None
        return fn, a_raises or b_raises

    @staticmethod
    def equality(left: _Coll, test):
        """``x = 'text'`` / ``x != 'text'``: `test` is the general operator's own test of one string."""
        return _on_string(left, test), left.raises

    @staticmethod
    def affix(subject: _Coll, starts: bool, const: str):
        return _on_string(subject, (lambda value: value.startswith(const)) if starts else (lambda value: value.endswith(const)))


def _on_string(subject: _Coll, test):
    """``item -> test(the subject's one value)``: None when it is empty, Fallback when it is not a string."""
    single = subject.single

    def fn(item):
        value = single(item)
        if value is None:
            return None
        if type(value) is not str:
            raise Fallback
        return test(value)
    return fn


def compile_fast(tree, compiler):
    """``node -> value`` for `tree`, or None when its shape has no fast path (see the module docstring).

    The value is what a view column gets from the general expression evaluated on ``[node]``: None when
    empty, else the only item; Fallback is raised where the fast path does not decide.
    """
    fast = _FastCompiler(compiler)
    try:
        found = fast.boolean(tree)
        if found is None:
            return fast.coll(tree).single
    except _Unsupported:
        return None
    on_string = fast.string_expression(tree)
    if on_string is None:
        return found[0]
    return _with_string_expression(on_string, found[0], compiler.expression)


def _with_string_expression(on_string, general, label: str):
    """`general` (a boolean fast function), first trying the Python expression of `on_string` on the
    one member it reads, as in where() (`status != 'entered-in-error'` on a string status)."""
    member, expression = on_string
    source = (
        "def test(x0):\n"
        "    if type(x0) is dict:\n"
        f"        s = x0.get({member!r})\n"
        "        if type(s) is str:\n"
        f"            return {expression('s')}\n"
        "    return general(x0)\n"
    )
    return _define("test", source, {"general": general}, label)
