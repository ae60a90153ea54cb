"""What the Airflow tasks call: one stage of the pipeline, with counts (never data) for XCom.

Kept out of dags/ so that DAG files import nothing heavy at parse time.
"""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

from carelake.config import load_config
from carelake.errors import CarelakeError

__all__ = ["run_stage"]

log = logging.getLogger("carelake")


def run_stage(stage: str, *, run_id: str, as_of: date | None = None, conf_dir: str | None = None,
              workdir: str | None = None) -> dict:
    """Run one stage; raise (failing the task) with the stage's own message when it stops."""
    from carelake.pipeline import run_pipeline

    config = load_config(conf_dir or os.environ.get("CARELAKE_CONF") or None)
    summary = run_pipeline(config, Path(workdir or os.environ.get("CARELAKE_HOME") or "carelake-home"), [stage],
                           as_of=as_of, run_id=run_id, triggered_by=f"airflow:{os.environ.get('AIRFLOW_CTX_DAG_ID', '?')}")
    result = summary.results.get(stage, {})
    log.info("carelake %s: %s", stage, {k: v for k, v in result.items() if k != "error"})
    if summary.error:
        raise CarelakeError(summary.error)
    return {"stage": stage, "run_id": run_id, "result": result}
