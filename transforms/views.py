"""curate, part 1: silver resources -> flat rows through a SQL-on-FHIR v2 ViewDefinition.

Input columns: a silver table (`resource` JSON plus `passthrough` columns such as hospital, person_key).
Output columns: the `passthrough` columns, then the view's columns in order, typed from the view
(boolean, integer -> long, decimal -> double, anything else string; a collection column is a JSON
array as a string).
"""

from __future__ import annotations

import json

from transforms import fastjson
from transforms.arrow import map_tuple_rows

__all__ = ["apply_view", "view_columns"]

_SPARK_TYPES = {"boolean": "boolean", "integer": "long", "positiveInt": "long", "unsignedInt": "long", "integer64": "long", "decimal": "double"}
#: The Python type a value of each Spark type already has when `_cast` would return it unchanged.
_READY = {"string": str, "long": int, "double": float, "boolean": bool}


def view_columns(view: dict) -> list[tuple[str, str]]:
    """(name, Spark type) of each column the view produces."""
    from transforms.sqlonfhir import compile_view

    return _spark_columns(compile_view(view))


def _spark_columns(compiled) -> list[tuple[str, str]]:
    return [(name, "string" if collection else _SPARK_TYPES.get(kind or "", "string")) for name, kind, collection in compiled.columns]


def _cast(value, kind: str):
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if kind == "string":
        return value if isinstance(value, str) else (json.dumps(value) if isinstance(value, bool) else str(value))
    if kind == "long":
        return int(value)
    if kind == "double":
        return float(value)
    return bool(value)


def _caster(kind: str):
    """`_cast` for one Spark type, with the common cases first (one call per value, millions of values)."""
    if kind == "string":
        def cast(value):
            return value if type(value) is str or value is None else _cast(value, kind)
    else:
        def cast(value):
            return None if value is None else _cast(value, kind)
    return cast


def apply_view(silver, view: dict, *, passthrough: tuple[str, ...] = ("hospital", "person_key")):
    """Evaluate `view` over every resource of `silver`; see the module docstring for the columns."""
    from transforms.sqlonfhir import compile_view

    compiled = compile_view(view)
    columns = _spark_columns(compiled)
    out = [(name, "string") for name in passthrough] + columns
    cast_row = _row_caster([kind for _, kind in columns])
    evaluate = compiled.evaluate_tuples
    loads = fastjson.loads

    def rows(row: dict):
        resource = loads(row["resource"])  # the row's only parse; the view reads the parsed object
        head = tuple([row[name] for name in passthrough])
        return [head + cast_row(values) for values in evaluate(resource)]

    return map_tuple_rows(silver.select("resource", *passthrough), rows, out)


def _row_caster(kinds: list[str]):
    """A row of view values (a tuple) -> the row with each value cast to its column's Spark type.

    Generated for the view's column types: a value that already has its column's type, or None, is
    kept, the others take their caster; written out per column, this costs a third of a loop over
    the columns with a test per value (millions of rows, ten values each)."""
    if not kinds:
        return lambda row: ()
    ns = {f"cast{i}": _caster(kind) for i, kind in enumerate(kinds)}
    ns.update({f"ready{i}": _READY[kind] for i, kind in enumerate(kinds)})
    names = "".join(f"v{i}, " for i in range(len(kinds)))
    values = "".join(f"v{i} if type(v{i}) is ready{i} or v{i} is None else cast{i}(v{i}), " for i in range(len(kinds)))
    exec(f"def cast_row(row):\n    {names}= row\n    return ({values})\n", ns)
    return ns["cast_row"]
