"""The DAGs of dags/carelake_dags.py, run for real with `dag.test()` on demo data.

Airflow reads its configuration once per process, so Airflow runs in child processes with their own
AIRFLOW_HOME; one child runs a whole plan of DAG runs so that the embedded engine starts once per plan.

Interval semantics under test: a hospital's ingest run reads the files delivered (modified) in its
data interval. The demo's hosp-a files get three delivery days; a backfill over those three days must
leave the same tables as one run over every file in a fresh working directory, and rerunning a day
must change nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from carelake.demo import prepare_demo

ROOT = Path(__file__).resolve().parents[2]
KEY = "dag-test-key-0123456789abcdef0123456789"
HOSPITALS = ("hosp-a", "hosp-b", "hosp-c")
#: The three delivery days of hosp-a's files (after the demo data's last clinical date, 2026-06-30, so that
#: validation as of the curation date finds no event in the future); a daily dag.test with logical date D
#: covers [D - 1 day, D).
DAYS = [datetime(2026, 7, d, tzinfo=timezone.utc) for d in (1, 2, 3)]
CURATION_DATE = "2026-07-10T00:00:00+00:00"
COMPARED = ("phi/bronze/records", "phi/silver/patient", "phi/silver/encounter", "phi/silver/observation",
            "phi/silver/condition", "phi/quarantine", "phi/person_xref", "curated/gold/patient",
            "curated/gold/encounter", "curated/marts/encounters_by_region_month")

# Runs a plan (JSON list of steps) in one process; prints one JSON line per step, prefixed RESULT.
RUNNER = r'''
import hashlib, json, sys
from datetime import datetime
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

def digest(workdir, tables):
    from deltalake import DeltaTable
    out = {}
    for table in tables:
        path = Path(workdir) / table
        if not (path / "_delta_log").is_dir():
            out[table] = None
            continue
        rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
        lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
        out[table] = [len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()]
    return out

bag = DagBag()
assert not bag.import_errors, bag.import_errors
for step in json.loads(sys.argv[1]):
    if "digest" in step:
        print("RESULT", json.dumps({"digest": digest(step["workdir"], step["digest"])}), flush=True)
        continue
    kwargs = {}
    if step.get("logical_date"):
        kwargs["logical_date"] = datetime.fromisoformat(step["logical_date"])
    if step.get("conf"):
        kwargs["run_conf"] = step["conf"]
    run = bag.dags[step["dag"]].test(**kwargs)
    with create_session() as session:
        xcoms = {x.task_id: XComModel.deserialize_value(x) for x in session.scalars(
            select(XComModel).where(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id,
                                    XComModel.key == "return_value"))}
        events = [e.extra for e in session.scalars(select(AssetEvent).where(
            AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id))]
    print("RESULT", json.dumps({"dag": run.dag_id, "state": str(run.state), "xcoms": xcoms, "events": events,
                                "interval": [str(run.data_interval_start), str(run.data_interval_end)]}), flush=True)
'''


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GX_ANALYTICS_ENABLED": "false",
        "CARELAKE_DEID_KEY": KEY,
    }
    env.pop("CARELAKE_CONF", None)
    env.pop("CARELAKE_HOME", None)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=900)
    return env


def _airflow(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _plan(env, workdir: Path, conf: Path, steps: list[dict], timeout=2400) -> list[dict]:
    run_env = {**env, "CARELAKE_HOME": str(workdir), "CARELAKE_CONF": str(conf)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(steps)], env=run_env, capture_output=True,
                         text=True, timeout=timeout)
    results = [json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and len(results) == len(steps), (out.stdout[-4000:], out.stderr[-4000:])
    errors = [line for line in out.stdout.splitlines() if "Error:" in line or "error  ]" in line]
    for step, result in zip(steps, results):
        assert result.get("state", "success").endswith("success"), (step, errors[-10:])
    return results


def _demo(workdir: Path) -> Path:
    """The demo region, with hosp-a's files spread over three delivery days and the others on the last."""
    conf = prepare_demo(workdir, hospitals=3, patients=100, seed=3)
    (conf / "airflow.yaml").write_text((conf / "airflow.yaml").read_text().replace(
        "allow_short_retention: false", "allow_short_retention: true").replace(
        "vacuum_retention_hours: 168", "vacuum_retention_hours: 0"))
    for hospital in HOSPITALS:
        files = sorted(p for p in (workdir / "landing" / hospital).rglob("*") if p.is_file())
        for index, path in enumerate(files):
            day = DAYS[index % 3] if hospital == "hosp-a" else DAYS[-1]
            stamp = (day + timedelta(hours=12)).timestamp()
            os.utime(path, (stamp, stamp))
    return conf


def _day_run(dag: str, day: datetime) -> dict:
    return {"dag": dag, "logical_date": (day + timedelta(days=1)).isoformat()}


def _all_files(dag: str) -> dict:
    return {"dag": dag, "logical_date": (DAYS[-1] + timedelta(days=1)).isoformat(), "conf": {"all_files": True}}


def test_every_dag_imports_without_errors(airflow_env, tmp_path):
    conf = _demo(tmp_path / "home")
    env = {**airflow_env, "CARELAKE_CONF": str(conf)}
    out = _airflow(env, "dags", "list-import-errors", "--local", "-o", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    out = _airflow(env, "dags", "list", "--local", "-o", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    ids = sorted(d["dag_id"] for d in json.loads(out.stdout.strip().splitlines()[-1]))
    assert ids == ["carelake_curation", *(f"carelake_ingest_{h}" for h in HOSPITALS), "carelake_maintenance"]


def test_a_broken_hospital_file_is_an_import_error_that_names_it(airflow_env, tmp_path):
    conf = _demo(tmp_path / "home")
    (conf / "hospitals" / "hosp-b.yaml").write_text("id: hosp-b\nfeeds:\n  - kind: telex\n    path: x\n")
    out = _airflow({**airflow_env, "CARELAKE_CONF": str(conf)}, "dags", "list-import-errors", "--local", "-o", "json")
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert [Path(e["filepath"]).name for e in errors] == ["carelake_dags.py"]
    assert "DagConfError" in errors[0]["error"]
    assert f"{conf / 'hospitals' / 'hosp-b.yaml'}: feeds[0]: 'kind' must be one of" in errors[0]["error"]


@pytest.fixture(scope="module")
def backfilled(airflow_env, tmp_path_factory):
    """Working directory A: hosp-a day by day (a backfill), a rerun of the last day, the other
    hospitals, curation, then maintenance; digests taken along the way."""
    workdir = tmp_path_factory.mktemp("backfill") / "home"
    conf = _demo(workdir)
    steps = [_day_run("carelake_ingest_hosp-a", day) for day in DAYS]
    steps += [{"digest": list(COMPARED[:7]), "workdir": str(workdir)}, _day_run("carelake_ingest_hosp-a", DAYS[-1]),
              {"digest": list(COMPARED[:7]), "workdir": str(workdir)}]
    steps += [_day_run("carelake_ingest_hosp-b", DAYS[-1]), _all_files("carelake_ingest_hosp-c"),
              {"dag": "carelake_curation", "logical_date": CURATION_DATE},
              {"digest": list(COMPARED), "workdir": str(workdir)},
              {"dag": "carelake_maintenance", "logical_date": CURATION_DATE},
              {"digest": list(COMPARED), "workdir": str(workdir)}]
    return workdir, _plan(airflow_env, workdir, conf, steps)


@pytest.fixture(scope="module")
def one_run(airflow_env, tmp_path_factory):
    """Working directory B: the same inputs, one run per hospital over every file, then curation."""
    workdir = tmp_path_factory.mktemp("one-run") / "home"
    conf = _demo(workdir)
    steps = [_all_files(f"carelake_ingest_{h}") for h in HOSPITALS]
    steps += [{"dag": "carelake_curation", "logical_date": CURATION_DATE}, {"digest": list(COMPARED), "workdir": str(workdir)}]
    return workdir, _plan(airflow_env, workdir, conf, steps)


def test_each_ingest_run_reads_the_files_delivered_in_its_interval(backfilled):
    _, results = backfilled
    for day, result in zip(DAYS, results[:3]):
        ingest = result["xcoms"]["ingest"]
        assert ingest["window"] == [day.isoformat(), (day + timedelta(days=1)).isoformat()]
        assert ingest["files"] > 0 and ingest["read"] > 0 and ingest["new"] > 0
    assert sum(r["xcoms"]["ingest"]["files"] for r in results[:3]) == sum(
        1 for p in (backfilled[0] / "landing" / "hosp-a").rglob("*") if p.is_file())
    normalize = results[2]["xcoms"]["normalize"]
    assert normalize["bronze"] == normalize["normalized"] + normalize["quarantined"] and not normalize["unbalanced"]
    assert {e["hospital"] for e in results[2]["events"] if "hospital" in e} == {"hosp-a"}


def test_rerunning_an_ingest_run_leaves_the_tables_unchanged(backfilled):
    _, results = backfilled
    before, rerun, after = results[3], results[4], results[5]
    assert rerun["xcoms"]["ingest"]["read"] > 0 and rerun["xcoms"]["ingest"]["new"] == 0
    assert after["digest"] == before["digest"]
    assert all(value and value[0] > 0 for value in before["digest"].values())


def test_a_backfill_over_three_days_equals_one_run_over_all_files(backfilled, one_run):
    backfill_digest = backfilled[1][9]["digest"]
    one_run_digest = one_run[1][4]["digest"]
    assert backfill_digest == one_run_digest
    for table in ("curated/gold/patient", "curated/marts/encounters_by_region_month", "phi/silver/observation"):
        assert backfill_digest[table][0] > 0, table


def test_curation_reports_the_verdict_and_counts(backfilled):
    workdir, results = backfilled
    curation = results[8]
    summary = curation["xcoms"]["summary"]
    assert summary["verdict"] in ("pass", "warn")
    assert set(summary["verdicts"]) == {"silver", "gold", "marts"}
    assert summary["gold_rows"]["patient"] > 0 and summary["mart_rows"]
    assert any("verdict" in e and e["rows"] for e in curation["events"])
    assert DeltaTable(str(workdir / "curated/gold/encounter")).to_pyarrow_table().num_rows > 0


def test_maintenance_compacts_and_vacuums_without_changing_contents(backfilled):
    workdir, results = backfilled
    maintenance = results[10]["xcoms"]
    assert maintenance["purge_quarantine"]["purged"] == 0  # quarantined in July, kept 365 days
    assert maintenance["purge_quality_results"]["purged"] == 0  # validated by these runs, kept 365 days
    assert maintenance["compact"]["files_removed"] > 0
    assert maintenance["vacuum"]["files_deleted"] > 0
    assert results[11]["digest"] == results[9]["digest"]
    table = DeltaTable(str(workdir / "phi/bronze/records"))
    assert len(table.file_uris()) <= len(HOSPITALS)  # one file per hospital partition after compaction
