"""Quarantine list and retry on a copy of the demo run."""

import pytest

from carelake.quarantine import counts, retry


@pytest.fixture()
def ctx(demo_ctx):
    return demo_ctx


def test_list_counts_by_feed_code_and_reason(ctx):
    rows = counts(ctx)
    assert rows and all(r["records"] >= 1 and r["reason"] and r["error_code"] for r in rows)
    assert {r["hospital"] for r in rows} == {"hosp-a", "hosp-b", "hosp-c"}


def test_retry_without_a_fix_keeps_records_in_quarantine_and_conserves_counts(ctx):
    before = sum(r["records"] for r in counts(ctx))
    result = retry(ctx, hospital="hosp-a")
    assert result["retried"] == sum(r["records"] for r in counts(ctx) if r["hospital"] == "hosp-a")
    assert result["recovered"] == 0 and result["still_quarantined"] == result["retried"]
    assert sum(r["records"] for r in counts(ctx)) == before
    assert all(c["balanced"] for c in result["conservation"].values())
