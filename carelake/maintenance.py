"""Table maintenance with delta-rs: compaction, vacuum, quarantine retention; and the retention of stored
quality results.

The embedded engine (Sail) has no OPTIMIZE or VACUUM, so maintenance goes through `deltalake` on the
table folders directly; no Spark session is needed. Run it when no stage writes (the maintenance DAG
shares the pipeline's writer lock), since delta-rs and the engine would otherwise race on commits.
Results are counts per table, never rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from carelake.errors import ConfigError
from carelake.lake import Lake
from carelake.quality import as_utc

__all__ = ["delta_tables", "compact", "vacuum", "purge_quarantine", "purge_quality_results", "MIN_RETENTION_HOURS"]

#: delta-rs refuses a shorter vacuum retention unless told otherwise: readers of an older version
#: (time travel, a long query) would lose their files.
MIN_RETENTION_HOURS = 168
#: The tables that hold a quarantined record: its raw payload (bronze), its outcome and the reason.
QUARANTINE_TABLES = ("phi.quarantine", "phi.record_status", "bronze.records")
#: a cutoff as text: bronze's received_at form, and what the purges report
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def delta_tables(lake: Lake, zones: tuple[str, ...] = ("phi", "curated")) -> dict[str, Path]:
    """Every Delta table folder of `zones`, staging included (it is rewritten every run and grows most)."""
    found = {}
    for zone in zones:
        root = lake.zone(zone)
        if root.exists():
            for log in sorted(root.rglob("_delta_log")):
                found[f"{zone}/{log.parent.relative_to(root).as_posix()}"] = log.parent
    return found


def compact(lake: Lake, *, target_size: int | None = None) -> dict:
    """Bin-pack small files of every table (`DeltaTable.optimize.compact`); files removed and added."""
    from deltalake import DeltaTable

    tables = {}
    for name, path in delta_tables(lake).items():
        metrics = DeltaTable(str(path)).optimize.compact(target_size=target_size)
        tables[name] = {"removed": int(metrics.get("numFilesRemoved", 0)), "added": int(metrics.get("numFilesAdded", 0))}
    return {"tables": tables, "files_removed": sum(t["removed"] for t in tables.values()),
            "files_added": sum(t["added"] for t in tables.values())}


def vacuum(lake: Lake, *, retention_hours: int, enforce_retention_duration: bool = True) -> dict:
    """Delete files no version younger than `retention_hours` needs; files deleted per table.

    A retention under `MIN_RETENTION_HOURS` is refused unless `enforce_retention_duration=False`
    (conf/airflow.yaml `maintenance.allow_short_retention: true`).
    """
    from deltalake import DeltaTable

    if retention_hours < MIN_RETENTION_HOURS and enforce_retention_duration:
        raise ConfigError(f"conf/airflow.yaml: maintenance.vacuum_retention_hours is {retention_hours}, under the "
                          f"{MIN_RETENTION_HOURS} hours that keep time travel and running readers safe; raise it or set "
                          "maintenance.allow_short_retention: true")
    tables = {}
    for name, path in delta_tables(lake).items():
        removed = DeltaTable(str(path)).vacuum(retention_hours=retention_hours, dry_run=False,
                                               enforce_retention_duration=enforce_retention_duration)
        tables[name] = len(removed)
    return {"tables": tables, "files_deleted": sum(tables.values()), "retention_hours": retention_hours}


def purge_quarantine(lake: Lake, *, retention_days: int, now: datetime) -> dict:
    """Forget quarantined records received more than `retention_days` before `now`.

    A quarantined record's raw payload is PHI that no silver row uses; it is kept for the quality
    officer to inspect, then deleted. The record goes from quarantine, record_status and bronze
    together, so `bronze = normalized + quarantined` still holds. Landing is not touched: a run with
    every file (`all_files`) would bring the record back, as it should while the hospital still
    delivers it. `now` is the run's data interval end, never the clock, so a rerun purges the same.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    cutoff = _cutoff(now, retention_days, "quarantine_retention_days").strftime(_STAMP)
    if not (lake.exists("phi.quarantine") and lake.exists("bronze.records")):
        return {"purged": 0, "tables": {}}
    quarantined = DeltaTable(str(lake.path("phi.quarantine"))).to_pyarrow_table(columns=["record_id"])
    ids = pc.unique(quarantined.column("record_id"))
    bronze = DeltaTable(str(lake.path("bronze.records"))).to_pyarrow_dataset().to_table(
        columns=["record_id", "received_at"], filter=pc.field("record_id").isin(ids))
    expired = pc.unique(bronze.filter(pc.less(bronze.column("received_at"), cutoff)).column("record_id"))
    counts = {}
    if len(expired):
        source = pa.table({"record_id": expired})
        for table in QUARANTINE_TABLES:
            if lake.exists(table):
                metrics = (DeltaTable(str(lake.path(table)))
                           .merge(source, "t.record_id = s.record_id", source_alias="s", target_alias="t")
                           .when_matched_delete().execute())
                counts[table] = int(metrics.get("num_target_rows_deleted", 0))
    return {"purged": len(expired), "cutoff": cutoff, "tables": counts}


def purge_quality_results(lake: Lake, *, retention_days: int, now: datetime) -> dict:
    """Forget quality results of validations run more than `retention_days` before `now`.

    Every run adds one Great Expectations result per validated table (and its Data Docs page), and
    every run lists them all and rebuilds the Data Docs index over them: kept forever, they make each
    run slower than the one before (a year of daily runs: about 8 s more per run; docs/performance.md).
    The run history's counts (the run report's trends) are not touched. `now` is the run's data
    interval end, never the clock, so a rerun purges the same. See `carelake.quality.purge_results`.
    """
    from carelake.quality import purge_results

    cutoff = _cutoff(now, retention_days, "quality_retention_days")
    removed = purge_results(lake.reports, before=cutoff)
    return {"purged": removed["results"], "runs": removed["runs"], "cutoff": cutoff.strftime(_STAMP)}


def _cutoff(now: datetime, retention_days: int, setting: str) -> datetime:
    """`now` less `retention_days`, in UTC; refuses a retention under a day, naming its `setting`.

    A `now` without a zone is taken as UTC (`carelake.quality.as_utc`, which reads GE's stored results
    so), as the lake's own times are, not as the machine's local time, which would move the cutoff by
    the machine's offset."""
    if retention_days < 1:
        raise ConfigError(f"conf/airflow.yaml: maintenance.{setting} must be at least 1, found {retention_days}")
    return as_utc(now) - timedelta(days=retention_days)
