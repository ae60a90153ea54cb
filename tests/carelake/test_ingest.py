"""The ingest runner's counting and de-duplication within one batch of landing files."""

from __future__ import annotations

import os
import shutil

from pyspark.sql import functions as F

from carelake.config import load_config
from carelake.demo import prepare_demo
from carelake.lake import Lake
from carelake.pipeline import run_pipeline

KEY = "ingest-test-key-0123456789abcdef-0123456789"


def _ingest(workdir):
    os.environ["CARELAKE_DEID_KEY"] = KEY
    conf = workdir / "conf"
    summary = run_pipeline(load_config(conf), workdir, ["ingest"])
    assert summary.error is None, summary.error
    return summary.results["ingest"]["feeds"], Lake.from_config(load_config(conf), workdir)


def test_a_file_delivered_twice_in_one_batch_lands_once_and_the_first_delivery_wins(spark, tmp_path):
    workdir = tmp_path / "home"
    prepare_demo(workdir, hospitals=1, patients=12, seed=5)
    folder = next((workdir / "landing").glob("*/hl7v2"))
    original = sorted(folder.glob("*.hl7"))[0]
    copy = folder / ("zz_" + original.name)  # sorts after the original: the source tie-break too
    shutil.copy(original, copy)
    os.utime(copy, (original.stat().st_mtime + 3600,) * 2)  # received an hour later

    feeds, lake = _ingest(workdir)
    hl7 = next(v for k, v in feeds.items() if k.endswith("/hl7v2"))
    bronze = lake.read(spark, "bronze.records").filter(F.col("feed") == "hl7v2")
    in_copy = bronze.filter(F.col("source").endswith(copy.name)).count()
    in_original = bronze.filter(F.col("source").endswith(original.name)).count()

    assert in_original > 0 and in_copy == 0  # every record of the copy repeats one of the original
    assert hl7["read"] == hl7["new"] + in_original  # read counts both deliveries, new counts each record once
    assert bronze.count() == bronze.select("record_id").distinct().count() == hl7["new"]


def test_a_batch_without_repeats_lands_whole_and_counts_every_record_as_new(spark, tmp_path):
    workdir = tmp_path / "home"
    prepare_demo(workdir, hospitals=1, patients=12, seed=5)

    feeds, lake = _ingest(workdir)
    bronze = lake.read(spark, "bronze.records")
    assert all(v["read"] == v["new"] > 0 for v in feeds.values()), feeds
    assert bronze.count() == bronze.select("record_id").distinct().count() == sum(v["new"] for v in feeds.values())

    again, _ = _ingest(workdir)  # the same files again: nothing new, bronze unchanged
    assert all(v["new"] == 0 and v["read"] > 0 for v in again.values()), again
    assert lake.read(spark, "bronze.records").count() == bronze.count()
