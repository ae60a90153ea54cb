"""A pool of Python worker processes for the per-row functions of `transforms.arrow.map_rows`.

Used on the embedded Sail engine only, where UDFs run inside the client's own process under one GIL.

Not `multiprocessing`: its `spawn` workers re-run the parent's ``__main__`` (an Airflow task process
cannot import the ``airflow`` script; a script without a ``__main__`` guard starts itself again) and
they outlive a parent killed with SIGKILL. These workers are plain ``python -m transforms.udf_worker``
subprocesses speaking over their stdin/stdout pipes: they import only what the mapped function needs,
and they exit when their stdin reaches end of file, which the kernel causes when the parent dies,
however it dies.

Frames in both directions: 8-byte little-endian length, then the bytes. A request is two frames: a
pickle of ``(key, payload | None, reset, output schema)``, where ``payload`` is the cloudpickled
function, sent to a worker once per key, then the input batch as an Arrow IPC stream. A reply is a
sequence of pickled tags: ``("chunk",)`` followed by one output chunk as an IPC stream, as many as
the function makes, then ``("ok",)``; or, at any point, ``("error", exception, traceback text)``.
A worker sends each chunk as soon as it is made and lets it go, and the parent hands each chunk on
as it arrives (`WorkerPool.submit`'s `on_chunk`): a task of the ingest split is a whole landing file,
whose output a worker, and then the parent, held whole until 2026-12-06 (ingest at 50,000 patients:
workers 1.4-2.0 GiB each and 4.1-4.3 GiB for the process tree; now 0.26 GiB each and 2.3 GiB).
Batches travel as IPC, not pickles: a pickle of a slice carries its whole parent buffer and copies it
twice; IPC writes only the slice, and reads without a copy.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable

import pyarrow as pa

__all__ = ["WorkerPool", "WorkerError", "get_pool", "read_frame", "write_frame", "to_ipc", "from_ipc", "table_from_ipc"]

_HEADER = struct.Struct("<Q")
#: functions a worker keeps; past this the parent tells it to drop them (one per stage and table)
_MAX_FUNCTIONS = 32


class WorkerError(RuntimeError):
    """A worker process died or broke the protocol (for example killed by the OOM killer)."""


def write_frame(stream, data) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def to_ipc(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> pa.Buffer:
    """The batches as one IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


def table_from_ipc(data: bytes) -> pa.Table:
    """Every batch of an IPC stream (a worker's reply), without a copy."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def read_frame(stream) -> bytes | None:
    """The next frame's bytes, or None at end of file (the other side is gone)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


class _Worker:
    def __init__(self):
        env = dict(os.environ, CARELAKE_UDF_WORKER="1")
        # the worker must import what the parent can: the project, tests, plug-ins on sys.path
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        self.process = subprocess.Popen([sys.executable, "-m", "transforms.udf_worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, close_fds=True)
        self.keys: set[bytes] = set()

    def call(self, key: bytes, payload: bytes, batch: pa.RecordBatch, schema: pa.Schema, on_chunk=None) -> pa.Table | None:
        reset = key not in self.keys and len(self.keys) >= _MAX_FUNCTIONS
        if reset:
            self.keys.clear()
        request = (key, None if key in self.keys else payload, reset, schema)
        chunks: list[pa.RecordBatch] = []
        try:
            write_frame(self.process.stdin, pickle.dumps(request, protocol=5))
            write_frame(self.process.stdin, to_ipc([batch], batch.schema))
            reply = self._reply(on_chunk or chunks.append)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            code = self.process.poll()
            raise WorkerError(f"UDF worker process {self.process.pid} exited (code {code}) while mapping a batch of "
                              f"{batch.num_rows} rows; CARELAKE_UDF_PROCESSES=0 maps in process")
        if reply[0] == "ok":
            self.keys.add(key)
            return None if on_chunk else pa.Table.from_batches(chunks, schema)
        self.keys.discard(key)  # the worker may not hold the function (its unpickling failed): send it again
        exc, remote = reply[1:]
        exc.__cause__ = WorkerError(f"in the UDF worker process:\n{remote}")
        raise exc

    def _reply(self, deliver) -> tuple | None:
        """Each chunk of a reply to `deliver` as it arrives; the closing tag, or None when the worker is gone."""
        while (frame := read_frame(self.process.stdout)) is not None:
            tag = pickle.loads(frame)
            if tag[0] != "chunk":
                return tag
            if (data := read_frame(self.process.stdout)) is None:
                return None
            for chunk in table_from_ipc(data).to_batches():
                deliver(chunk)
        return None

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.process.stdin.close()  # end of file: the worker's loop ends
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


class WorkerPool:
    """`size` worker processes, started on first use; `submit` maps one batch on an idle one.

    One thread per worker feeds it, so at most `size` batches are being mapped at once; the pipes
    release the GIL while the workers compute."""

    def __init__(self, size: int):
        self.size = size
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="carelake-udf")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def submit(self, key: bytes, payload: bytes, batch: pa.RecordBatch, schema: pa.Schema, on_chunk=None) -> Future:
        """Map `batch`; the future's result is the output as one table, or, with `on_chunk`, None:
        each output chunk is passed to `on_chunk` (on the pool's thread) as it arrives."""
        return self._threads.submit(self._call, key, payload, batch, schema, on_chunk)

    def _call(self, key, payload, batch, schema, on_chunk) -> pa.Table | None:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker()
            with self._lock:
                self._workers.append(worker)
        try:
            result = worker.call(key, payload, batch, schema, on_chunk)
        except WorkerError:
            self._discard(worker)
            raise
        except BaseException:
            self._idle.put(worker)  # the function raised; the worker itself is fine
            raise
        self._idle.put(worker)
        return result

    def _discard(self, worker: _Worker) -> None:
        worker.close(timeout=0.1)
        with self._lock:
            self._workers.remove(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def get_pool(size: int) -> WorkerPool:
    """This process's pool, started once and reused by every stage (a new size replaces it)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.size != size:
            if _pool is not None:
                _pool.close()
            _pool = WorkerPool(size)
        return _pool


def _close_pool() -> None:
    if _pool is not None:
        _pool.close()


def _forget_pool_in_child() -> None:
    # a forked child shares the parent's pipes: it must start its own workers, never talk to these
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


atexit.register(_close_pool)
os.register_at_fork(after_in_child=_forget_pool_in_child)
