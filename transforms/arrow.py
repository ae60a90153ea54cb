"""Run a per-row Python function inside the engine, in Arrow batches (``mapInArrow``).

The per-record work of carelake (parsing HL7 v2, mapping to FHIR, evaluating views, keyed hashing) has
no built-in Spark function; doing it in Arrow batches on the executors keeps it off the driver and
streams, so memory stays flat as data grows.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import pyarrow as pa

__all__ = ["map_rows", "arrow_schema"]

_TYPES = {
    "string": pa.string(), "long": pa.int64(), "bigint": pa.int64(), "int": pa.int32(), "integer": pa.int32(),
    "double": pa.float64(), "boolean": pa.bool_(),
}


def arrow_schema(ddl: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _TYPES[kind]) for name, kind in ddl])


def map_rows(df, fn: Callable[[dict], Iterable[dict]], out: list[tuple[str, str]]):
    """`df.mapInArrow` with `fn` turning each input row (a dict) into zero or more output rows.

    `out` lists the output columns as (name, type) with types string, long, int, double, boolean.
    """
    schema = arrow_schema(out)
    names = [name for name, _ in out]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns: dict[str, list] = {name: [] for name in names}
            for row in batch.to_pylist():
                for result in fn(row):
                    for name in names:
                        columns[name].append(result.get(name))
            yield pa.RecordBatch.from_pydict(columns, schema=schema)

    return df.mapInArrow(run, ", ".join(f"`{name}` {kind}" for name, kind in out))
