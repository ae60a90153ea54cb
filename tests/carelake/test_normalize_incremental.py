"""normalize is incremental on phi.record_status: a rerun maps nothing and leaves every table as it was,
`full=True` maps everything again to the same tables, and a late backfill of an older delivery does not
replace a newer one already in silver."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from carelake import normalize
from carelake.config import load_config
from carelake.lake import Lake

TABLES = ("silver.patient", "silver.observation", "silver.encounter", "phi.record_status", "phi.quarantine", "phi.person_xref")


@pytest.fixture()
def ctx(demo_ctx):
    return demo_ctx


def _contents(ctx) -> dict:
    return {t: sorted(json.dumps(r.asDict(), sort_keys=True) for r in ctx.lake.read(ctx.spark, t).collect()) for t in TABLES}


def test_a_rerun_maps_nothing_and_a_full_run_gives_the_same_tables(ctx):
    normalize.run(ctx)  # maps again only if the mapper code changed since the demo ran (an edit in a checkout)
    before = _contents(ctx)
    again = normalize.run(ctx)
    assert again["mapped"]["resources_and_quarantined"] == 0 and not again["mapped"]["full"]
    assert all(c["balanced"] for c in again["conservation"].values())
    assert _contents(ctx) == before
    full = normalize.run(ctx, full=True)
    assert full["mapped"]["full"] and full["mapped"]["resources_and_quarantined"] > 0
    assert _contents(ctx) == before


def _patient(updated: str) -> str:
    return json.dumps({"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": updated}})


def test_an_older_delivery_mapped_later_does_not_replace_a_newer_one(tmp_path, spark):
    config = load_config(None)
    lake = Lake.from_config(config, tmp_path)
    columns = "record_id string, received_at string, source string, position long"
    lake.overwrite(spark.createDataFrame([("r-new", "2024-02-01T00:00:00Z", "b.ndjson", 1)], columns), "bronze.records")
    silver = "id string, hospital string, feed string, record_id string, patient_id string, person_key string, resource string"
    lake.overwrite(spark.createDataFrame([("p1", "h", "fhir", "r-new", "p1", None, _patient("2024-01-05T00:00:00Z"))], silver),
                   "silver.patient")
    ctx = SimpleNamespace(lake=lake, spark=spark)
    staged = ("record_id string, received_at string, source string, position long, id string, hospital string, feed string, "
              "patient_id string, resource string, updated string")

    def winners(*rows):
        df = spark.createDataFrame([(r, at, src, pos, "p1", "h", "fhir", "p1", _patient(upd), upd) for r, at, src, pos, upd in rows], staged)
        bronze = lake.read(spark, "bronze.records").unionByName(df.select("record_id", "received_at", "source", "position"))
        return sorted(r["record_id"] for r in normalize._winners(ctx, df, "patient", bronze, True).collect())

    assert winners(("r-old", "2024-01-01T00:00:00Z", "a.ndjson", 1, "2030-01-01T00:00:00Z")) == []  # older delivery
    assert winners(("r-later", "2024-03-01T00:00:00Z", "a.ndjson", 1, "2020-01-01T00:00:00Z")) == ["r-later"]
    # delivered at the same time: meta.lastUpdated decides, then the file
    assert winners(("r-tie", "2024-02-01T00:00:00Z", "a.ndjson", 1, "2024-01-06T00:00:00Z")) == ["r-tie"]
    assert winners(("r-tie", "2024-02-01T00:00:00Z", "c.ndjson", 1, "2024-01-04T00:00:00Z")) == []
    assert winners(("r-tie", "2024-02-01T00:00:00Z", "c.ndjson", 1, "2024-01-05T00:00:00Z")) == ["r-tie"]
    assert winners(("r-tie", "2024-02-01T00:00:00Z", "a.ndjson", 1, "2024-01-05T00:00:00Z")) == []
