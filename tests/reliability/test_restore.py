"""Disaster recovery: a table restored to an earlier version (delta-rs restore, `carelake lake
restore`), and gold and marts derived again from silver after the curated zone is lost."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from reliability_helpers import KEY, snapshot

from carelake.lake import Lake
from carelake.restore import RestoreError, history, restore_table

ZONES = {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"}


def _rows(lake, spark, table):
    return sorted(tuple(r) for r in lake.read(spark, table).collect())


def test_restore_brings_back_an_earlier_version_as_a_new_commit(spark, tmp_path):
    lake = Lake(tmp_path, dict(ZONES))
    for n in (1, 2, 3):
        lake.overwrite(spark.createDataFrame([(i,) for i in range(n)], "n int"), "silver.t")
    assert [h["version"] for h in history(lake, "silver.t")] == [2, 1, 0]
    result = restore_table(lake, "silver.t", 0)
    assert result == {"table": "silver.t", "restored_to": 0, "from_version": 2, "new_version": 3}
    assert _rows(lake, spark, "silver.t") == [(0,)]
    restore_table(lake, "silver.t", 2)  # a restore is itself undone by a restore
    assert _rows(lake, spark, "silver.t") == [(0,), (1,), (2,)]
    with pytest.raises(RestoreError, match=r"silver.t has versions 0..4; version 9 does not exist"):
        restore_table(lake, "silver.t", 9)
    with pytest.raises(RestoreError, match=r"silver.nope does not exist"):
        restore_table(lake, "silver.nope", 0)


def test_cli_lake_restore(spark, tmp_path):
    from carelake.cli import cli

    lake = Lake(tmp_path, dict(ZONES))
    for n in (1, 2):
        lake.overwrite(spark.createDataFrame([(i,) for i in range(n)], "n int"), "gold.t")
    out = CliRunner().invoke(cli, ["lake", "restore", "gold.t", "--version", "0", "--workdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "gold.t: restored to version 0 (was 1, now version 2)" in out.output
    assert _rows(lake, spark, "gold.t") == [(0,)]
    out = CliRunner().invoke(cli, ["lake", "history", "gold.t", "--workdir", str(tmp_path)])
    assert out.exit_code == 0 and out.output.count('"version"') == 3


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gold_and_marts_are_derived_again_from_silver(spark, region):
    from carelake.config import load_config
    from carelake.pipeline import run_pipeline

    os.environ["CARELAKE_DEID_KEY"] = KEY
    config = load_config(region / "conf")
    summary = run_pipeline(config, region, ["ingest", "normalize", "curate", "marts"])
    assert summary.error is None, summary.error
    published = {t: rows for t, rows in snapshot(region).items() if t.startswith(("gold.", "marts."))}
    assert published
    shutil.rmtree(region / "curated")  # the curated zone is lost
    summary = run_pipeline(config, region, ["curate", "marts"])
    assert summary.error is None, summary.error
    again = {t: rows for t, rows in snapshot(region).items() if t.startswith(("gold.", "marts."))}
    assert again == published
