"""carelake.maintenance on small Delta tables written with delta-rs (no engine needed)."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from carelake.errors import ConfigError
from carelake.lake import Lake
from carelake.maintenance import compact, delta_tables, purge_quality_results, purge_quarantine, vacuum

NOW = datetime(2026, 6, 30, tzinfo=timezone.utc)


@pytest.fixture
def lake(tmp_path):
    lake = Lake(tmp_path, {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"})
    bronze = [("r-old-bad", "2025-01-02T00:00:00Z"), ("r-old-good", "2025-01-02T00:00:00Z"),
              ("r-new-bad", "2026-06-01T00:00:00Z"), ("r-new-good", "2026-06-01T00:00:00Z")]
    for record_id, received in bronze:  # one commit per row: small files to compact
        write_deltalake(str(lake.path("bronze.records")), pa.table({
            "record_id": [record_id], "hospital": ["hosp-x"], "received_at": [received], "payload": ["..."]}), mode="append")
    outcome = {"r-old-bad": "quarantined", "r-old-good": "normalized", "r-new-bad": "quarantined", "r-new-good": "normalized"}
    write_deltalake(str(lake.path("phi.record_status")), pa.table({
        "record_id": list(outcome), "outcome": list(outcome.values())}))
    write_deltalake(str(lake.path("phi.quarantine")), pa.table({
        "record_id": ["r-old-bad", "r-new-bad"], "stage": ["normalize", "normalize"], "error_code": ["E1", "E2"]}))
    write_deltalake(str(lake.path("gold.patient")), pa.table({"id": ["p1"]}))
    return lake


def _ids(lake, table):
    return sorted(DeltaTable(str(lake.path(table))).to_pyarrow_table().column("record_id").to_pylist())


def test_purge_forgets_expired_quarantined_records_everywhere_and_nothing_else(lake):
    result = purge_quarantine(lake, retention_days=365, now=NOW)
    assert result["purged"] == 1 and result["cutoff"] == "2025-06-30T00:00:00Z"
    assert result["tables"] == {"phi.quarantine": 1, "phi.record_status": 1, "bronze.records": 1}
    assert _ids(lake, "phi.quarantine") == ["r-new-bad"]
    assert _ids(lake, "phi.record_status") == ["r-new-bad", "r-new-good", "r-old-good"]
    assert _ids(lake, "bronze.records") == ["r-new-bad", "r-new-good", "r-old-good"]
    # the same run again (same interval end) purges nothing more
    assert purge_quarantine(lake, retention_days=365, now=NOW)["purged"] == 0


def test_purge_on_a_lake_without_quarantine_does_nothing(tmp_path):
    lake = Lake(tmp_path, {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"})
    assert purge_quarantine(lake, retention_days=30, now=NOW) == {"purged": 0, "tables": {}}
    with pytest.raises(ConfigError, match="quarantine_retention_days must be at least 1"):
        purge_quarantine(lake, retention_days=0, now=NOW)


def test_compact_then_vacuum_leaves_fewer_files_and_the_same_rows(lake):
    assert set(delta_tables(lake)) == {"phi/bronze/records", "phi/record_status", "phi/quarantine", "curated/gold/patient"}
    bronze = DeltaTable(str(lake.path("bronze.records")))
    assert len(bronze.file_uris()) == 4
    result = compact(lake)
    assert result["tables"]["phi/bronze/records"] == {"removed": 4, "added": 1}
    with pytest.raises(ConfigError, match="vacuum_retention_hours is 0, under the 168 hours"):
        vacuum(lake, retention_hours=0)
    assert vacuum(lake, retention_hours=168)["files_deleted"] == 0  # the replaced files are younger than a week
    result = vacuum(lake, retention_hours=0, enforce_retention_duration=False)
    assert result["tables"]["phi/bronze/records"] == 4
    bronze = DeltaTable(str(lake.path("bronze.records")))
    assert len(bronze.file_uris()) == 1 and bronze.to_pyarrow_table().num_rows == 4


def test_a_now_without_a_zone_is_taken_as_utc_whatever_the_machine_s_zone(lake, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # four hours behind UTC on this date (EDT)
    time.tzset()
    try:
        naive = purge_quality_results(lake, retention_days=30, now=NOW.replace(tzinfo=None))
        aware = purge_quality_results(lake, retention_days=30, now=NOW)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert naive["cutoff"] == aware["cutoff"] == "2026-05-31T00:00:00Z"


def test_quality_results_retention_is_at_least_a_day_and_counts_from_now(lake):
    with pytest.raises(ConfigError, match="quality_retention_days must be at least 1"):
        purge_quality_results(lake, retention_days=0, now=NOW)
    # no validation ever ran in this lake: nothing to purge, and the cutoff is the data interval's, not the clock's
    assert purge_quality_results(lake, retention_days=30, now=NOW) == {"purged": 0, "runs": 0, "cutoff": "2026-05-31T00:00:00Z"}
