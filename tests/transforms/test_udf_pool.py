"""The UDF worker pool: same rows as in process, errors surface, workers die with their parent."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from transforms.arrow import arrow_schema, map_batch
from transforms.udf_pool import WorkerError, WorkerPool

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = arrow_schema([("x", "long"), ("doubled", "long")])


def _double(row):
    print("a mapped function may print")  # must not corrupt the reply stream
    yield {"x": row["x"], "doubled": 2 * row["x"]}


def _batch(values) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"x": pa.array(values, pa.int64())})


def _submit(pool, fn, batch):
    from pyspark import cloudpickle

    payload = cloudpickle.dumps(fn)
    return pool.submit(hashlib.sha256(payload).digest(), payload, batch, SCHEMA)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_pool_maps_like_map_batch_and_reuses_its_workers():
    pool = WorkerPool(2)
    try:
        batches = [_batch(range(i * 100, i * 100 + 100)) for i in range(8)]
        futures = [_submit(pool, _double, b) for b in batches]
        assert [f.result(60).to_pylist() for f in futures] == [map_batch(b, _double, SCHEMA).to_pylist() for b in batches]
        assert 1 <= len(pool.pids()) <= 2
    finally:
        pool.close()


def test_an_exception_in_the_function_keeps_its_type_and_the_worker():
    def explode(row):
        raise ValueError("mapper bug at x")

    pool = WorkerPool(1)
    try:
        with pytest.raises(ValueError, match="mapper bug at x"):
            _submit(pool, explode, _batch([1])).result(60)
        (pid,) = pool.pids()
        assert _submit(pool, _double, _batch([3])).result(60).to_pylist() == [{"x": 3, "doubled": 6}]
        assert pool.pids() == [pid]
    finally:
        pool.close()


def test_a_function_the_worker_cannot_load_fails_the_same_way_every_time(tmp_path, monkeypatch):
    pool = WorkerPool(1)
    try:
        _submit(pool, _double, _batch([1])).result(60)  # the worker starts without tmp_path on its path
        (tmp_path / "late_module.py").write_text("def late(row):\n    yield {'x': row['x'], 'doubled': 0}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        from late_module import late

        for _ in range(2):
            with pytest.raises(ModuleNotFoundError, match="late_module"):
                _submit(pool, late, _batch([1])).result(60)
    finally:
        pool.close()


def test_a_killed_worker_is_a_clear_error_and_is_replaced():
    pool = WorkerPool(1)
    try:
        _submit(pool, _double, _batch([1])).result(60)
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerError, match=r"UDF worker process \d+ exited .* batch of 2 rows"):
            _submit(pool, _double, _batch([1, 2])).result(60)
        assert _submit(pool, _double, _batch([5])).result(60).to_pylist() == [{"x": 5, "doubled": 10}]
        assert pool.pids() and pool.pids() != [pid]
    finally:
        pool.close()


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import pyarrow as pa
        from tests.transforms.test_udf_pool import SCHEMA, _batch, _double, _submit
        from transforms.udf_pool import WorkerPool
        pool = WorkerPool(2)
        for f in [_submit(pool, _double, _batch([i])) for i in range(4)]:
            f.result(60)
        print(*pool.pids(), flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "a UDF worker outlived its SIGKILLed parent"
    finally:
        parent.kill()


def test_a_script_without_a_main_guard_maps_in_workers(tmp_path):
    """multiprocessing's spawn would run this script again in each worker; the pool's workers do not."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import os
        from carelake.engine import get_spark
        from transforms.arrow import map_rows, udf_processes

        def pid_of(row):
            yield {"x": row["x"], "pid": os.getpid()}

        spark = get_spark()
        rows = map_rows(spark.range(0, 2000, numPartitions=4).withColumnRenamed("id", "x"), pid_of,
                        [("x", "long"), ("pid", "long")]).collect()
        pids = {r["pid"] for r in rows}
        print(udf_processes(), len(rows), os.getpid() in pids, len(pids), flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "CARELAKE_UDF_PROCESSES": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    size, rows, in_parent, distinct = done.stdout.split()
    assert (size, rows, in_parent) == ("2", "2000", "False")
    assert 1 <= int(distinct) <= 2


def _slow_pid(row):
    time.sleep(0.2)  # long enough that both workers get a slice
    yield {"x": row["x"], "pid": os.getpid()}


def test_map_rows_spreads_one_batch_over_the_workers(spark, monkeypatch):
    from transforms.arrow import map_rows

    monkeypatch.setenv("CARELAKE_UDF_PROCESSES", "2")
    one_batch = spark.createDataFrame([(i,) for i in range(8)], "x long").coalesce(1)
    rows = map_rows(one_batch, _slow_pid, [("x", "long"), ("pid", "long")], rows_per_task=1).collect()
    assert sorted(r["x"] for r in rows) == list(range(8))
    assert len({r["pid"] for r in rows}) == 2 and os.getpid() not in {r["pid"] for r in rows}


def _first_slow(row):
    if row["x"] == 0:
        time.sleep(1.5)
    yield {"x": row["x"]}


def test_a_slow_slice_does_not_hold_back_the_ones_after_it(spark, monkeypatch):
    from transforms.arrow import map_rows

    monkeypatch.setenv("CARELAKE_UDF_PROCESSES", "2")
    one_batch = spark.createDataFrame([(i,) for i in range(8)], "x long").coalesce(1)
    rows = map_rows(one_batch, _first_slow, [("x", "long")], rows_per_task=1).collect()
    # the other worker maps slices 1-7 meanwhile, and they come out as they finish
    assert [r["x"] for r in rows][-1] == 0
    assert sorted(r["x"] for r in rows) == list(range(8))


def _double_tuple(row):
    yield (row["x"], 2 * row["x"])


def test_tuple_rows_map_like_dict_rows_in_process_and_in_the_pool():
    from transforms.arrow import _TupleRows

    batch = _batch(range(50))
    expected = map_batch(batch, _double, SCHEMA).to_pylist()
    assert map_batch(batch, _TupleRows(_double_tuple), SCHEMA).to_pylist() == expected
    assert map_batch(_batch([]), _TupleRows(_double_tuple), SCHEMA).num_rows == 0
    pool = WorkerPool(1)
    try:
        assert _submit(pool, _TupleRows(_double_tuple), batch).result(60).to_pylist() == expected
    finally:
        pool.close()


def _fan_out(row):
    for i in range(row["x"]):
        yield (row["x"], i)


@pytest.mark.parametrize("rows_out", [0, 6, 7, 20])
def test_tuple_rows_become_columns_in_chunks_with_every_row_in_order(monkeypatch, rows_out):
    # one input row giving many output rows (a landing file's records): gathered CHUNK_ROWS at a time
    from transforms import arrow

    monkeypatch.setattr(arrow, "CHUNK_ROWS", 7)
    batch = _batch([rows_out, 2])
    expected = [{"x": x, "doubled": i} for x in (rows_out, 2) for i in range(x)]
    chunks = list(arrow.map_batches(batch, arrow._TupleRows(_fan_out), SCHEMA))
    assert [c.num_rows for c in chunks] == [7] * (len(expected) // 7) + [len(expected) % 7]
    out = map_batch(batch, arrow._TupleRows(_fan_out), SCHEMA)
    assert out.schema == SCHEMA
    assert out.to_pylist() == expected


def test_a_worker_answers_a_large_output_in_chunks_with_every_row_in_order():
    # the ingest split: one input row (a file) giving more rows than a chunk; the worker writes each
    # chunk to its reply as it is made instead of joining them first
    from transforms.arrow import CHUNK_ROWS, _TupleRows

    rows_out = 2 * CHUNK_ROWS + 5
    pool = WorkerPool(1)
    try:
        reply = _submit(pool, _TupleRows(_fan_out), _batch([rows_out, 3])).result(60)
    finally:
        pool.close()
    assert [b.num_rows for b in reply.to_batches()] == [CHUNK_ROWS, CHUNK_ROWS, 8]
    assert reply.to_pylist() == [{"x": x, "doubled": i} for x in (rows_out, 3) for i in range(x)]


def _gated(gate: Path):
    """A tuple-row function that makes one chunk, then waits for `gate` to exist before its last row."""
    from transforms.arrow import CHUNK_ROWS, _TupleRows

    def gated(row):
        for i in range(CHUNK_ROWS + 1):
            while i == CHUNK_ROWS and not gate.exists():
                time.sleep(0.01)
            yield (row["x"], i)

    return _TupleRows(gated)


def test_a_worker_sends_each_chunk_as_soon_as_it_is_made(tmp_path):
    # so a worker holds one chunk of a landing file's records, not the whole file's: the first chunk
    # must reach the parent while the function is still making the second
    import pickle
    import select

    from pyspark import cloudpickle

    from transforms.arrow import CHUNK_ROWS
    from transforms.udf_pool import _Worker, read_frame, table_from_ipc, to_ipc, write_frame

    gate = tmp_path / "go"
    worker = _Worker()
    try:
        write_frame(worker.process.stdin, pickle.dumps((b"gated", cloudpickle.dumps(_gated(gate)), False, SCHEMA)))
        batch = _batch([4])
        write_frame(worker.process.stdin, to_ipc([batch], batch.schema))
        ready, _, _ = select.select([worker.process.stdout], [], [], 20)
        assert ready, "no chunk arrived while the function was still running"
        assert pickle.loads(read_frame(worker.process.stdout)) == ("chunk",)
        assert table_from_ipc(read_frame(worker.process.stdout)).num_rows == CHUNK_ROWS
        gate.touch()
        assert pickle.loads(read_frame(worker.process.stdout)) == ("chunk",)
        assert table_from_ipc(read_frame(worker.process.stdout)).to_pylist() == [{"x": 4, "doubled": CHUNK_ROWS}]
        assert pickle.loads(read_frame(worker.process.stdout)) == ("ok",)
    finally:
        gate.touch()
        worker.close()


def test_map_rows_hands_on_each_chunk_before_its_slice_ends(tmp_path):
    # and the parent passes it on at once: it holds no slice's whole output either
    from concurrent.futures import ThreadPoolExecutor

    from transforms.arrow import CHUNK_ROWS, _map_parallel

    gate = tmp_path / "go"
    out = _map_parallel(iter([_batch([5])]), _gated(gate), SCHEMA, 1, 1)
    with ThreadPoolExecutor(1) as thread:
        try:
            first = thread.submit(next, out).result(timeout=20)
        finally:
            gate.touch()
        assert first.num_rows == CHUNK_ROWS and first.column("doubled").to_pylist() == list(range(CHUNK_ROWS))
        assert [b.to_pylist() for b in out if b.num_rows] == [[{"x": 5, "doubled": CHUNK_ROWS}]]


def _thresholds(row):
    import gc

    yield {"x": row["x"], "doubled": gc.get_threshold()[0]}


def test_workers_collect_garbage_less_often_than_the_default():
    import gc

    from transforms.udf_worker import GC_THRESHOLDS as THRESHOLDS

    assert gc.get_threshold()[0] < THRESHOLDS[0]  # the test process keeps Python's default
    pool = WorkerPool(1)
    try:
        assert _submit(pool, _thresholds, _batch([1])).result(60).to_pylist() == [{"x": 1, "doubled": THRESHOLDS[0]}]
    finally:
        pool.close()
