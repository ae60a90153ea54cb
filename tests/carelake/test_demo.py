"""End to end: `carelake demo` on the real stack (Sail, Delta on disk, Great Expectations)."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from carelake.config import load_config
from carelake.errors import QualityGateError
from carelake.lake import Lake
from carelake.pipeline import run_pipeline


def _truth_identifiers(workdir):
    """Every direct identifier the generator gave a person: names, ids, MRNs, phones, streets, birth dates."""
    values = set()
    with open(workdir / "synth-truth" / "persons.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for column, value in row.items():
                if column in ("national_id", "family", "given", "birth_date", "phone", "street") or column.startswith("mrn_"):
                    if value:
                        values.add(value)
    return values


def test_demo_summary_conserves_every_record(demo_run):
    _, summary = demo_run
    assert summary.error is None and summary.exit_code == 0
    conservation = summary.results["normalize"]["conservation"]
    assert len(conservation) == 9  # 3 hospitals x 3 feeds
    for feed, counts in conservation.items():
        assert counts["bronze"] == counts["normalized"] + counts["quarantined"], feed
        assert counts["quarantined"] >= 1, f"{feed}: the generator plants bad records in every feed"


def test_bad_records_are_quarantined_with_their_reason(demo_run, spark):
    workdir, _ = demo_run
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    quarantined = {(r.source, r.position): r.error_code for r in lake.read(spark, "phi.quarantine").collect()}
    with open(workdir / "synth-truth" / "bad_records.csv", newline="") as handle:
        expected = {(r["file"], int(r["position"])): r["expected_code"] for r in csv.DictReader(handle)}
    missing = {k: v for k, v in expected.items() if k not in quarantined}
    assert not missing
    assert all(quarantined[k] == v for k, v in expected.items() if k in quarantined)


def test_tables_json_lists_curated_tables_that_deltalake_opens(demo_run):
    workdir, _ = demo_run
    out = subprocess.run([sys.executable, "-m", "carelake.cli", "tables", "--json", "--workdir", str(workdir)],
                         capture_output=True, text=True, check=True)
    tables = json.loads(out.stdout)
    curated = [t for t in tables if t["zone"] == "curated"]
    from carelake.marts import MARTS

    assert {t["name"] for t in curated} == {"gold.patient", "gold.encounter", "gold.observation", "gold.condition",
                                            *(f"marts.{name}" for name in MARTS)}
    assert {t["zone"] for t in tables} == {"phi", "curated"}
    for table in curated:
        rows = DeltaTable(table["path"]).to_pyarrow_table().num_rows
        assert rows == table["rows"] > 0, table["name"]


def test_no_direct_identifier_reaches_the_curated_zone(demo_run):
    workdir, _ = demo_run
    identifiers = _truth_identifiers(workdir)
    assert len(identifiers) > 1000
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    checked = 0
    for table in lake.tables(zones=("curated",)):
        data = DeltaTable(table.path).to_pyarrow_table().to_pylist()
        for row in data:
            for column, value in row.items():
                if value is None:
                    continue
                text = str(value)
                checked += 1
                assert text not in identifiers, f"{table.name}.{column} holds a direct identifier"
                # full birth dates hidden inside a longer value (e.g. a timestamp) count too
                assert not any(len(i) >= 6 and i in text for i in identifiers if i[:2] in ("19", "20") and len(i) == 10), \
                    f"{table.name}.{column} holds a full birth date"
    assert checked > 10000


def test_marts_hold_no_count_between_1_and_10(demo_run):
    workdir, _ = demo_run
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    rows = DeltaTable(str(lake.path("marts.encounters_by_region_month"))).to_pyarrow_table().to_pylist()
    assert any(not r["suppressed"] for r in rows) and any(r["suppressed"] for r in rows)
    for row in rows:
        for column in ("encounters", "persons"):
            assert row[column] is None or row[column] >= 11


def test_data_docs_exist(demo_run):
    workdir, summary = demo_run
    index = workdir / "reports" / "data_docs" / "index.html"
    assert index.exists()
    assert summary.run_id in index.read_text(encoding="utf-8")


def _contents(lake, spark, names):
    return {name: sorted(json.dumps(r.asDict(), sort_keys=True, default=str) for r in lake.read(spark, name).collect()) for name in names}


def test_rerun_gives_the_same_tables(demo_run, spark):
    workdir, _ = demo_run
    config = load_config(workdir / "conf")
    lake = Lake.from_config(config, workdir)
    names = [t.name for t in lake.tables() if t.name != "phi.audit"]
    before = _contents(lake, spark, names)
    summary = run_pipeline(config, workdir, as_of=None)
    assert summary.error is None
    assert _contents(lake, spark, names) == before


def test_failing_critical_expectation_blocks_gold_publication(demo_run, spark, tmp_path):
    workdir, _ = demo_run
    config = load_config(workdir / "conf")
    lake = Lake.from_config(config, workdir)
    version = DeltaTable(str(lake.path("gold.patient"))).version()
    suites = tmp_path / "expectations"
    shutil.copytree(config.expectations_dir, suites)
    suite = json.loads((suites / "gold.patient.json").read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "gender", "value_set": ["female"]},
                                  "meta": {"severity": "critical", "notes": "injected by the test"}})
    (suites / "gold.patient.json").write_text(json.dumps(suite))
    import dataclasses

    blocked = dataclasses.replace(config, expectations_dir=suites)
    summary = run_pipeline(blocked, workdir, ["curate", "marts"])
    assert summary.exit_code == QualityGateError.exit_code
    assert "gold.patient expect_column_values_to_be_in_set(gender)" in summary.error
    assert "not published" in summary.error
    assert "marts" not in summary.results  # the run stopped at the gate
    assert DeltaTable(str(lake.path("gold.patient"))).version() == version


def test_run_without_key_refuses(tmp_path, monkeypatch, demo_run):
    workdir, _ = demo_run
    monkeypatch.delenv("CARELAKE_DEID_KEY")
    out = subprocess.run([sys.executable, "-m", "carelake.cli", "run", "--conf", str(workdir / "conf"), "--workdir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 3
    assert "no de-identification key: set CARELAKE_DEID_KEY" in out.stderr
    assert not (tmp_path / "phi").exists()


def test_sql_over_curated_tables(demo_run):
    workdir, _ = demo_run
    out = subprocess.run([sys.executable, "-m", "carelake.cli", "sql", "SELECT gender, count(*) AS n FROM patient GROUP BY gender ORDER BY gender",
                          "--workdir", str(workdir), "--format", "json"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert {r["gender"] for r in rows} <= {"male", "female", "other", "unknown", None}
    assert sum(r["n"] for r in rows) == DeltaTable(str(workdir / "curated" / "gold" / "patient")).to_pyarrow_table().num_rows


def test_a_one_hospital_demo_needs_no_terminology_map(tmp_path):
    from carelake.demo import prepare_demo

    conf = prepare_demo(tmp_path / "demo", hospitals=1, patients=20, seed=3)
    config = load_config(conf)
    assert [h.id for h in config.hospitals] == ["hosp-a"]
    assert not list((conf / "terminology").glob("*.csv"))
