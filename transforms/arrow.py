"""Run a per-row Python function inside the engine, in Arrow batches (``mapInArrow``).

The per-record work of carelake (parsing HL7 v2, mapping to FHIR, evaluating views, keyed hashing) has
no built-in Spark function; doing it in Arrow batches on the executors keeps it off the driver and
streams, so memory stays flat as data grows.

On the embedded Sail engine the Python function runs inside the Sail server, which lives in the
client's own process: every partition's Python work shares one interpreter and one GIL, so a 2-core
machine runs it on one core however many partitions there are. With ``CARELAKE_UDF_PROCESSES=N``
(opt-in, see `udf_processes`) `map_rows` hands the batches to a pool of N worker processes there
(started once, reused by every stage), keeping at most two batches per worker in flight so memory
stays bounded. On JVM Spark each task already has its own Python worker process, and batches are
mapped in place. The workers are started with ``spawn``, so a script that turns the pool on must run
the pipeline under ``if __name__ == "__main__":`` (the ``carelake`` command, ``python -m`` and pytest do).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import threading
from collections import deque
from typing import Callable, Iterable, Iterator

import pyarrow as pa

__all__ = ["map_rows", "arrow_schema", "map_batch", "udf_processes"]

_TYPES = {
    "string": pa.string(), "long": pa.int64(), "bigint": pa.int64(), "int": pa.int32(), "integer": pa.int32(),
    "double": pa.float64(), "boolean": pa.bool_(),
}


def arrow_schema(ddl: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _TYPES[kind]) for name, kind in ddl])


def map_batch(batch: pa.RecordBatch, fn: Callable[[dict], Iterable[dict]], schema: pa.Schema) -> pa.RecordBatch:
    """`fn` over every row of `batch`; the output rows gathered column by column into one batch."""
    names = schema.names
    columns: list[list] = [[] for _ in names]
    appends = [column.append for column in columns]
    for row in batch.to_pylist():
        for result in fn(row):
            get = result.get
            for append, name in zip(appends, names):
                append(get(name))
    return pa.RecordBatch.from_arrays([pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema)


# -- the worker pool (embedded engine only) ------------------------------------------------------

_pool = None
_pool_lock = threading.Lock()
_worker_fns: dict[bytes, Callable] = {}


def udf_processes() -> int:
    """Worker processes `map_rows` uses in this process: opt-in with CARELAKE_UDF_PROCESSES.

    Off by default: the measured gain was small (about 20 % on the demo) against real costs: spawned
    workers outlive a SIGKILLed parent, and scripts need a ``__main__`` guard. Only a process that hosts
    the Sail server runs UDFs under the client's GIL, so the setting is ignored elsewhere.
    """
    setting = os.environ.get("CARELAKE_UDF_PROCESSES")
    if not setting or "pysail.spark" not in sys.modules:
        return 0
    return max(0, int(setting))


def _get_pool(size: int):
    global _pool
    with _pool_lock:
        if _pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the Sail server's threads make forking this process unsafe
            _pool = ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        return _pool


def _run_in_worker(key: bytes, payload: bytes, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    fn = _worker_fns.get(key)
    if fn is None:
        from pyspark import cloudpickle

        if len(_worker_fns) > 64:  # one entry per stage function; drop old stages' state
            _worker_fns.clear()
        fn = _worker_fns[key] = cloudpickle.loads(payload)
    return map_batch(batch, fn, schema)


def _map_parallel(batches: Iterator[pa.RecordBatch], fn, schema: pa.Schema, size: int) -> Iterator[pa.RecordBatch]:
    from pyspark import cloudpickle

    payload = cloudpickle.dumps(fn)
    key = hashlib.sha256(payload).digest()
    pool = _get_pool(size)
    window: deque = deque()
    for batch in batches:
        if batch.num_rows == 0:
            continue
        window.append(pool.submit(_run_in_worker, key, payload, batch, schema))
        if len(window) >= 2 * size:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def map_rows(df, fn: Callable[[dict], Iterable[dict]], out: list[tuple[str, str]]):
    """`df.mapInArrow` with `fn` turning each input row (a dict) into zero or more output rows.

    `out` lists the output columns as (name, type) with types string, long, int, double, boolean.
    `fn` must be picklable with cloudpickle (it is, like any mapInArrow function).
    """
    schema = arrow_schema(out)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        size = udf_processes()
        if size:
            yield from _map_parallel(batches, fn, schema, size)
        else:
            for batch in batches:
                yield map_batch(batch, fn, schema)

    return df.mapInArrow(run, ", ".join(f"`{name}` {kind}" for name, kind in out))
