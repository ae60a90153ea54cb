"""The Airflow DAG, run for real with `dag.test()` against an Airflow metadata DB in a temp folder.

Airflow reads its configuration once per process, so each check runs Airflow in a child process with
its own AIRFLOW_HOME.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from carelake.demo import prepare_demo

ROOT = Path(__file__).resolve().parents[2]


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
    }
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env


def _airflow(env, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_dags_import_without_errors(airflow_env):
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag()\n"
        "print(sorted(bag.dag_ids)); print(bag.import_errors)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=airflow_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ids, errors = out.stdout.strip().splitlines()[-2:]
    assert ids == "['carelake_pipeline']"
    assert errors == "{}"


def test_dag_runs_every_stage_on_the_demo_data(airflow_env, tmp_path):
    workdir = tmp_path / "home"
    conf = prepare_demo(workdir, hospitals=2, patients=150, seed=3)
    env = {**airflow_env, "CARELAKE_HOME": str(workdir), "CARELAKE_CONF": str(conf),
           "CARELAKE_DEID_KEY": "dag-test-key-0123456789abcdef0123456789"}
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "dag = DagBag().get_dag('carelake_pipeline')\n"
        "run = dag.test()\n"
        "print('STATE', run.state)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert "STATE success" in out.stdout, (out.stdout[-3000:], out.stderr[-3000:])
    for table in ("curated/gold/patient", "curated/gold/encounter", "curated/marts/encounters_by_region_month", "phi/silver/observation"):
        assert DeltaTable(str(workdir / table)).to_pyarrow_table().num_rows > 0, table
