"""Run a per-row Python function inside the engine, in Arrow batches (``mapInArrow``).

The per-record work of carelake (parsing HL7 v2, mapping to FHIR, evaluating views, keyed hashing) has
no built-in Spark function; doing it in Arrow batches on the executors keeps it off the driver and
streams, so memory stays flat as data grows.

On the embedded Sail engine the Python function runs inside the Sail server, which lives in the
client's own process: every partition's Python work shares one interpreter and one GIL, so a 2-core
machine runs it on one core however many partitions there are. So there `map_rows` hands the batches
to a pool of worker processes (`transforms.udf_pool`: one per core by default, `udf_processes`;
started once, reused by every stage), keeping at most two batches per worker in flight so memory
stays bounded. On JVM Spark each task already has its own Python worker process, and batches are
mapped in place.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import sys
from concurrent.futures import Future
from typing import Callable, Iterable, Iterator

import pyarrow as pa

__all__ = ["map_rows", "map_tuple_rows", "as_dicts", "arrow_schema", "map_batch", "map_batches", "udf_processes"]

_TYPES = {
    "string": pa.string(), "long": pa.int64(), "bigint": pa.int64(), "int": pa.int32(), "integer": pa.int32(),
    "double": pa.float64(), "boolean": pa.bool_(),
}


def arrow_schema(ddl: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _TYPES[kind]) for name, kind in ddl])


class _TupleRows:
    """A row function whose output rows are tuples of the output columns in order (`map_tuple_rows`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[dict], Iterable[tuple]]):
        self.fn = fn


def map_batch(batch: pa.RecordBatch, fn: Callable[[dict], Iterable[dict]], schema: pa.Schema) -> pa.RecordBatch:
    """`fn` over every row of `batch`; the output rows gathered column by column into one batch.

    `fn` gives dicts keyed by column name, or, wrapped by `map_tuple_rows`, tuples in column order."""
    chunks = list(map_batches(batch, fn, schema))
    return chunks[0] if len(chunks) == 1 else pa.concat_batches(chunks)


def map_batches(batch: pa.RecordBatch, fn: Callable[[dict], Iterable[dict]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """`map_batch` as it goes: at least one batch, the last one possibly empty; a `map_tuple_rows`
    function's rows come in batches of at most `CHUNK_ROWS`, each made when the one before is taken."""
    if type(fn) is _TupleRows:
        yield from _map_tuple_batches(batch, fn.fn, schema)
        return
    names = schema.names
    columns: list[list] = [[] for _ in names]
    appends = [column.append for column in columns]
    for row in batch.to_pylist():
        for result in fn(row):
            get = result.get
            for append, name in zip(appends, names):
                append(get(name))
    yield pa.RecordBatch.from_arrays([pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema)


#: output rows held as Python tuples at a time before they become Arrow columns: a task of the ingest
#: split is a whole landing file, whose records, all as Python objects at once, took a worker to
#: 885 MiB for an 83 MB file (10,000 patients)
CHUNK_ROWS = 16_384


def _map_tuple_batches(batch: pa.RecordBatch, fn: Callable[[dict], Iterable[tuple]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    produced = (out for row in batch.to_pylist() for out in fn(row))
    while True:
        rows = list(itertools.islice(produced, CHUNK_ROWS))
        # zip(*rows) turns rows into columns in C: no dict per row, no Python call per value
        columns = list(zip(*rows)) if rows else [() for _ in schema]
        chunk = pa.RecordBatch.from_arrays([pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema)
        del rows, columns  # the tuples go before the next chunk's are made
        yield chunk
        if chunk.num_rows < CHUNK_ROWS:
            return
        del chunk


# -- the worker pool (embedded engine only) ------------------------------------------------------


def udf_processes() -> int:
    """Worker processes `map_rows` uses in this process (`transforms.udf_pool`).

    By default one per usable core when there are at least two (one core gains nothing from a
    second process); ``CARELAKE_UDF_PROCESSES=N`` sets it, ``0`` maps in process. Only a process that
    hosts the Sail server runs UDFs under the client's GIL, so the setting is ignored elsewhere (JVM
    Spark's Python workers, and the pool's own workers).
    """
    if "pysail.spark" not in sys.modules or os.environ.get("CARELAKE_UDF_WORKER"):
        return 0
    setting = os.environ.get("CARELAKE_UDF_PROCESSES")
    if setting:
        return max(0, int(setting))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores >= 2 else 0


def _map_parallel(batches: Iterator[pa.RecordBatch], fn, schema: pa.Schema, size: int,
                  rows_per_task: int) -> Iterator[pa.RecordBatch]:
    from pyspark import cloudpickle

    from transforms.udf_pool import get_pool

    payload = cloudpickle.dumps(fn)
    key = hashlib.sha256(payload).digest()
    pool = get_pool(size)
    # output chunks as the workers send them, and each slice's future once it is done (after its chunks)
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    window: set[Future] = set()  # in flight
    try:
        for batch in batches:
            # one engine batch may be all the input (ingest's few files): slices keep every worker busy
            for start in range(0, batch.num_rows, rows_per_task):
                future = pool.submit(key, payload, batch.slice(start, rows_per_task), schema, on_chunk=arrived.put)
                window.add(future)
                future.add_done_callback(arrived.put)
                if len(window) >= 2 * size:  # at most two slices per worker in flight: memory stays bounded
                    yield from _until_a_slice_ends(arrived, window)
        while window:
            yield from _until_a_slice_ends(arrived, window)
    finally:
        for future in window:
            future.cancel()


def _until_a_slice_ends(arrived: queue.SimpleQueue, window: set) -> Iterator[pa.RecordBatch]:
    """Yield the chunks of `arrived` as they come, until a slice of `window` ends (taking it out).

    Chunks go out as the workers make them, whichever slice they belong to: a slow slice (a big file,
    an HL7-heavy batch) holds back neither the others nor its own first chunks, and the parent holds
    no slice's whole output."""
    while True:
        item = arrived.get()
        if isinstance(item, Future):
            window.discard(item)
            item.result()  # a failed slice raises here
            return
        yield item


def map_rows(df, fn: Callable[[dict], Iterable[dict]], out: list[tuple[str, str]], *, rows_per_task: int = 2048):
    """`df.mapInArrow` with `fn` turning each input row (a dict) into zero or more output rows.

    `out` lists the output columns as (name, type) with types string, long, int, double, boolean.
    `fn` must be picklable with cloudpickle (it is, like any mapInArrow function). With the worker pool,
    each worker maps at most `rows_per_task` input rows at a time: give 1 when a row is a large unit of
    work (a whole file).
    """
    schema = arrow_schema(out)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        size = udf_processes()
        if size:
            yield from _map_parallel(batches, fn, schema, size, rows_per_task)
        else:
            for batch in batches:
                yield from map_batches(batch, fn, schema)

    return df.mapInArrow(run, ", ".join(f"`{name}` {kind}" for name, kind in out))


def map_tuple_rows(df, fn: Callable[[dict], Iterable[tuple]], out: list[tuple[str, str]], *, rows_per_task: int = 2048):
    """`map_rows` with `fn` giving each output row as a tuple of the values of `out`, in its order.

    For a function with many output rows: a tuple costs less to build and to gather than a dict."""
    return map_rows(df, _TupleRows(fn), out, rows_per_task=rows_per_task)


def as_dicts(rows: Iterable[tuple], out: list[tuple[str, str]]) -> Iterator[dict]:
    """Rows of a `map_tuple_rows` function as dicts keyed by the names of `out` (for callers that
    read columns by name: tests, the bench's baseline)."""
    names = [name for name, _ in out]
    for values in rows:
        yield dict(zip(names, values))
