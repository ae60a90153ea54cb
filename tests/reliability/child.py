"""Run pipeline stages in a child process (its own embedded Sail), for the crash and concurrency tests.

    python tests/reliability/child.py WORKDIR CONF STAGE[,STAGE...] [HOSPITAL[,HOSPITAL...]]

Prints one JSON line with the run summary. The fault hook (CARELAKE_FAULT) comes from the environment.
"""

import json
import sys
from pathlib import Path


def _limit_file_size() -> None:
    """CARELAKE_TEST_FSIZE=<bytes>: no file may grow past it, as on a full disk (EFBIG instead of ENOSPC)."""
    import os
    import resource
    import signal

    limit = os.environ.get("CARELAKE_TEST_FSIZE")
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a dead process
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))


def main() -> None:
    _limit_file_size()
    from carelake.config import load_config
    from carelake.pipeline import run_pipeline

    workdir, conf, stages = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    hospitals = sys.argv[4].split(",") if len(sys.argv) > 4 else None
    summary = run_pipeline(load_config(conf), workdir, stages, hospitals=hospitals, triggered_by="test-child")
    print("SUMMARY " + json.dumps({"error": summary.error, "exit_code": summary.exit_code, "run_id": summary.run_id}))
    sys.exit(summary.exit_code)


if __name__ == "__main__":  # the ingest's worker processes re-import this file: run only once
    main()
