"""What carelake's Airflow DAGs need: their specification from conf/ at parse time, and the task bodies.

Two halves with different rules:

- **Parse time** (`dag_conf`): the DAG processor re-reads DAG files every few seconds, so this half
  imports only the standard library and PyYAML, reads only the small YAML files of `conf/`, and never
  starts an engine. A broken file raises `DagConfError`, which Airflow shows as the DAG file's import
  error: a hospital is never silently skipped.
- **Run time** (`ingest`, `normalize`, `run_stage`, `maintain`): called inside tasks; everything heavy
  (Spark session, Great Expectations, deltalake) is imported there. They take plain values (dates,
  ids), return counts for XCom and log counts, never record content.

Interval semantics (see docs/operations.md): an ingest run reads the landing files of its hospital
whose delivery time (the file's modification time, which bronze keeps as `received_at`) falls in the
run's data interval `[start, end)`. Bronze MERGEs on the record's content hash, so a rerun adds nothing
and a backfill over consecutive intervals leaves the same tables as one run over all the files. A
fhir-rest feed is the exception: each run pulls what changed on the server since its last mark
(phi.feed_state), whatever the interval, and ingests that pull.
"""

from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from carelake.errors import CarelakeError, ConfigError, KeyMissingError, PrivacyGateError, QualityGateError
from carelake.hospital_conf import FEED_KINDS, check_mappings_exist, check_schedule, check_unique_ids, read_hospital
from carelake.yamlconf import load_mapping

__all__ = [
    "DagConfError", "DagsConf", "HospitalSpec", "FeedSpec", "TaskDefaults", "dag_conf", "default_conf_dir",
    "SILVER_TABLES", "ingest", "normalize", "run_stage", "maintain", "check_connections",
    "NO_RETRY_ERRORS",
]

log = logging.getLogger("carelake")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# FEED_KINDS comes from carelake.hospital_conf, the hospital-file rules `carelake run` applies too.
#: The silver tables every normalize run writes (carelake.normalize.CORE_TABLES, kept here because
#: that module imports pyspark): the Assets the curation DAG is scheduled on.
SILVER_TABLES = ("patient", "encounter", "observation", "condition")
#: Errors that a retry cannot fix: the task fails at once instead of backing off.
NO_RETRY_ERRORS = (ConfigError, KeyMissingError, QualityGateError, PrivacyGateError)
_STAGE_ERRORS = {QualityGateError.exit_code: QualityGateError, PrivacyGateError.exit_code: PrivacyGateError,
                 KeyMissingError.exit_code: KeyMissingError}


class DagConfError(ConfigError):
    """A file in conf/ cannot make a DAG; the DAG file fails to import with this message."""


# -- parse time: the DAG specification from conf/ ----------------------------------------------------


@dataclass(frozen=True)
class TaskDefaults:
    """Airflow `default_args` shared by every carelake task (conf/airflow.yaml `defaults`)."""

    retries: int = 3
    retry_delay: timedelta = timedelta(minutes=2)
    retry_exponential_backoff: float = 2.0
    max_retry_delay: timedelta = timedelta(hours=1)
    execution_timeout: timedelta = timedelta(hours=2)

    def default_args(self, *, pool: str | None = None) -> dict:
        args = {"retries": self.retries, "retry_delay": self.retry_delay,
                "retry_exponential_backoff": self.retry_exponential_backoff,
                "max_retry_delay": self.max_retry_delay, "execution_timeout": self.execution_timeout}
        if pool:
            args["pool"] = pool
        return args


@dataclass(frozen=True)
class FeedSpec:
    kind: str
    path: str
    connection_id: str | None = None
    mapping: str | None = None


@dataclass(frozen=True)
class HospitalSpec:
    """What one ingest DAG needs from conf/hospitals/<id>.yaml."""

    id: str
    name: str
    schedule: str | None
    feeds: tuple[FeedSpec, ...]
    source: Path
    retries: int | None = None

    @property
    def dag_id(self) -> str:
        return f"carelake_ingest_{self.id}"

    @property
    def connection_ids(self) -> tuple[str, ...]:
        return tuple(sorted({f.connection_id for f in self.feeds if f.connection_id}))


@dataclass(frozen=True)
class DagsConf:
    """conf/airflow.yaml and conf/hospitals/*.yaml, checked."""

    conf_dir: Path
    start_date: datetime
    defaults: TaskDefaults
    pool: str | None
    maintenance_schedule: str | None
    vacuum_retention_hours: int
    allow_short_retention: bool
    quarantine_retention_days: int | None
    quality_retention_days: int | None
    hospitals: tuple[HospitalSpec, ...] = field(default_factory=tuple)


def default_conf_dir() -> Path:
    """$CARELAKE_CONF, else the project's conf/ (not the working directory's: the DAG processor's
    working directory is arbitrary, and parse time and run time must read the same folder)."""
    return Path(os.environ.get("CARELAKE_CONF") or PROJECT_ROOT / "conf").resolve()


def _load_yaml(path: Path) -> dict:
    return load_mapping(path, error=DagConfError)


def _minutes(section: dict, key: str, default: timedelta, where: str) -> timedelta:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise DagConfError(f"{where}: '{key}' must be a number of minutes >= 0, found {value!r}")
    return timedelta(minutes=value)


def _int(section: dict, key: str, default, where: str, *, minimum: int = 0):
    value = section.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DagConfError(f"{where}: '{key}' must be a whole number >= {minimum}, found {value!r}")
    return value


def _schedule(value, where: str, key: str = "schedule") -> str | None:
    return check_schedule(value, where, key, error=DagConfError)


def _start_date(value, where: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise DagConfError(f"{where}: 'start_date' must be a date such as 2026-01-01, found {value!r}")


def _hospital(path: Path, default_schedule: str | None) -> HospitalSpec:
    """One hospital file, checked by the rules `carelake run` applies too (carelake.hospital_conf)."""
    conf = read_hospital(path, error=DagConfError)
    return HospitalSpec(
        id=conf.id, name=conf.name, schedule=conf.schedule if conf.schedule_set else default_schedule,
        feeds=tuple(FeedSpec(f.kind, str(f.path), f.options.get("airflow_conn"), f.mapping) for f in conf.feeds),
        source=path, retries=conf.airflow.get("retries"),
    )


def dag_conf(directory: Path | str | None = None) -> DagsConf:
    """Read conf/airflow.yaml (optional: built-in defaults) and every conf/hospitals/*.yaml."""
    directory = Path(directory).resolve() if directory else default_conf_dir()
    if not directory.is_dir():
        raise DagConfError(f"configuration folder {directory} does not exist; set CARELAKE_CONF to a conf/ folder")
    path = directory / "airflow.yaml"
    data = _load_yaml(path) if path.exists() else {}
    where = str(path)
    section = data.get("defaults") or {}
    defaults = TaskDefaults(
        retries=_int(section, "retries", 3, f"{where}: defaults"),
        retry_delay=_minutes(section, "retry_delay_minutes", timedelta(minutes=2), f"{where}: defaults"),
        retry_exponential_backoff=float(section.get("retry_exponential_backoff", 2.0)),
        max_retry_delay=_minutes(section, "max_retry_delay_minutes", timedelta(hours=1), f"{where}: defaults"),
        execution_timeout=_minutes(section, "execution_timeout_minutes", timedelta(hours=2), f"{where}: defaults"),
    )
    ingest_section = data.get("ingest") or {}
    maintenance = data.get("maintenance") or {}
    hospitals = tuple(_hospital(p, _schedule(ingest_section.get("schedule", "@daily"), f"{where}: ingest"))
                      for p in sorted((directory / "hospitals").glob("*.yaml")))
    check_unique_ids(hospitals, error=DagConfError)
    check_mappings_exist(hospitals, directory / "csv_mappings", error=DagConfError)
    pool = data.get("pool")
    if pool is not None and not isinstance(pool, str):
        raise DagConfError(f"{where}: 'pool' must be an Airflow pool name or null, found {pool!r}")
    return DagsConf(
        conf_dir=directory,
        start_date=_start_date(data.get("start_date", date(2026, 1, 1)), where),
        defaults=defaults,
        pool=pool,
        maintenance_schedule=_schedule(maintenance.get("schedule", "@weekly"), f"{where}: maintenance"),
        vacuum_retention_hours=_int(maintenance, "vacuum_retention_hours", 168, f"{where}: maintenance"),
        allow_short_retention=bool(maintenance.get("allow_short_retention", False)),
        quarantine_retention_days=_int(maintenance, "quarantine_retention_days", 365, f"{where}: maintenance", minimum=1),
        quality_retention_days=_int(maintenance, "quality_retention_days", 365, f"{where}: maintenance", minimum=1),
        hospitals=hospitals,
    )


# -- run time: task bodies ---------------------------------------------------------------------------


def _workdir(workdir: str | Path | None) -> Path:
    return Path(workdir or os.environ.get("CARELAKE_HOME") or "carelake-home").resolve()


@contextmanager
def _writer_lock(workdir: Path):
    """One writer at a time per lake: every stage MERGEs into tables shared by all hospitals (bronze,
    silver, quarantine), and two concurrent Delta commits on one table would fail or interleave
    staging tables. The lock serializes carelake tasks on one host; across hosts use the pool of
    conf/airflow.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".carelake-writer.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _raise_for(summary) -> None:
    """Raise the stage's own error class (exit codes are stable) so the retry policy can tell a gate
    that no retry will open from a transient failure."""
    if summary.error:
        raise _STAGE_ERRORS.get(summary.exit_code, CarelakeError)(summary.error)


def _mask_key(config) -> None:
    """Register the de-identification key with Airflow's log masker, so that no log line could ever
    show it (the variable name `carelake_deid_key` holds none of the words Airflow masks by itself)."""
    from carelake.keys import KEY_ENV, deid_key

    settings = config.deid.get("key") or {}
    try:
        key = deid_key(env_var=settings.get("env", KEY_ENV), min_length=int(settings.get("min_length", 32)))
    except KeyMissingError:
        return  # run_pipeline stops with the message that says how to set it
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # outside Airflow there is no task log to protect
        return
    mask_secret(key.decode("utf-8"))


def run_stage(stage: str, *, run_id: str, as_of: date | None = None, conf_dir: str | Path | None = None,
              workdir: str | Path | None = None, hospitals: list[str] | None = None,
              received_between: tuple[datetime, datetime] | None = None) -> dict:
    """Run one stage; raise (failing the task) with the stage's own message when it stops."""
    from carelake.config import load_config
    from carelake.pipeline import run_pipeline

    config = load_config(Path(conf_dir) if conf_dir else default_conf_dir())
    _mask_key(config)
    home = _workdir(workdir)
    with _writer_lock(home):
        summary = run_pipeline(config, home, [stage], as_of=as_of, run_id=run_id, hospitals=hospitals,
                               received_between=received_between,
                               triggered_by=f"airflow:{os.environ.get('AIRFLOW_CTX_DAG_ID', '?')}")
    result = summary.results.get(stage, {})
    _raise_for(summary)
    return {"stage": stage, "run_id": run_id, "result": result}


def ingest(hospital: str, *, run_id: str, start: datetime | None, end: datetime | None, all_files: bool = False,
           conf_dir: str | Path | None = None, workdir: str | Path | None = None) -> dict:
    """Landing files of `hospital` delivered in `[start, end)` (every file when `all_files`) -> bronze."""
    window = None if all_files or start is None or end is None else (start, end)
    out = run_stage("ingest", run_id=run_id, as_of=(end or start or datetime.now(timezone.utc)).date(),
                    conf_dir=conf_dir, workdir=workdir, hospitals=[hospital], received_between=window)
    result = out["result"]
    feeds = result.get("feeds", {})
    counts = {"files": result.get("files", 0), "read": sum(f["read"] for f in feeds.values()),
              "new": sum(f["new"] for f in feeds.values())}
    log.info("carelake ingest %s %s: files=%d read=%d new=%d", hospital,
             "all files" if window is None else f"delivered in [{start.isoformat()}, {end.isoformat()})",
             counts["files"], counts["read"], counts["new"])
    for name, feed in sorted(feeds.items()):
        log.info("carelake ingest feed %s: read=%d new=%d", name, feed["read"], feed["new"])
    return {**counts, "hospital": hospital, "all_files": window is None, "feeds": feeds,
            "window": None if window is None else [start.isoformat(), end.isoformat()]}


def normalize(*, run_id: str, as_of: date, conf_dir: str | Path | None = None,
              workdir: str | Path | None = None) -> dict:
    """bronze -> silver, quarantine; counts per feed (bronze = normalized + quarantined) and rows written."""
    result = run_stage("normalize", run_id=run_id, as_of=as_of, conf_dir=conf_dir, workdir=workdir)["result"]
    conservation = result.get("conservation", {})
    totals = {key: sum(feed.get(key, 0) for feed in conservation.values()) for key in ("bronze", "normalized", "quarantined")}
    silver = result.get("silver", {})
    log.info("carelake normalize: read=%d normalized=%d quarantined=%d written=%d (%s)", totals["bronze"],
             totals["normalized"], totals["quarantined"], sum(silver.values()),
             ", ".join(f"silver.{t}={n}" for t, n in sorted(silver.items())))
    unbalanced = sorted(name for name, feed in conservation.items() if not feed.get("balanced", True))
    if unbalanced:
        log.warning("carelake normalize: bronze != normalized + quarantined for %s", ", ".join(unbalanced))
    return {**totals, "silver": silver, "unbalanced": unbalanced}


def check_connections(connection_ids: list[str] | tuple[str, ...]) -> dict:
    """Resolve the Airflow connections a hospital's feeds name (from the metadata DB, environment or a
    secrets backend) before any work, so a missing one fails fast; returns their types, never secrets."""
    if not connection_ids:
        return {}
    from airflow.sdk import Connection

    found = {}
    for conn_id in connection_ids:
        try:
            found[conn_id] = Connection.get(conn_id).conn_type
        except Exception as exc:  # the SDK raises its own not-found error class, which moved between versions
            raise ConfigError(f"Airflow connection {conn_id!r} (named in conf/hospitals) is not defined: "
                              f"add it with `airflow connections add {conn_id} ...` or in the secrets backend "
                              f"({type(exc).__name__})") from None
    return found


def maintain(step: str, *, now: datetime | None = None, conf_dir: str | Path | None = None, workdir: str | Path | None = None) -> dict:
    """One maintenance step (`purge_quarantine`, `purge_quality_results`, `compact`, `vacuum`) with the
    settings of conf/airflow.yaml."""
    from carelake import maintenance
    from carelake.config import load_config
    from carelake.lake import Lake

    directory = Path(conf_dir) if conf_dir else default_conf_dir()
    settings = dag_conf(directory)
    home = _workdir(workdir)
    lake = Lake.from_config(load_config(directory), home)
    # the retentions: each purge with its setting, counted back from the run's data interval end
    purges = {"purge_quarantine": (maintenance.purge_quarantine, settings.quarantine_retention_days),
              "purge_quality_results": (maintenance.purge_quality_results, settings.quality_retention_days)}
    with _writer_lock(home):
        if step in purges:
            if now is None:
                raise CarelakeError(f"{step} needs `now` (the run's data interval end)")
            purge, days = purges[step]
            result = purge(lake, retention_days=days, now=now)
        elif step == "compact":
            result = maintenance.compact(lake)
        elif step == "vacuum":
            result = maintenance.vacuum(lake, retention_hours=settings.vacuum_retention_hours,
                                        enforce_retention_duration=not settings.allow_short_retention)
        else:
            raise CarelakeError(f"unknown maintenance step {step!r}; steps: purge_quarantine, purge_quality_results, compact, vacuum")
    log.info("carelake maintenance %s: %s", step, {k: v for k, v in result.items() if k != "tables"})
    return result
