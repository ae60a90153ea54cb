"""Concurrency: ingest + normalize of several hospitals at once on one lake all commit, nothing is
duplicated or lost, and the tables equal those of one sequential run.

Each child process has its own embedded Sail engine; they meet only in the Delta logs on disk. Sail
reports a lost commit race as ``Failed to commit transaction`` (SparkRuntimeException); carelake.lake
retries exactly that with jittered exponential backoff.
"""

from __future__ import annotations

import pytest

from reliability_helpers import clone, diff, prepare_region, run_child, snapshot, start_child

from carelake.errors import WriteConflictError
from carelake.lake import Lake, Limits, is_commit_conflict


class _Conflict(Exception):
    pass


def _lake(tmp_path, **limits) -> Lake:
    return Lake(tmp_path, {"landing": "l", "phi": "p", "curated": "c", "reports": "r"},
                Limits(retry_base_seconds=0.001, retry_max_seconds=0.01, **limits))


def test_a_lost_commit_race_is_retried_then_succeeds(tmp_path):
    lake, calls = _lake(tmp_path), []

    def write():
        calls.append(1)
        if len(calls) < 3:
            raise _Conflict("[SparkRuntimeException] Failed to commit transaction: 0")
        return "ok"

    assert lake._commit("silver.t", write) == "ok"
    assert len(calls) == 3


def test_other_errors_are_not_retried_and_endless_conflicts_stop(tmp_path):
    lake, calls = _lake(tmp_path, write_retries=4), []

    def broken():
        calls.append(1)
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError):
        lake._commit("silver.t", broken)
    assert len(calls) == 1

    def always_conflicts():
        raise _Conflict("Failed to commit transaction: 0")

    with pytest.raises(WriteConflictError, match=r"silver.t: 4 attempts lost a concurrent Delta commit"):
        lake._commit("silver.t", always_conflicts)


def test_conflict_detection_knows_sail_and_delta_spark():
    assert is_commit_conflict(RuntimeError("Failed to commit transaction: 0"))
    assert is_commit_conflict(RuntimeError("[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: ..."))
    assert not is_commit_conflict(RuntimeError("Delta table already exists at path"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_hospitals_ingesting_at_once_equal_one_sequential_run(tmp_path):
    region = tmp_path / "concurrent"
    prepare_region(region, hospitals=3, patients=60, seed=5)
    sequential = clone(region, tmp_path / "sequential")
    hospitals = sorted(p.stem for p in (region / "conf" / "hospitals").glob("*.yaml"))
    children = [start_child(region, "ingest,normalize", hospitals=h) for h in hospitals]
    for code, _, err in [c.wait(timeout=800) for c in children]:
        assert code == 0, err[-3000:]
    # normalize maps all of bronze; a last pass over it (what the next scheduled run does) settles the
    # person keys of patients whose other hospitals committed while a run was mapping
    code, _, err = run_child(region, "normalize")
    assert code == 0, err[-3000:]
    code, _, err = run_child(sequential, "ingest,normalize")
    assert code == 0, err[-3000:]
    together, alone = snapshot(region), snapshot(sequential)
    assert diff(together, alone) == []
    bronze = together["bronze.records"]
    assert len(bronze) == len(set(bronze)) > 0
