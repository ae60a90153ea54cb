"""curate, part 1: silver resources -> flat rows through a SQL-on-FHIR v2 ViewDefinition.

Input columns: a silver table (`resource` JSON plus `passthrough` columns such as hospital, person_key).
Output columns: the `passthrough` columns, then the view's columns in order, typed from the view
(boolean, integer -> long, decimal -> double, anything else string; a collection column is a JSON
array as a string).
"""

from __future__ import annotations

import json

from transforms import fastjson
from transforms.arrow import map_rows

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
    names = [name for name, _ in out]
    # Most values already have their column's type (a str for a string column): only the others, and
    # None, take the call to their caster.
    converters = [(_READY[kind], _caster(kind)) for _, kind in columns]

    def rows(row: dict):
        resource = fastjson.loads(row["resource"])  # the row's only parse; the view reads the parsed object
        head = [row[name] for name in passthrough]
        for values in compiled.evaluate_tuples(resource):
            yield dict(zip(names, head + [value if type(value) is ready else cast(value)
                                          for (ready, cast), value in zip(converters, values)]))

    return map_rows(silver.select("resource", *passthrough), rows, out)
