"""The loop of one UDF worker process (see `transforms.udf_pool`): ``python -m transforms.udf_worker``.

Reads requests from stdin until end of file, which is also how it learns that its parent is gone.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback


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

    from transforms import gc_settings
    from transforms.arrow import map_batches
    from transforms.udf_pool import from_ipc, read_frame, to_ipc, write_frame

    gc_settings.relax()
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
