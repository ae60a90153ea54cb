"""Run stages in order over one conf directory and working directory, and summarise the run."""

from __future__ import annotations

import json
import logging
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from carelake.config import Config, load_config
from carelake.context import Progress, RunContext, new_run_id
from carelake.engine import get_spark
from carelake.errors import CarelakeError, StageFailedError
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
                 triggered_by: str = "cli", hospitals: list[str] | None = None,
                 received_between: tuple[datetime, datetime] | None = None, full: bool = False) -> RunSummary:
    """Run `stages` (default: all, in order). A quality or privacy gate stops the run with its message
    in `RunSummary.error`; the tables published before stay as they were. `hospitals` and
    `received_between` restrict ingest (see `carelake.ingest.run`); `full` makes normalize map every
    bronze record again (see `carelake.normalize.run`)."""
    config = config if isinstance(config, Config) else load_config(config)
    stages = list(stages or STAGES)
    for name in stages:
        if name not in STAGES:
            raise CarelakeError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    from carelake.curate import deid_policy

    deid_policy(config, as_of or date.today())  # no key, no run: checked before any work
    if "normalize" in stages:
        _say_how_mappers_run()
    run_id = run_id or new_run_id()
    lake = Lake.from_config(config, workdir, run_id=run_id)  # staging private to this run
    lake.sweep_staging()
    ctx = RunContext(config, lake, get_spark(config.engine), run_id=run_id,
                     as_of=as_of or datetime.now(timezone.utc).date(), progress=progress or Progress(enabled=False),
                     stages=tuple(stages), data_docs=[])
    summary = RunSummary(ctx.run_id, stages)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    inputs = _inputs(ctx, hospitals, received_between) if "ingest" in stages else []
    detail = None
    for name in stages:
        log.info("stage %s starts (run %s)", name, ctx.run_id)
        try:
            options = ({"hospitals": hospitals, "received_between": received_between} if name == "ingest"
                       else {"full": full} if name == "normalize" else {})
            ctx.results[name] = _stage(name)(ctx, **options)
        except CarelakeError as exc:
            summary.error, summary.exit_code = f"{name}: {exc}", exc.exit_code
            ctx.results[name] = {"error": str(exc)}
            break
        except Exception as exc:  # disk full, engine crash, a bug: the run still ends with a clear, PHI-free message
            failure = StageFailedError(f"{describe_failure(exc)}; tables committed before are unchanged and a rerun "
                                       f"resumes (details: phi.audit, run {ctx.run_id})")
            summary.error, summary.exit_code = f"{name}: {failure}", failure.exit_code
            ctx.results[name] = {"error": str(failure)}
            detail = traceback.format_exc()  # may quote data: kept in the phi zone only
            log.error("stage %s failed: %s", name, failure)
            break
    summary.results = ctx.results
    try:  # once for all the run's validations, failed runs included: they are what a quality officer reads
        if ctx.data_docs:
            from carelake.quality import build_data_docs

            with ctx.progress.step("report: Data Docs"):
                build_data_docs(ctx.lake.reports, ctx.data_docs)
    except Exception:
        log.exception("the Data Docs of run %s could not be built", ctx.run_id)
    try:  # the quality officer's page, every run; it must never hide the run's own outcome
        from carelake.run_report import write_run_report

        ctx.results["report"] = str(write_run_report(ctx.lake, ctx.spark, ctx.run_id, status="failed" if summary.error else "succeeded",
                                                     error=summary.error, results=ctx.results))
    except Exception:
        log.exception("the run report of run %s could not be written", ctx.run_id)
    summary.seconds = time.monotonic() - started
    lake.drop_staging()
    try:
        _audit(ctx, summary, started_at, triggered_by, inputs=inputs, error_detail=detail)
    except Exception as exc:  # the run's outcome stands; say that its audit row is missing
        log.error("run %s: the audit row could not be written: %s", ctx.run_id, describe_failure(exc))
        if not summary.error:
            summary.error, summary.exit_code = f"audit: {describe_failure(exc)}", StageFailedError.exit_code
    return summary


#: operating-system conditions worth naming in a failure message (their text carries no data)
_OS_CONDITIONS = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system",
                  "Permission denied", "Too many open files", "Cannot allocate memory", "Input/output error",
                  "Resources exhausted")
#: the embedded engine's memory pool refused an allocation: Sail's message has either of these, not
#: always both (a hash join's build side); what to do about it, see carelake/engine.py
_POOL_FULL_MARKS = ("Resources exhausted", "Failed to allocate additional")
_POOL_FULL = "the engine's memory pool is full: raise CARELAKE_ENGINE_MEMORY_MB"


def _say_how_mappers_run() -> None:
    """A build of the compiled mappers that is not used (edited sources, another Python) costs a tenth of
    the map step: say so; that none was built (CARELAKE_COMPILE=0, an install without it) is a choice."""
    from transforms import _compiled

    if _compiled.unused_build():
        log.warning("the compiled mappers are not used, they run from source (slower): %s", _compiled.status)
    else:
        log.info("mappers: %s", _compiled.status)


def describe_failure(exc: BaseException) -> str:
    """What failed, without the exception's free text: engine and parser messages may quote values."""
    text = f"{exc!s} {exc.__cause__!s}"
    what = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        what += f" ({exc.strerror})"
    else:
        conditions = [c for c in _OS_CONDITIONS if c in text]
        if any(mark in text for mark in _POOL_FULL_MARKS):
            conditions.append(_POOL_FULL)
        error_class = getattr(exc, "getErrorClass", lambda: None)()
        if error_class:
            what += f" [{error_class}]"
        if conditions:
            what += f" ({', '.join(conditions)})"
    return what


def _inputs(ctx: RunContext, hospitals, received_between) -> list[dict]:
    """Landing files this run's ingest will read, with size and SHA-256 (which delivery made which table)."""
    import hashlib

    from carelake.ingest import landing_files

    feeds = [f for f in ctx.config.feeds if hospitals is None or f.hospital in hospitals]
    try:
        files = landing_files(feeds, ctx.lake.landing, ctx.config.csv_mappings, received_between=received_between)
    except Exception:  # ingest itself reports a bad landing zone, with its own message
        return []
    out = []
    for row in files:
        path = Path(row["path"]) if Path(row["path"]).is_file() else ctx.lake.landing / row["source"]
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError:
            out.append({"source": row["source"], "hospital": row["hospital"], "feed": row["feed"], "bytes": None, "sha256": None})
            continue
        out.append({"source": row["source"], "hospital": row["hospital"], "feed": row["feed"], "bytes": size, "sha256": digest.hexdigest()})
    return out


AUDIT_SCHEMA = (
    ("run_id", "string"), ("triggered_by", "string"), ("user", "string"), ("host", "string"), ("started_at", "string"),
    ("finished_at", "string"), ("stages", "string"), ("status", "string"), ("exit_code", "int"), ("error", "string"),
    ("error_detail", "string"), ("inputs", "string"), ("input_files", "int"), ("tables_written", "string"), ("summary", "string"),
)


def _audit(ctx: RunContext, summary: RunSummary, started_at: str, triggered_by: str, *, inputs: list[dict],
           error_detail: str | None) -> None:
    """One row per run in phi.audit: who, when, which inputs (landing files and hashes), which tables
    and versions it wrote with their row counts, outcome and counts (never record content).

    Written with delta-rs, not the engine: the audit must land even when the engine is what failed. A
    retry of the same run id (an Airflow task retry) replaces its row.
    """
    import getpass
    import socket

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    lake = ctx.lake
    versions: dict[str, int | None] = {}
    for table, version in lake.writes:
        if not table.startswith("staging."):
            versions[table] = version if versions.get(table) is None else max(versions[table], version or 0)
    rows = {t.name: t.rows for t in lake.tables() if t.name in versions}
    written = {t: {"version": v, "rows": rows.get(t)} for t, v in sorted(versions.items())}
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid still says who
        user = f"uid:{os.getuid()}"
    row = {
        "run_id": summary.run_id, "triggered_by": triggered_by, "user": user, "host": socket.gethostname(),
        "started_at": started_at, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": ",".join(summary.stages), "status": "failed" if summary.error else "succeeded",
        "exit_code": summary.exit_code, "error": summary.error, "error_detail": error_detail,
        "inputs": json.dumps(inputs, sort_keys=True), "input_files": len(inputs),
        "tables_written": json.dumps(written, sort_keys=True),
        "summary": json.dumps(summary.results, default=str, sort_keys=True),
    }
    types = {"string": pa.string(), "int": pa.int32()}
    schema = pa.schema([(name, types[kind]) for name, kind in AUDIT_SCHEMA])
    data = pa.Table.from_pylist([row], schema=schema)
    path = str(lake.path("phi.audit"))
    for attempt in range(1, lake.limits.write_retries + 1):
        try:
            if not lake.exists("phi.audit"):
                write_deltalake(path, data, mode="append")
            else:
                (DeltaTable(path).merge(data, "t.run_id = s.run_id", source_alias="s", target_alias="t", merge_schema=True)
                 .when_matched_update_all().when_not_matched_insert_all().execute())
            return
        except Exception as exc:
            from deltalake.exceptions import CommitFailedError

            if attempt == lake.limits.write_retries or not isinstance(exc, CommitFailedError):
                raise
            time.sleep(random.uniform(0, min(lake.limits.retry_max_seconds, lake.limits.retry_base_seconds * 2 ** attempt)))


def summarize(lake: Lake, spark) -> dict:
    """Tables per zone, quarantine by reason: what `carelake demo` prints after a run."""
    from pyspark.sql import functions as F

    tables = [t.__dict__ for t in lake.tables()]
    quarantine = []
    if lake.exists("phi.quarantine"):
        grouped = lake.read(spark, "phi.quarantine").groupBy(F.concat_ws("/", "hospital", "feed").alias("feed"), "error_code", "reason").count()
        quarantine = [r.asDict() for r in grouped.orderBy("feed", "error_code", "reason").collect()]
    return {"tables": tables, "quarantine": quarantine}
