"""Crash safety: a run killed (SIGKILL) at any point leaves every table at a committed version, and
rerunning gives exactly the tables of an uninterrupted run.

The child kills itself through the fault hook of carelake.lake (CARELAKE_FAULT): before a write,
during it (a timer inside the commit), after it; one more kill comes from outside after a delay.
"""

from __future__ import annotations

import signal
import time

import pytest

from reliability_helpers import assert_tables_readable, clone, diff, run_child, snapshot, start_child

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

STAGES = "ingest,normalize,curate,marts"  # validate writes no table (reports only)
#: the kill points, in the order a chain of reruns meets them: each rerun gets a little further
FAULTS = [
    "during_write@bronze.records",
    "during_write@silver.observation",
    "after_write@phi.record_status",  # normalize writes it last: a rerun after this kill maps nothing
    "after_write@gold.patient",  # in the middle of publishing gold: a set of overwrites
    "before_write@marts.encounters_by_region_month",
]


def test_killed_runs_leave_committed_tables_and_a_rerun_matches_an_uninterrupted_run(region, tmp_path):
    baseline_dir = clone(region, tmp_path / "baseline")
    baseline = start_child(baseline_dir, STAGES)  # in parallel with the chain below
    killed = 0
    for fault in FAULTS:
        code, summary, err = run_child(region, STAGES, CARELAKE_FAULT=fault)
        assert code == -signal.SIGKILL, f"{fault}: the child was not killed (exit {code}): {err[-2000:]}"
        killed += 1
        assert_tables_readable(region)
    # one kill from outside, at a time no hook chose
    child = start_child(region, STAGES)
    time.sleep(12)
    if child.proc.poll() is None:
        child.kill()
        killed += 1
    child.wait()
    assert_tables_readable(region)

    code, summary, err = run_child(region, STAGES)
    assert code == 0 and summary["error"] is None, err[-3000:]
    code, _, err = baseline.wait(timeout=900)
    assert code == 0, err[-3000:]
    assert_tables_readable(region)
    crashed, clean = snapshot(region), snapshot(baseline_dir)
    assert {"bronze.records", "silver.patient", "gold.patient", "marts.encounters_by_region_month"} <= set(clean)
    assert diff(crashed, clean) == []
    assert killed >= len(FAULTS)
    # staging of the killed runs is left for the sweep; the finished run removed its own
    staging = region / "phi" / "_staging"
    assert len([p for p in staging.iterdir()]) <= killed if staging.exists() else True


def test_a_kill_during_the_first_write_leaves_no_half_table(region):
    code, _, err = run_child(region, "ingest", CARELAKE_FAULT="during_write@bronze.records")
    assert code == -signal.SIGKILL, err[-2000:]
    versions = assert_tables_readable(region)  # either no bronze table yet, or a whole version 0
    assert set(versions) <= {"bronze.records"}
