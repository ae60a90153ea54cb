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
from tests.conftest import run_in_small_pool

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


def test_type_counts_give_rows_per_type_and_the_types_whose_ids_repeat(spark):
    rows = [("Patient", "p1"), ("Patient", "p2"), ("Patient", "p1"), ("Observation", "o1"), ("Observation", "o2"),
            (None, None), (None, None)]  # the last two: quarantined records
    per_type, repeats = normalize.type_counts(spark.createDataFrame(rows, "resource_type string, id string"))
    assert per_type == {"Patient": 3, "Observation": 2, None: 2}
    assert repeats == {"Patient"}


def test_type_counts_of_a_run_whose_records_were_all_quarantined(spark, tmp_path):
    """Read back from Delta, as normalize reads its staged rows: the engine's planner once failed here."""
    path = str(tmp_path / "normalized")
    spark.createDataFrame([(None, None), (None, None)], "resource_type string, id string").write.format("delta").save(path)
    assert normalize.type_counts(spark.read.format("delta").load(path)) == ({None: 2}, set())


def _patient(updated: str) -> str:
    return json.dumps({"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": updated}})


@pytest.mark.parametrize("join_max, few", [(normalize.JOIN_MAX_RECORDS, 1), (0, 1), (0, 0)],
                         ids=["joins", "window-over-the-few-contested", "window-over-all"])
def test_an_older_delivery_mapped_later_does_not_replace_a_newer_one(tmp_path, spark, monkeypatch, join_max, few):
    """The same winners whether silver is compared by joins or, when too large for them, by a window:
    over the contested ids' silver rows and deliveries alone when they are few (`merge_batch_rows`),
    else over all of bronze."""
    import dataclasses

    monkeypatch.setattr(normalize, "JOIN_MAX_RECORDS", join_max)
    config = load_config(None)
    lake = Lake.from_config(config, tmp_path)
    lake = Lake(lake.workdir, lake.zones, dataclasses.replace(lake.limits, merge_batch_rows=few))
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


def test_a_remap_past_the_join_limit_needs_no_comparison_with_bronze(ctx, monkeypatch):
    """After a change of mapper code every record is mapped again: each silver row's own delivery is
    among the run's rows, so the run's latest wins without ordering bronze's delivery columns (at
    100,000 patients that ordering was ~630 s of the re-map). The tables come out as before."""
    from pyspark.sql import functions as F

    normalize.run(ctx)
    before = _contents(ctx)
    status = ctx.lake.read(ctx.spark, "phi.record_status")
    ctx.lake.overwrite(status.withColumn("mapping", F.lit("stale")), "phi.record_status", partition_by=["hospital"])
    monkeypatch.setattr(normalize, "JOIN_MAX_RECORDS", 0)

    def no_window(*args, **kwargs):
        raise AssertionError("a re-map compared silver with bronze's deliveries")

    monkeypatch.setattr(normalize, "_not_older_by_window", no_window)
    again = normalize.run(ctx)
    assert again["mapped"]["resources_and_quarantined"] > 0 and not again["mapped"]["full"]
    assert _contents(ctx) == before


def test_contested_ids_are_those_whose_silver_delivery_the_run_did_not_map_again(spark, tmp_path):
    pairs = "id string, record_id string"
    ctx = SimpleNamespace(lake=Lake.from_config(load_config(None), tmp_path), spark=spark)

    def contested(run, silver):
        found = normalize._contested(ctx, spark.createDataFrame(run, pairs), spark.createDataFrame(silver, pairs), "patient")
        return sorted(r["id"] for r in found.collect())

    assert contested([("p1", "r1"), ("p2", "r2")], [("p1", "r1"), ("p2", "r2")]) == []  # a re-map
    assert contested([("p1", "r1"), ("p1", "r0")], [("p1", "r1")]) == []  # and an older delivery beside it
    assert contested([("p1", "r1")], [("p1", "r1"), ("p9", "r9")]) == []  # an id the run does not have
    assert contested([("p1", "r0")], [("p1", "r1")]) == ["p1"]  # a backfill: silver's delivery may be the newer
    assert contested([("p1", "r2"), ("p2", "r2")], [("p1", "r2"), ("p2", "r1")]) == ["p2"]


def test_conservation_counts_the_same_by_join_and_by_aggregation(tmp_path, spark, monkeypatch):
    """Outcomes count only for records still in bronze, whichever way they are matched: the join of a
    small bronze table and the aggregation that a large one takes (a hash join's build side cannot spill).
    The run report shows the same counts."""
    from carelake import run_report

    config = load_config(None)
    lake = Lake.from_config(config, tmp_path)
    lake.overwrite(spark.createDataFrame([("r1", "h", "csv"), ("r2", "h", "csv"), ("r3", "h", "fhir"), ("r4", "g", "fhir")],
                                         "record_id string, hospital string, feed string"), "bronze.records")
    # r4 has no outcome yet; r9's record left bronze (a restore of bronze to an earlier version)
    lake.overwrite(spark.createDataFrame([("r1", "h", "csv", "normalized"), ("r2", "h", "csv", "quarantined"),
                                          ("r3", "h", "fhir", "normalized"), ("r9", "h", "csv", "normalized")],
                                         "record_id string, hospital string, feed string, outcome string"), "phi.record_status")
    ctx = SimpleNamespace(lake=lake, spark=spark)
    expected = {
        "g/fhir": {"bronze": 1, "normalized": 0, "quarantined": 0, "balanced": False},
        "h/csv": {"bronze": 2, "normalized": 1, "quarantined": 1, "balanced": True},
        "h/fhir": {"bronze": 1, "normalized": 1, "quarantined": 0, "balanced": True},
    }
    in_report = {("g", "fhir"): (1, 0, 0), ("h", "csv"): (2, 1, 1), ("h", "fhir"): (1, 1, 0)}
    for join_max in (normalize.JOIN_MAX_RECORDS, 0):
        monkeypatch.setattr(normalize, "JOIN_MAX_RECORDS", join_max)
        assert normalize.conservation(ctx) == expected
        feeds = run_report.collect(lake, spark, "r1", status="succeeded", error=None)["feeds"]
        assert {(f["hospital"], f["feed"]): (f["rows_in"], f["normalized"], f["quarantined"]) for f in feeds} == in_report


_REDELIVERED = """
import sys
from types import SimpleNamespace
from pyspark.sql import functions as F
from carelake import normalize
from carelake.config import load_config
from carelake.engine import get_spark
from carelake.lake import Lake

spark = get_spark()
lake = Lake.from_config(load_config(None), sys.argv[1])
ids = spark.range(int(sys.argv[2])).select(F.concat(F.lit("o"), F.col("id").cast("string")).alias("id"))
record = F.concat(F.lit("r"), "id")
resource = F.concat(F.lit('{"resourceType":"Observation","id":"'), "id",
                    F.lit('","meta":{"lastUpdated":"2024-01-01T00:00:00Z"},"note":[{"text":"'), F.repeat(F.lit("x"), 4000), F.lit('"}]}'))
lake.overwrite(ids.select("id", F.lit("h").alias("hospital"), F.lit("csv").alias("feed"), record.alias("record_id"),
                          F.lit("p").alias("patient_id"), F.lit(None).cast("string").alias("person_key"), resource.alias("resource")),
               "silver.observation")
lake.overwrite(ids.select(record.alias("record_id"), F.lit("2024-01-01T00:00:00Z").alias("received_at"),
                          F.lit("a.csv").alias("source"), F.lit(1).cast("long").alias("position")), "bronze.records")
again = ids.select(F.concat(F.lit("s"), "id").alias("record_id"), F.lit("2024-02-01T00:00:00Z").alias("received_at"),
                   F.lit("b.csv").alias("source"), F.lit(1).cast("long").alias("position"), "id", F.lit("h").alias("hospital"),
                   F.lit("csv").alias("feed"), F.lit("p").alias("patient_id"), resource.alias("resource"),
                   F.lit(None).cast("string").alias("updated"))
bronze = lake.read(spark, "bronze.records").unionByName(again.select("record_id", "received_at", "source", "position"))
ctx = SimpleNamespace(lake=lake, spark=spark)
normalize.JOIN_MAX_RECORDS = int(sys.argv[3])
print(normalize._winners(ctx, again, "observation", bronze, True, repeats=False).count())
"""


@pytest.mark.parametrize("join_max", [normalize.JOIN_MAX_RECORDS, 0], ids=["joins", "window"])
def test_ids_delivered_again_are_compared_within_a_small_engine_pool(tmp_path, join_max):
    """150,000 Observations of 4 kB each in silver, all delivered again (as after a mapping change,
    which re-maps every record), with a 64 MiB pool. The comparison with silver's rows once joined
    their whole resources, whose hash table cannot spill: a 4,000-patient lake failed to re-map with
    the default 1.5 GiB pool, and this test failed with 64 MiB. Past `JOIN_MAX_RECORDS` silver rows even
    the narrow joins outgrow the pool (100,000 patients), and the window that replaces them must fit
    too (it orders the delivery columns only: over whole rows, inside a MERGE, it failed a re-map of
    10,000 patients)."""
    done = run_in_small_pool(_REDELIVERED, str(tmp_path / "lake"), "150000", str(join_max), pool_mb=64, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    assert int(done.stdout.strip().splitlines()[-1]) == 150000  # every later delivery wins


_DAILY = """
import sys
from pyspark.sql import functions as F
from carelake import normalize
from carelake.config import load_config
from carelake.engine import get_spark
from carelake.lake import Lake

spark = get_spark()
lake = Lake.from_config(load_config(None), sys.argv[1])
records, new = int(sys.argv[2]), int(sys.argv[3])
ids = spark.range(records).select(F.concat(F.lit("record-"), F.col("id").cast("string"), F.lit("-" + "x" * 40)).alias("record_id"), "id")
lake.overwrite(ids.select("record_id", F.lit("h").alias("hospital"), F.lit("payload").alias("payload")), "bronze.records")
mapping = F.when(F.col("id") < records - new, F.lit("current")).otherwise(F.lit("older"))  # the newest ids: mapped before
lake.overwrite(ids.select("record_id", F.lit("h").alias("hospital"), mapping.alias("mapping")), "phi.record_status")
normalize.JOIN_MAX_RECORDS = int(sys.argv[4])
todo = normalize._not_mapped(lake, spark, lake.read(spark, "bronze.records"), "current")
print(sorted(int(r["record_id"].split("-")[1]) for r in todo.select("record_id").collect()))
"""


@pytest.mark.parametrize("join_max", [7, 6], ids=["ids", "hashes"])
def test_a_daily_run_on_a_large_lake_finds_its_few_records_within_a_small_engine_pool(tmp_path, join_max):
    """1,000,000 records done with the current mapping and 7 not (mapped with an older one): an
    incremental run maps those 7, in a 64 MiB pool. The anti-join with the records done held all
    their ids in one hash table and failed there (a daily run at 100,000 patients filled the default
    1.5 GiB pool with 20.4 M); the aggregation that replaces it past `JOIN_MAX_RECORDS` records done
    can spill. Then bronze's rows are taken by their ids, or past `JOIN_MAX_RECORDS` of them by a
    hash of each id."""
    done = run_in_small_pool(_DAILY, str(tmp_path / "lake"), "1000000", "7", str(join_max), pool_mb=64, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    assert done.stdout.strip().splitlines()[-1] == str(list(range(999_993, 1_000_000)))
