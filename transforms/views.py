"""curate, part 1: silver resources -> flat rows through a SQL-on-FHIR v2 ViewDefinition.

Input columns: a silver table (`resource` JSON plus `passthrough` columns such as hospital, person_key).
Output columns: the `passthrough` columns, then the view's columns in order, typed from the view
(boolean, integer -> long, decimal -> double, anything else string; a collection column is a JSON
array as a string).
"""

from __future__ import annotations

import json

from transforms.arrow import map_rows

__all__ = ["apply_view", "view_columns"]

_SPARK_TYPES = {"boolean": "boolean", "integer": "long", "positiveInt": "long", "unsignedInt": "long", "integer64": "long", "decimal": "double"}


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


def apply_view(silver, view: dict, *, passthrough: tuple[str, ...] = ("hospital", "person_key")):
    """Evaluate `view` over every resource of `silver`; see the module docstring for the columns."""
    from transforms.sqlonfhir import compile_view

    compiled = compile_view(view)
    columns = _spark_columns(compiled)
    out = [(name, "string") for name in passthrough] + columns

    def rows(row: dict):
        resource = json.loads(row["resource"])
        for result in compiled.evaluate(resource):
            yield {**{name: row[name] for name in passthrough}, **{name: _cast(result.get(name), kind) for name, kind in columns}}

    return map_rows(silver.select("resource", *passthrough), rows, out)
