"""The quality gate on a whole run: a critical problem blocks publication and the last release stays."""

import dataclasses
import json
import shutil

import pytest
import yaml
from deltalake import DeltaTable

from carelake.config import load_config
from carelake.errors import PrivacyGateError, QualityGateError
from carelake.lake import Lake
from carelake.pipeline import run_pipeline
from carelake.quality import validate_tables


@pytest.fixture()
def copy_of_demo(demo_run, tmp_path):
    """A private copy of the shared demo's working directory, so that the test may break it."""
    workdir, _ = demo_run
    home = tmp_path / "home"
    shutil.copytree(workdir, home)
    config = load_config(home / "conf")
    return home, config, Lake.from_config(config, home)


def _gold(lake, name):
    table = DeltaTable(str(lake.path(name)))
    return table.version(), sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pyarrow_table().to_pylist())


def test_unresolvable_references_and_impossible_dates_block_publication(copy_of_demo, spark):
    from pyspark.sql import functions as F

    home, config, lake = copy_of_demo
    before = {name: _gold(lake, name) for name in ("gold.encounter", "gold.patient", "marts.encounters_by_region_month")}
    encounters = lake.read(spark, "silver.encounter")
    most = F.substring("id", 1, 1) != "0"  # about 15 of 16 rows
    broken = (encounters
              .withColumn("patient_id", F.when(most, F.concat(F.lit("gone"), F.col("patient_id"))).otherwise(F.col("patient_id")))
              .withColumn("resource", F.when(most, F.regexp_replace("resource", '"start":"(19|20)', '"start":"17')).otherwise(F.col("resource"))))
    # materialise first: the table is overwritten from a read of itself
    lake.overwrite(spark.createDataFrame(broken.toPandas()),
                   "silver.encounter", partition_by=["hospital"])

    summary = run_pipeline(config, home, ["validate", "curate", "marts"], run_id="broken-1")

    assert summary.exit_code == QualityGateError.exit_code
    assert summary.error.startswith("validate: ")
    assert "silver.encounter expect_column_values_to_be_in_set(patient_resolves)" in summary.error
    assert "silver.encounter expect_column_values_to_be_in_set(date_plausible)" in summary.error
    assert "sample ids: " in summary.error and "not published" in summary.error
    assert "curate" not in summary.results and "marts" not in summary.results
    for name, (version, rows) in before.items():  # the previous release is still the current one
        assert _gold(lake, name) == (version, rows), name
    report = home / "reports" / "runs" / "broken-1" / "report.html"
    assert "BLOCKED" in report.read_text(encoding="utf-8")
    # the stopped run's validation pages are rendered all the same (a run builds its Data Docs at its end)
    assert "broken-1/" in (home / "reports" / "data_docs" / "index.html").read_text(encoding="utf-8")
    assert (home / "reports" / "latest.html").read_text(encoding="utf-8") == report.read_text(encoding="utf-8").replace(
        "../../data_docs/", "data_docs/").replace("../../validation/", "validation/")


def test_leaked_identifier_in_gold_blocks_publication(copy_of_demo, spark, tmp_path):
    home, config, lake = copy_of_demo
    version, rows = _gold(lake, "gold.patient")
    deid = yaml.safe_load((home / "conf" / "deid.yaml").read_text())
    # the hospital's own Patient id links a gold row back to the hospital's record
    deid["tables"]["patient"]["columns"].append({"column": "id", "action": "keep", "as": "patient_ref"})
    leaky = dataclasses.replace(config, deid=deid)

    summary = run_pipeline(leaky, home, ["curate", "marts"], run_id="leaky-1")

    # Whichever gate sees it first (the grade check, the PHI scan or the gold suite), nothing is published.
    assert summary.exit_code in (QualityGateError.exit_code, PrivacyGateError.exit_code), summary.error
    assert "gold.patient" in summary.error and "patient_ref" in summary.error
    assert "marts" not in summary.results
    assert _gold(lake, "gold.patient") == (version, rows)
    assert "patient_ref" not in lake.read(spark, "gold.patient").columns

    # and the gold suite alone would have stopped it too
    from pyspark.sql import functions as F

    staged = lake.read(spark, "gold.patient").withColumn("patient_ref", F.lit("934ba9a7ecb2324a71225416b5a53aa0"))
    report = validate_tables({"gold.patient": staged}, suites_dir=config.expectations_dir, reports_dir=tmp_path / "reports",
                             run_id="leak-check", id_column="person_id")
    with pytest.raises(QualityGateError, match=r"gold\.patient expect_table_columns_to_match_set"):
        report.raise_if_critical()


def test_every_table_the_demo_produces_is_validated_in_every_run(demo_run):
    workdir, summary = demo_run
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    produced = {t.name for t in lake.tables() if t.name.startswith(("silver.", "gold.", "marts."))}
    validated = set(summary.results["quality"]["tables"])
    assert produced <= validated
    assert "phi.conservation" in validated
    assert summary.results["quality"]["tables"]["phi.conservation"]["verdict"] in ("pass", "warn")
    assert (workdir / "reports" / "runs" / summary.run_id / "report.html").is_file()
    assert (workdir / "reports" / "latest.html").is_file()
