"""FHIR R4 validation at mapping speed: fhir.resources verdicts, cached by resource shape.

The mappers produce a few hundred distinct resource *shapes* (which elements are present, nested how,
holding which JSON types), repeated over millions of resources. Building the pydantic model of every
resource costs ~100 us; most of that re-checks the same structure again and again.

So validation is split in two, and both halves are fhir.resources' own checks:

- **structure**: the first resource of each shape is validated in full with fhir.resources
  (`transforms.fhir_validate.validate`). Unknown elements, missing required elements, choice-type
  conflicts, nulls inside complex lists, wrong JSON types where a complex type belongs: all of these
  are functions of the shape, so one verdict covers every resource with the same shape.
- **values**: every primitive leaf of every later resource of that shape is checked by the pydantic
  validator of the FHIR primitive type its element has (date, dateTime, instant, id, code, uri,
  decimal, ...), memoised per distinct value; date and time values, which are nearly all distinct and
  whose fhir.resources validator runs in Python, are first tried against stricter regular expressions
  (which know the length of each month), and go to the real validator only when those do not accept
  them. Ids and strings (names, values, references: nearly all distinct too) get the same treatment.

The fast path only ever says *valid*. Whenever it is not sure (a leaf it cannot vouch for, a shape it
cannot plan, a shape never seen), the resource goes through fhir.resources in full, which gives the
verdict and the error message. So the fast verdict equals the fhir.resources verdict by construction;
`tests/transforms/test_fast_validate.py` checks that with mutated resources and the official examples.

Finding a resource's shape is itself a walk over the resource; a shape seen twice is compiled into one
straight-line function that checks structure and leaves together (see "compiled shapes" below).

Shapes whose first resource fails are not cached: a failure may come from one value, and the next
resource of that shape may be valid. Invalid resources are rare, and each costs one full validation.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field

from transforms.fhir_validate import model_class
from transforms.fhir_validate import validate as full_validate

__all__ = ["ShapeValidator", "validate", "shape_of", "default_validator", "common_datetime"]

#: after this many shapes, new shapes are validated in full and not remembered (bounds memory)
MAX_SHAPES = 20_000
#: distinct values remembered per primitive checker (bounds memory; ids and timestamps are unique)
MAX_VALUES = 50_000

_UNPLANNABLE = object()


class _Unplannable(Exception):
    """The shape holds something the planner cannot vouch for; such resources are validated in full."""


def shape_of(node, leaves: list) -> object:
    """The structural signature of `node`; appends its primitive leaves to `leaves` in walk order.

    Dict keys keep their order, list lengths count, a leaf contributes its exact Python type, and a
    ``resourceType`` contributes its value (it picks the model class of the element that holds it).
    """
    kind = type(node)
    if kind is dict:
        parts: list = []
        for key, value in node.items():
            if key == "resourceType" and type(value) is str:
                parts.append((key, value))
            else:
                parts.append((key, shape_of(value, leaves)))
        return tuple(parts)
    if kind is list:
        return ("[", *[shape_of(item, leaves) for item in node])
    leaves.append(node)
    return kind


# -- primitive checkers ---------------------------------------------------------------------------

_YEAR = r"[1-9][0-9]{3}"
# Every month has the days up to 28, all but February the 29th and 30th, the long months the 31st. So a
# match is a real calendar day; February 29th (a leap year is no pattern) is left to fhir.resources.
_FULL_DATE = (rf"{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
              r"|(?:0[13578]|1[02])-31)")
_PARTIAL_DATE = rf"{_YEAR}(?:-(?:0[1-9]|1[0-2]))?"
_TIME = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])"
# Stricter than fhir_core's patterns: no leap seconds, no +14:00, at most 6 fraction digits, year >= 1000.
# Like `_fast_string`, each bound method (truthy: a match) is the check, sparing a Python call per leaf.
# The full date comes first: most values are full dates or date-times, which then match the first branch
# (a date-time 300 ns against 390 with the partial dates tried first; a year and month costs that much more).
_fast_date = re.compile(rf"{_FULL_DATE}|{_PARTIAL_DATE}").fullmatch
#: the commonest dateTime forms, each a real date (and time); `transforms.fhir_feed` takes them too
common_datetime = re.compile(rf"{_FULL_DATE}(?:{_TIME})?|{_PARTIAL_DATE}").fullmatch
_fast_instant = re.compile(_FULL_DATE + _TIME).fullmatch


# FHIR's own id rule: stricter than fhir_core's (up to 255 characters by default), so a match is valid there.
# Like `_fast_string`, the bound method (truthy: a match) is the check.
_fast_id = re.compile(r"[A-Za-z0-9\-.]{1,64}").fullmatch


def _id_rule_is_default() -> bool:
    """Whether fhir_core checks ids with its default rule (a process may loosen or tighten it)."""
    from fhir_core import constraints

    max_length = getattr(constraints, "TYPES_ID_MAX_LENGTH", 255)
    pattern = getattr(constraints, "TYPES_ID_PATTERN", r"^[A-Za-z0-9\-.]+$")
    return (max_length is None or max_length >= 64) and pattern in (None, r"^[A-Za-z0-9\-.]+$")


# fhir_core's string rule is the pattern ``[ \r\n\t\S]+``, which pydantic *searches* for: any string holding
# one such character is valid, if pydantic takes it as a string at all. Space, tab, CR, LF and printable
# ASCII are that under every notion of \s. A lone surrogate (a JSON escape such as "\\ud800" that pairs
# with nothing) is refused by pydantic ("string_unicode") and cannot be written as UTF-8, so the whole
# string is read: no surrogate anywhere. The bound method itself (truthy: a match) spares a Python call
# per leaf; strings are the commonest leaf.
_fast_string = re.compile(r"[^\ud800-\udfff]*[ \r\n\t!-~][^\ud800-\udfff]*").fullmatch

# Most string leaves are ASCII (displays, units, references, names). An ASCII string holds no surrogate,
# so `_fast_string` needs only one printable character in it; a non-empty ASCII string that *starts* with
# one has it (`" " <= s < "\x7f"` compares the first character; `str.isascii` reads a flag). Inline in
# a compiled check that is about 60 ns against the expression's 140-310 ns; what it does not accept goes
# on to `_fast_string`. A template of the check's source: ``{0}`` is the leaf's variable.
ASCII_STRING_TEST = "({0}.isascii() and ' ' <= {0} < '\\x7f')"


def _always(_value) -> bool:
    return True


@dataclass
class _Primitive:
    """Checks one leaf value against the pydantic validator of a FHIR primitive type."""

    adapter: typing.Any  # a pydantic TypeAdapter
    fast: typing.Callable[[str], object] | None = None  # truthy: valid
    seen: set = field(default_factory=set)

    def __call__(self, value) -> bool:
        try:
            if value in self.seen:
                return True
        except TypeError:  # not hashable, so not a JSON primitive: let fhir.resources judge
            return False
        if self.fast is not None and self.fast(value):
            return True
        try:
            self.adapter.validate_python(value)
        except Exception:  # any refusal means "not sure": the resource is then validated in full
            return False
        if len(self.seen) < MAX_VALUES:
            self.seen.add(value)
        return True


_checkers: dict = {}


def _fast_for(annotation, value_type) -> typing.Callable[[str], object] | None:
    if value_type is not str:
        return None
    from fhir_core import types as fhir_types

    args = typing.get_args(annotation)
    if args[:1] == (str,) and len(args) == 2 and type(args[1]) is fhir_types.String:
        return _fast_string  # only when the pattern is the whole rule (no length limit beside it)
    for meta in args[1:]:
        kind = type(meta)
        if kind is fhir_types.Instant:
            return _fast_instant
        if kind is fhir_types.DateTime:
            return common_datetime
        if kind is fhir_types.Date:
            return _fast_date
        if kind is fhir_types.Id and _id_rule_is_default():
            return _fast_id
    return None


def _checker(annotation, value_type):
    if value_type is type(None):
        return _always  # the shape already fixes that this leaf is null, and the model accepted that
    key = (annotation, value_type)
    checker = _checkers.get(key)
    if checker is None:
        from pydantic import TypeAdapter

        checker = _checkers[key] = _Primitive(TypeAdapter(annotation), _fast_for(annotation, value_type))
    return checker


# -- planning a shape: which primitive type each leaf has -----------------------------------------

_fields_cache: dict = {}


def _unwrap(annotation):
    """(element annotation, is_list) of a model field, without Optional."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                raise _Unplannable
            annotation = args[0]
        elif origin in (list, typing.List):
            if is_list:
                raise _Unplannable
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, is_list


def _fields(cls) -> dict:
    fields = _fields_cache.get(cls)
    if fields is None:
        fields = {}
        for name, info in cls.model_fields.items():
            try:
                spec = _unwrap(info.annotation)
            except _Unplannable:
                spec = None
            fields[name] = spec
            if info.alias:
                fields[info.alias] = spec
        _fields_cache[cls] = fields
    return fields


def _plan(node: dict, cls, out: list) -> None:
    fields = _fields(cls)
    for key, value in node.items():
        if key == "resourceType" and type(value) is str:
            continue
        spec = fields.get(key)
        if spec is None:
            raise _Unplannable
        annotation, is_list = spec
        if is_list:
            if type(value) is not list:
                raise _Unplannable
            for item in value:
                _plan_value(item, annotation, out)
        else:
            if type(value) is list:
                raise _Unplannable
            _plan_value(value, annotation, out)


def _plan_value(value, annotation, out: list) -> None:
    model = getattr(annotation, "get_model_klass", None)
    if type(value) is dict:
        if model is None:
            raise _Unplannable
        cls = model()
        if cls.__name__ in ("Resource", "DomainResource"):
            cls = model_class(value.get("resourceType")) if type(value.get("resourceType")) is str else None
            if cls is None:
                raise _Unplannable
        _plan(value, cls, out)
    elif type(value) is list:
        raise _Unplannable
    elif model is not None:
        # fhir.resources also accepts a JSON *string* for a complex element; never vouch for that
        if value is not None:
            raise _Unplannable
        out.append(_always)
    else:
        out.append(_checker(annotation, type(value)))


# -- compiled shapes ------------------------------------------------------------------------------
#
# Computing `shape_of` for every resource (a recursive walk building nested tuples, then hashing them)
# cost about as much as checking the leaves. So each planned shape is also compiled into straight-line
# Python that checks the structure (the same keys, the same list lengths, the same leaf types, the same
# nested resourceType) and the leaves together, without building the shape. `shape_of` and this compiler
# walk dicts and lists the same way; the property test checks that a compiled check claims every resource
# `shape_of` gives its shape, and only resources with that shape up to the order of keys.
#
# A dict is checked by its number of keys, and then each key is read (`n3['code']`): a dict with as many
# keys, all of them read, has the same keys, and one without a key raises KeyError, which the check
# answers with None (not this shape). The order of keys may differ from the shape's then, which
# fhir.resources' verdict does not depend on (pydantic looks fields up by name). That costs about 35 ns
# per dict where building and comparing the tuple of its keys cost 120 (a dozen dicts per resource).
# Shapes of a head whose dicts have the same number of keys but different keys, or the same keys in
# another order, cannot part at a guard that way; their head is compiled with the tuple of keys as guard.
#
# The shapes sharing a head (resourceType and top-level keys) often differ deep inside only: an int or
# a float quantity, one coding or two. Tried one after the other, a resource paid for every walk that
# failed before its own. So the shapes of a head are compiled into one function: the walk they share is
# written once, and where they part it branches on the first differing guard. Guards at the same point
# of the walk test the same node for different types, keys, lengths or resourceType, so at most one
# branch can pass and a failure inside it means no shape of the head matches.
# Compiling costs about a millisecond and some 16 KiB per shape, so a shape is compiled when it is seen
# the second time (shapes seen once never pay), and the number of compiled shapes is bounded.

#: shapes with more leaves than this are not compiled (very large functions); `shape_of` serves them
MAX_COMPILED_LEAVES = 2_000
#: at most this many shapes are compiled per validator (bounds memory: ~16 KiB each)
MAX_COMPILED_SHAPES = 2_000
#: compiled shapes per (resourceType, top-level keys); more are served by `shape_of`
MAX_CANDIDATES = 16

_LEAF_TYPES = {str: "str", int: "int", float: "float", bool: "bool", type(None): "_NONE"}


@dataclass(frozen=True)
class _Program:
    """One shape as code: `walk` lines in walk order, each ("if", failure condition), ("=", statement) or
    ("dict", variable, its keys) (a guard, see `_rendered`), then the leaf checks as (variable,
    checker), and the variables of its float leaves."""

    walk: tuple
    leaves: tuple
    floats: tuple


def _program(resource: dict, plan: tuple) -> _Program | None:
    """The `_Program` of `resource`'s shape; None when its leaves do not line up with `plan`."""
    walk: list = []
    refs: list[str] = []
    floats: list[str] = []

    def visit(node, ref: str) -> None:
        kind = type(node)
        if kind is dict:
            if any(type(key) is not str for key in node):
                raise _Unplannable  # keys are written as literals
            walk.append(("dict", ref, tuple(node)))
            for key, value in node.items():
                child = bind(f"{ref}[{key!r}]")
                if key == "resourceType" and type(value) is str:
                    walk.append(("if", f"type({child}) is not str or {child} != {value!r}"))
                else:
                    visit(value, child)
        elif kind is list:
            walk.append(("if", f"type({ref}) is not list or len({ref}) != {len(node)}"))
            for index, item in enumerate(node):
                visit(item, bind(f"{ref}[{index}]"))
        else:
            type_name = _LEAF_TYPES.get(kind)
            if type_name is None:
                raise _Unplannable
            walk.append(("if", f"type({ref}) is not {type_name}"))
            refs.append(ref)
            if kind is float:
                floats.append(ref)

    def bind(expression: str) -> str:
        # named by position, so shapes that walk alike so far write the same lines
        name = f"n{len(walk)}"
        walk.append(("=", f"{name} = {expression}"))
        return name

    visit(resource, "r")
    if len(refs) != len(plan):
        return None
    # the structure check already fixed an `_always` leaf's type, and the model accepted it
    leaves = tuple((ref, check) for ref, check in zip(refs, plan) if check is not _always)
    return _Program(tuple(walk), leaves, tuple(floats))


def _rendered(walk: tuple, exact_keys: bool) -> tuple:
    """A `_Program`'s walk as ("if", failure condition) and ("=", statement) lines; its dicts checked by
    the tuple of their keys (`exact_keys`) or by their number of keys (see "compiled shapes" above)."""
    out = []
    for line in walk:
        if line[0] == "dict":
            ref, keys = line[1], line[2]
            test = f"tuple({ref}) != {keys!r}" if exact_keys else f"len({ref}) != {len(keys)}"
            out.append(("if", f"type({ref}) is not dict or {test}"))
        else:
            out.append(line)
    return tuple(out)


#: a compiled check's answer for a valid resource with a float that json writes with an exponent
_VALID_EXPONENT_FLOATS = "valid, exponent floats"


def _compile_head(programs: tuple):
    """A function ``check(resource) -> True | _VALID_EXPONENT_FLOATS | False | None`` for the shapes of
    `programs` (one head, see above): truthy when the resource has one of these shapes and every leaf
    passes its checker (True when each float is 0 or 1e-4 <= |x| < 1e16: see `fastjson.dumps`), False
    when it has one but a leaf is not vouched for, None when it has none of them. Dicts are checked by
    their number of keys, or by the tuple of their keys where the shapes cannot part otherwise."""
    try:
        return _compile_walks(programs, exact_keys=False)
    except _Unplannable:
        return _compile_walks(programs, exact_keys=True)


def _compile_walks(programs: tuple, exact_keys: bool):
    names: dict = {"_NONE": type(None), "_VALID_EXPONENT_FLOATS": _VALID_EXPONENT_FLOATS}
    ids: dict = {}

    def const(value) -> str:
        name = ids.get(id(value))
        if name is None:
            name = ids[id(value)] = f"k{len(names)}"
            names[name] = value
        return name

    def leaf_check(ref: str, check) -> str:
        if isinstance(check, _Primitive) and check.fast is _fast_string:
            return (f"if not {ASCII_STRING_TEST.format(ref)} and not {const(check.fast)}({ref})"
                    f" and not {const(check)}({ref}): return False")
        if isinstance(check, _Primitive) and check.fast is not None:
            # Dates, ids and strings are mostly distinct and the memo only keeps what `fast` refused.
            return f"if not {const(check.fast)}({ref}) and not {const(check)}({ref}): return False"
        if isinstance(check, _Primitive):  # the memo first: most leaves repeat (codes, systems)
            return f"if {ref} not in {const(check.seen)} and not {const(check)}({ref}): return False"
        return f"if not {const(check)}({ref}): return False"

    lines: list[str] = []

    def emit(group: list, at: int, indent: str) -> None:
        """`group`, (walk, program) pairs, shares its walk before `at`: write the rest once while it
        agrees, then branch."""
        first = group[0][0]
        while at < len(first) and all(at < len(walk) and walk[at] == first[at] for walk, _ in group):
            kind, text = first[at]
            lines.append(f"{indent}if {text}: return None" if kind == "if" else indent + text)
            at += 1
        if len(group) == 1:
            program = group[0][1]
            lines.extend(indent + leaf_check(ref, check) for ref, check in program.leaves)
            lines.extend(f"{indent}if {ref} != 0.0 and not 1e-4 <= abs({ref}) < 1e16: return _VALID_EXPONENT_FLOATS"
                         for ref in program.floats)
            lines.append(indent + "return True")
            return
        branches: dict = {}
        for walk, program in group:
            if at >= len(walk) or walk[at][0] != "if":
                raise _Unplannable  # shapes can only part at a guard (see above); never trust otherwise
            branches.setdefault(walk[at][1], []).append((walk, program))
        for condition, members in branches.items():
            lines.append(f"{indent}if not ({condition}):")
            emit(members, at + 1, indent + "    ")
        lines.append(indent + "return None")

    emit([(_rendered(p.walk, exact_keys), p) for p in programs], 0, "        ")
    # a dict without a key of the shape (one with as many keys) is not this shape
    source = "def check(r):\n    try:\n" + "\n".join(lines) + "\n    except KeyError:\n        return None\n"
    exec(compile(source, "<fast_validate shape>", "exec"), names)  # noqa: S102 - code built from the shapes only
    return names["check"]


# -- the validator --------------------------------------------------------------------------------


class ShapeValidator:
    """`validate(resource)` with the verdict and errors of fhir.resources, cached by shape.

    One instance per process is enough (`default_validator`). Threads may share it: at worst two of
    them plan the same new shape, and the second plan replaces an identical first one.
    """

    def __init__(self, *, max_shapes: int = MAX_SHAPES):
        self.max_shapes = max_shapes
        self._plans: dict = {}
        # (resourceType, top-level keys) -> the compiled check of the planned shapes with that head
        self._compiled: dict = {}
        self._programs: dict = {}  # the same key -> the `_Program`s its check was compiled from
        self._compiled_shapes: set = set()
        self.stats = {"fast": 0, "full": 0, "shapes": 0}

    def validate(self, resource: dict) -> bool:
        """Raise `RecordError` (FHIR_INVALID) when `resource` is not a valid R4 resource.

        Returns True when a compiled check also found every float in it plain (0 or 1e-4 <= |x| < 1e16),
        which spares `fastjson.dumps` its own search for floats; False when that is not known.
        """
        if type(resource) is not dict:
            full_validate(resource)
            return False
        resource_type = resource.get("resourceType")
        if type(resource_type) is str:
            check = self._compiled.get((resource_type, tuple(resource)))
            verdict = check(resource) if check is not None else None
            if verdict:
                self.stats["fast"] += 1
                return verdict is True
            if verdict is not None:
                self.stats["full"] += 1
                full_validate(resource)  # a leaf the fast path cannot vouch for: fhir.resources decides
                return False
        leaves: list = []
        shape = shape_of(resource, leaves)
        plan = self._plans.get(shape)
        if plan is not None and plan is not _UNPLANNABLE:
            if shape not in self._compiled_shapes:
                self._add_compiled(shape, resource, plan)  # the second resource of this shape
            for check, value in zip(plan, leaves):
                if not check(value):
                    break
            else:
                self.stats["fast"] += 1
                return False
        self.stats["full"] += 1
        full_validate(resource)  # raises with fhir.resources' own message
        if plan is None and len(self._plans) < self.max_shapes:
            self._plans[shape] = self._make_plan(resource, len(leaves))
            self.stats["shapes"] += 1
        return False

    def _add_compiled(self, shape, resource: dict, plan: tuple) -> None:
        if len(self._compiled_shapes) >= MAX_COMPILED_SHAPES:
            return
        self._compiled_shapes.add(shape)  # tried once, compiled or not
        if len(plan) > MAX_COMPILED_LEAVES or type(resource.get("resourceType")) is not str:
            return
        key = (resource["resourceType"], tuple(resource))
        programs = self._programs.get(key, ())
        if len(programs) >= MAX_CANDIDATES:
            return
        try:
            program = _program(resource, plan)
            if program is None:
                return
            check = _compile_head(programs + (program,))
        except (_Unplannable, RecursionError, SyntaxError, MemoryError):
            return
        # new objects, not updates: readers in other threads see the old check or the new one
        self._programs[key] = programs + (program,)
        self._compiled[key] = check

    @staticmethod
    def _make_plan(resource: dict, leaves: int):
        cls = model_class(resource.get("resourceType"))
        out: list = []
        try:
            if cls is None:
                raise _Unplannable
            _plan(resource, cls, out)
        except _Unplannable:
            return _UNPLANNABLE
        if len(out) != leaves:  # the planner and shape_of must walk alike; if not, trust neither
            return _UNPLANNABLE
        return tuple(out)


default_validator = ShapeValidator()


def validate(resource: dict) -> bool:
    """Validate with the process's shared `ShapeValidator` (see the module docstring and its `validate`)."""
    return default_validator.validate(resource)
