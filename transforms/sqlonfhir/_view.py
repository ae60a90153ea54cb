"""Compile a SQL-on-FHIR v2 ViewDefinition into a row generator for single resources.

The shape follows the specification's processing model: a selection structure yields partial rows
for each focus node (one per ``forEach``/``forEachOrNull``/``repeat`` item, or the node itself); its
columns, nested selects and unionAll are cross-joined in that order, which is also the column order.
Partial rows are tuples, joined by concatenation, and only turned into dicts at the end.
"""

from __future__ import annotations

import difflib
import itertools
import re
from typing import Iterable, Iterator

from .errors import FhirPathError, ViewError
from .fhirpath import Env, compile_path
from .fhirpath._fast import Fallback
from .fhirpath._model import COMPLEX_TYPES, PRIMITIVE_TYPES

__all__ = ["CompiledView", "compile_view"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
_SELECT_KEYS = {"column", "select", "unionAll", "forEach", "forEachOrNull", "repeat", "id", "extension",
                "description"}
_COLUMN_KEYS = {"name", "path", "description", "collection", "type", "tags", "id", "extension"}
_WHERE_KEYS = {"path", "description", "id", "extension"}
_KNOWN_TYPES = PRIMITIVE_TYPES | COMPLEX_TYPES | {"Extension", "Element", "BackboneElement", "Resource",
                                                  "Narrative", "Expression"}


def _kind(value) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _check_keys(obj: dict, allowed: set, where: str) -> None:
    for key in obj:
        if key in allowed or key.startswith("_"):
            continue
        hint = difflib.get_close_matches(key, sorted(allowed), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ViewError(f"{where}: unknown key {key!r}{suggestion}; allowed: {', '.join(sorted(allowed))}")


class _Column:
    __slots__ = ("name", "type", "collection", "path", "fn", "fast", "where", "row_index")

    def __init__(self, name, type_, collection, path, fn, where, fast=None):
        self.name, self.type, self.collection, self.path, self.fn, self.where = (
            name, type_, collection, path, fn, where)
        # The fast path gives a single value, so it serves only columns that are not collections.
        self.fast = None if collection else fast
        self.row_index = "%rowIndex" in path

    def value(self, focus: list, env: Env):
        fast = self.fast
        if fast is not None and len(focus) == 1:
            try:
                return fast(focus[0])
            except Fallback:
                pass
        return self.general(focus, env)

    def general(self, focus: list, env: Env):
        """`value` by the general compiled expression alone."""
        try:
            values = self.fn(focus, env)
        except FhirPathError as exc:
            raise FhirPathError(f"{self.where}: evaluating {self.path!r}: {exc}") from None
        if self.collection:
            return values
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        raise ViewError(
            f"{self.where}: path {self.path!r} gave {len(values)} values but column {self.name!r} is not a "
            f"collection; set \"collection\": true or narrow the path (e.g. with first())")


class _Select:
    """One compiled selection structure."""

    __slots__ = ("columns", "selects", "union", "mode", "iterate", "width", "where")

    def __init__(self, columns, selects, union, mode, iterate, width, where):
        self.columns, self.selects, self.union = columns, selects, union
        self.mode, self.iterate, self.width, self.where = mode, iterate, width, where

    def _foci(self, node, env: Env) -> list:
        mode = self.mode
        if mode is None:
            return [node]
        try:
            if mode == "repeat":
                out: list = []
                self._descend(node, env, out)
                return out
            return self.iterate([node], env)
        except FhirPathError as exc:
            raise FhirPathError(f"{self.where}.{mode}: {exc}") from None

    def _descend(self, node, env: Env, out: list) -> None:
        # Depth first, parents before children, which gives the document order analysts expect.
        for fn in self.iterate:
            for child in fn([node], env):
                out.append(child)
                self._descend(child, env, out)

    def rows(self, node, env: Env) -> list[tuple]:
        if self.mode is None:  # one focus, the node itself: the common case, without the loop below
            parts = self._parts([node], env)
            if parts is None:
                return []
            return parts[0] if len(parts) == 1 else list(_product(parts))
        foci = self._foci(node, env)
        iterating = self.mode is not None
        out: list[tuple] = []
        for i, focus in enumerate(foci):
            e = Env(env.resource, i) if iterating else env
            parts = self._parts([focus], e)
            if parts is not None:
                out.extend(_product(parts))
        if not foci and self.mode == "forEachOrNull":
            # No item: one row anyway, like a LEFT OUTER JOIN, with every column null; except that
            # the conformance suite wants %rowIndex to read 0 there rather than null.
            e = Env(env.resource, 0)
            own = tuple(c.value([], e) if c.row_index else None for c in self.columns)
            out.append(own + (None,) * (self.width - len(own)))
        return out

    def _parts(self, focus: list, env: Env):
        parts: list[list[tuple]] = []
        if self.columns:
            parts.append([tuple(c.value(focus, env) for c in self.columns)])
        node = focus[0]
        for sel in self.selects:
            rows = sel.rows(node, env)
            if not rows:
                return None
            parts.append(rows)
        if self.union:
            urows: list[tuple] = []
            for branch in self.union:
                urows.extend(branch.rows(node, env))
            if not urows:
                return None
            parts.append(urows)
        return parts


def _flat_columns(root: _Select):
    """The columns of a view whose every select is plain columns on the resource itself, else None."""
    columns: list = []
    for sel in root.selects:
        if sel.mode is not None or sel.selects or sel.union or not sel.columns:
            return None
        columns.extend(sel.columns)
    return tuple(columns)


def _product(parts: list[list[tuple]]) -> Iterable[tuple]:
    if all(len(p) == 1 for p in parts):
        return [tuple(itertools.chain.from_iterable(p[0] for p in parts))]
    return (tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts))


class CompiledView:
    """A ViewDefinition ready to run: ``evaluate(resource)`` gives that resource's rows."""

    def __init__(self, view: dict, resource: str, root: _Select, columns: list, wheres: list):
        self.view = view
        #: The FHIR resource type the view reads (``Patient``, ``Observation``, ...).
        self.resource = resource
        #: ``(name, type or None, collection)`` per output column, in output order.
        self.columns: list[tuple[str, str | None, bool]] = columns
        self.name: str | None = view.get("name")
        self._root = root
        self._wheres = wheres
        self._names = tuple(c[0] for c in columns)
        self._flat = _flat_columns(root)
        #: The fast functions of all `_flat` columns, when every one has one: a row is then one pass.
        self._flat_fast = None
        if self._flat is not None and all(c.fast is not None for c in self._flat):
            self._flat_fast = tuple(c.fast for c in self._flat)

    @property
    def column_names(self) -> list[str]:
        return list(self._names)

    def _accepts(self, resource: dict) -> bool:
        for where, path, fn, fast in self._wheres:
            if fast is not None:
                try:
                    found = fast(resource)
                    if found is True:
                        continue
                    if found is False or found is None:  # [false] or empty: the resource is left out
                        return False
                    # not a boolean: the general path below raises the error
                except Fallback:
                    pass
            try:
                result = fn([resource], Env(resource, 0))
            except FhirPathError as exc:
                raise FhirPathError(f"{where}: evaluating {path!r}: {exc}") from None
            if not result:
                return False
            if len(result) > 1 or type(result[0]) is not bool:
                found = f"{len(result)} values" if len(result) > 1 else _kind(result[0])
                raise ViewError(f"{where}: path {path!r} must give a boolean, found {found}")
            if result[0] is not True:
                return False
        return True

    def evaluate(self, resource: dict) -> list[dict]:
        """Rows for one resource (none if it is of another type or fails the view's ``where``)."""
        names = self._names
        return [dict(zip(names, row)) for row in self.evaluate_tuples(resource)]

    def evaluate_tuples(self, resource: dict) -> list[tuple]:
        """`evaluate` with each row as a tuple of the column values in `columns` order (no dicts built)."""
        if type(resource) is not dict or resource.get("resourceType") != self.resource:
            return []
        if self._wheres and not self._accepts(resource):
            return []
        if self._flat_fast is not None:
            try:
                return [tuple([fast(resource) for fast in self._flat_fast])]
            except Fallback:
                pass  # a column needs the general engine: the row column by column, below
        env = Env(resource, 0)
        if self._flat is not None:
            return [self._flat_row(resource, env)]
        return self._root.rows(resource, env)

    def _flat_row(self, resource: dict, env: Env) -> tuple:
        """The one row of a view without forEach, repeat, unionAll or nested selects: its columns in order,
        the same as `_Select.rows` gives, without the partial rows."""
        focus = [resource]
        return tuple([column.value(focus, env) for column in self._flat])

    def evaluate_many(self, resources: Iterable[dict]) -> Iterator[dict]:
        """Rows for each resource in turn; resources of other types are skipped."""
        for resource in resources:
            yield from self.evaluate(resource)

    def __reduce__(self):
        # Closures do not pickle; Spark ships the view to its workers, which compile it again.
        return compile_view, (self.view,)

    def __repr__(self) -> str:
        return f"CompiledView(resource={self.resource!r}, columns={list(self._names)!r})"


class _ViewCompiler:
    def __init__(self, view: dict):
        self.view = view
        self.constants: dict = {}

    def path(self, expression, where: str):
        if not isinstance(expression, str):
            raise ViewError(f"{where}: expected a FHIRPath expression as a string, found {_kind(expression)}")
        if not expression.strip():
            raise ViewError(f"{where}: the FHIRPath expression is empty")
        try:
            return compile_path(expression, self.constants)
        except FhirPathError as exc:
            raise FhirPathError(f"{where}: {exc}") from None

    def compile(self) -> CompiledView:
        view = self.view
        if not isinstance(view, dict):
            raise ViewError(f"a ViewDefinition must be a JSON object, found {_kind(view)}")
        resource = view.get("resource")
        if resource is None:
            raise ViewError("'resource' is required: the FHIR resource type the view reads, e.g. \"Patient\"")
        if not isinstance(resource, str) or not _RESOURCE_TYPE.match(resource):
            raise ViewError(f"resource: expected a FHIR resource type name such as \"Patient\", found {resource!r}")
        self._constants(view.get("constant"))
        selects = view.get("select")
        if not isinstance(selects, list) or not selects:
            raise ViewError("'select' is required: a non-empty list of selection structures")
        columns: list = []
        compiled = [self.select(s, f"select[{i}]", columns) for i, s in enumerate(selects)]
        root = _Select([], compiled, None, None, None, len(columns), "view")
        wheres = self._wheres(view.get("where"))
        return CompiledView(view, resource, root, [(c.name, c.type, c.collection) for c in columns], wheres)

    def _constants(self, constants) -> None:
        if constants is None:
            return
        if not isinstance(constants, list):
            raise ViewError(f"constant: expected a list, found {_kind(constants)}")
        for i, const in enumerate(constants):
            where = f"constant[{i}]"
            if not isinstance(const, dict):
                raise ViewError(f"{where}: expected an object, found {_kind(const)}")
            name = const.get("name")
            if not isinstance(name, str) or not _NAME.match(name):
                raise ViewError(f"{where}: 'name' is required and must match {_NAME.pattern}, found {name!r}")
            values = [k for k in const if k.startswith("value") and len(k) > 5 and k[5].isupper()]
            if len(values) != 1:
                found = ", ".join(values) if values else "none"
                raise ViewError(f"{where} ({name}): exactly one value[x] is required "
                                f"(e.g. valueString, valueInteger), found {found}")
            if name in self.constants:
                raise ViewError(f"{where}: constant {name!r} is defined twice")
            self.constants[name] = const[values[0]]

    def _wheres(self, wheres) -> list:
        if wheres is None:
            return []
        if not isinstance(wheres, list):
            raise ViewError(f"where: expected a list of {{\"path\": ...}} objects, found {_kind(wheres)}")
        out = []
        for i, w in enumerate(wheres):
            where = f"where[{i}]"
            if not isinstance(w, dict):
                raise ViewError(f"{where}: expected an object with 'path', found {_kind(w)}")
            _check_keys(w, _WHERE_KEYS, where)
            if "path" not in w:
                raise ViewError(f"{where}: 'path' is required")
            compiled = self.path(w["path"], f"{where}.path")
            out.append((where, w["path"], compiled.fn, compiled.fast))
        return out

    def select(self, sel, where: str, columns: list) -> _Select:
        """Compile one selection structure, appending its columns (in output order) to `columns`."""
        if not isinstance(sel, dict):
            raise ViewError(f"{where}: expected a selection structure (an object), found {_kind(sel)}")
        _check_keys(sel, _SELECT_KEYS, where)
        modes = [k for k in ("forEach", "forEachOrNull", "repeat") if k in sel]
        if len(modes) > 1:
            raise ViewError(f"{where}: use only one of forEach, forEachOrNull and repeat, found {', '.join(modes)}")
        mode = modes[0] if modes else None
        iterate = None
        if mode == "repeat":
            paths = sel["repeat"]
            if not isinstance(paths, list) or not paths:
                raise ViewError(f"{where}.repeat: expected a non-empty list of FHIRPath strings, found {_kind(paths)}")
            iterate = [self.path(p, f"{where}.repeat[{j}]").fn for j, p in enumerate(paths)]
        elif mode is not None:
            iterate = self.path(sel[mode], f"{where}.{mode}").fn

        start = len(columns)
        own = []
        for j, col in enumerate(self._list(sel, "column", where)):
            column = self.column(col, f"{where}.column[{j}]")
            self._add(columns, column, f"{where}.column[{j}]")
            own.append(column)
        nested = [self.select(s, f"{where}.select[{j}]", columns)
                  for j, s in enumerate(self._list(sel, "select", where))]
        union = None
        branches = self._list(sel, "unionAll", where)
        if branches:
            union = []
            first: list = []
            for j, branch in enumerate(branches):
                branch_cols: list = list(columns)
                union.append(self.select(branch, f"{where}.unionAll[{j}]", branch_cols))
                added = branch_cols[len(columns):]
                if j == 0:
                    first = added
                    continue
                self._check_union(first, added, f"{where}.unionAll[{j}]")
            for column in first:
                self._add(columns, column, f"{where}.unionAll[0]")
        if not own and not nested and not union:
            raise ViewError(f"{where}: a selection needs at least one of 'column', 'select' or 'unionAll'")
        return _Select(own, nested, union, mode, iterate, len(columns) - start, where)

    @staticmethod
    def _list(sel: dict, key: str, where: str) -> list:
        value = sel.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ViewError(f"{where}.{key}: expected a list, found {_kind(value)}")
        return value

    @staticmethod
    def _add(columns: list, column: _Column, where: str) -> None:
        for existing in columns:
            if existing.name == column.name:
                raise ViewError(f"{where}: column name {column.name!r} is already used by {existing.where}; "
                                "column names must be unique across the view")
        columns.append(column)

    @staticmethod
    def _check_union(first: list, added: list, where: str) -> None:
        names0 = [c.name for c in first]
        names = [c.name for c in added]
        if names != names0:
            raise ViewError(f"{where}: unionAll branches must have the same columns in the same order; "
                            f"unionAll[0] has {names0}, this branch has {names}")
        for a, b in zip(first, added):
            if a.type and b.type and a.type != b.type:
                raise ViewError(f"{where}: column {b.name!r} is {b.type} here but {a.type} in unionAll[0]")
            if a.collection != b.collection:
                raise ViewError(f"{where}: column {b.name!r} must be a collection in every branch or in none")

    def column(self, col, where: str) -> _Column:
        if not isinstance(col, dict):
            raise ViewError(f"{where}: expected a column object, found {_kind(col)}")
        _check_keys(col, _COLUMN_KEYS, where)
        name = col.get("name")
        if name is None:
            raise ViewError(f"{where}: 'name' is required")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ViewError(f"{where}: column name {name!r} must match {_NAME.pattern} "
                            "(letters, digits, underscores; starting with a letter)")
        if "path" not in col:
            raise ViewError(f"{where}: 'path' is required")
        collection = col.get("collection", False)
        if collection is None:
            collection = False
        if not isinstance(collection, bool):
            raise ViewError(f"{where}: 'collection' must be true or false, found {collection!r}")
        type_ = col.get("type")
        if type_ is not None:
            if not isinstance(type_, str):
                raise ViewError(f"{where}: 'type' must be a FHIR type name, found {_kind(type_)}")
            if type_ not in _KNOWN_TYPES and not type_.startswith(("http://", "https://")):
                hint = difflib.get_close_matches(type_, sorted(_KNOWN_TYPES), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ViewError(f"{where}: unknown FHIR type {type_!r}{suggestion}")
        compiled = self.path(col["path"], f"{where}.path")
        return _Column(name, type_, collection, col["path"], compiled.fn, where, compiled.fast)


def compile_view(view: dict) -> CompiledView:
    """Validate and compile a ViewDefinition (a parsed JSON object); raise ViewError if it is invalid."""
    return _ViewCompiler(view).compile()
