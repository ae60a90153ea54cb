"""The loop of one UDF worker process (see `transforms.udf_pool`): ``python -m transforms.udf_worker``.

Reads requests from stdin until end of file, which is also how it learns that its parent is gone.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import traceback


#: the cycle collector's (young, middle, old) thresholds in a worker, Python's being (700, 10, 10). A
#: worker makes a tuple and a few dicts per record and holds a chunk of 16,384 rows (`transforms.arrow`),
#: none of them in cycles (reference counting frees them), and the default collector walked the held
#: chunks again every few records. Two workers of a 4,000-patient normalize and curate (2026-12-07):
#: 2.46 s of collections (6,409) by default, 0.18 s with these. Cycles are still collected, later. The
#: client keeps Python's default: its 0.45 s of collections did not shrink with these.
GC_THRESHOLDS = (50_000, 20, 20)

_CHUNK = pickle.dumps(("chunk",), protocol=5)
_OK = pickle.dumps(("ok",), protocol=5)


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    # a mapped function that prints must not corrupt the reply stream, nor read the requests
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    # Ctrl-C reaches the whole process group; the parent decides, and closes our stdin when it stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from pyspark import cloudpickle

    from transforms.arrow import map_batches
    from transforms.udf_pool import from_ipc, read_frame, to_ipc, write_frame

    gc.set_threshold(*GC_THRESHOLDS)
    functions: dict[bytes, object] = {}
    while (frame := read_frame(requests)) is not None:
        key, payload, reset, schema = pickle.loads(frame)
        data = read_frame(requests)
        if data is None:
            break
        try:
            if reset:
                functions.clear()
            if payload is not None:
                functions[key] = cloudpickle.loads(payload)
            for chunk in map_batches(from_ipc(data), functions[key], schema):
                write_frame(replies, _CHUNK)
                write_frame(replies, to_ipc([chunk], schema))
                del chunk  # sent: only the chunk being made is held
        except Exception as exc:  # noqa: BLE001 - the parent re-raises it where the batch was submitted
            write_frame(replies, pickle.dumps(("error", _portable(exc), traceback.format_exc()), protocol=5))
            continue
        del data
        write_frame(replies, _OK)


def _portable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its type and text
        return RuntimeError(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
