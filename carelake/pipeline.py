"""Run stages in order over one conf directory and working directory, and summarise the run."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from carelake.config import Config, load_config
from carelake.context import Progress, RunContext, new_run_id
from carelake.engine import get_spark
from carelake.errors import CarelakeError
from carelake.lake import Lake

__all__ = ["STAGES", "run_pipeline", "RunSummary", "summarize"]

log = logging.getLogger("carelake")

STAGES = ("ingest", "normalize", "validate", "curate", "marts")


@dataclass
class RunSummary:
    run_id: str
    stages: list[str]
    results: dict = field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "stages": self.stages, "results": self.results, "error": self.error,
                "exit_code": self.exit_code, "seconds": round(self.seconds, 1)}


def _stage(name: str):
    from carelake import curate, ingest, marts, normalize, validate

    return {"ingest": ingest.run, "normalize": normalize.run, "validate": validate.run, "curate": curate.run, "marts": marts.run}[name]


def run_pipeline(config: Config | Path | str | None, workdir: Path | str | None, stages: list[str] | None = None, *,
                 progress: Progress | None = None, as_of: date | None = None, run_id: str | None = None,
                 triggered_by: str = "cli") -> RunSummary:
    """Run `stages` (default: all, in order). A quality or privacy gate stops the run with its message
    in `RunSummary.error`; the tables published before stay as they were."""
    config = config if isinstance(config, Config) else load_config(config)
    stages = list(stages or STAGES)
    for name in stages:
        if name not in STAGES:
            raise CarelakeError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    from carelake.curate import deid_policy

    deid_policy(config, as_of or date.today())  # no key, no run: checked before any work
    lake = Lake.from_config(config, workdir)
    ctx = RunContext(config, lake, get_spark(config.engine), run_id=run_id or new_run_id(),
                     as_of=as_of or datetime.now(timezone.utc).date(), progress=progress or Progress(enabled=False))
    summary = RunSummary(ctx.run_id, stages)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name in stages:
        log.info("stage %s starts (run %s)", name, ctx.run_id)
        try:
            ctx.results[name] = _stage(name)(ctx)
        except CarelakeError as exc:
            summary.error, summary.exit_code = f"{name}: {exc}", exc.exit_code
            ctx.results[name] = {"error": str(exc)}
            break
    summary.results = ctx.results
    summary.seconds = time.monotonic() - started
    _audit(ctx, summary, started_at, triggered_by)
    return summary


def _audit(ctx: RunContext, summary: RunSummary, started_at: str, triggered_by: str) -> None:
    """One row per run in phi.audit: who, when, which stages, outcome, counts (never record content)."""
    row = {
        "run_id": summary.run_id, "triggered_by": triggered_by, "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stages": ",".join(summary.stages),
        "status": "failed" if summary.error else "succeeded", "error": summary.error,
        "summary": json.dumps(summary.results, default=str, sort_keys=True),
    }
    schema = "run_id string, triggered_by string, started_at string, finished_at string, stages string, status string, error string, summary string"
    ctx.lake.merge(ctx.spark, ctx.spark.createDataFrame([row], schema), "phi.audit", keys=["run_id"])


def summarize(lake: Lake, spark) -> dict:
    """Tables per zone, quarantine by reason: what `carelake demo` prints after a run."""
    from pyspark.sql import functions as F

    tables = [t.__dict__ for t in lake.tables()]
    quarantine = []
    if lake.exists("phi.quarantine"):
        grouped = lake.read(spark, "phi.quarantine").groupBy(F.concat_ws("/", "hospital", "feed").alias("feed"), "error_code", "reason").count()
        quarantine = [r.asDict() for r in grouped.orderBy("feed", "error_code", "reason").collect()]
    return {"tables": tables, "quarantine": quarantine}
