"""jdbc feed against a real PostgreSQL: mapped like CSV, incremental on a watermark.

Connection: $CARELAKE_TEST_PG_DSN (default postgresql://postgres:postgres@127.0.0.1:5432/postgres);
the test skips with the reason when no server answers. `.ci/run` installs and starts PostgreSQL.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest
import yaml

from carelake.config import load_config
from carelake.errors import ConfigError
from carelake.feeds import jdbc
from carelake.lake import Lake
from carelake.pipeline import run_pipeline
from tests.carelake.test_linkage_synthea_paired import make_conf
from tests.conftest import TEST_KEY

DSN = os.environ.get("CARELAKE_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(DSN, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at $CARELAKE_TEST_PG_DSN ({type(exc).__name__}); .ci/run starts one")
    schema = f"his_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE TABLE {schema}.patients (pat_no text PRIMARY KEY, surname text, forename text,
                     dob date, gender text, updated_at timestamptz NOT NULL)""")
    conn.execute(f"""CREATE TABLE {schema}.visits (visit_no text PRIMARY KEY, pat_no text, visit_type text,
                     admitted timestamptz, discharged timestamptz, updated_at timestamptz NOT NULL)""")
    conn.execute(f"""INSERT INTO {schema}.patients VALUES
        ('P1', 'Müller', 'Jürgen', '1950-01-30', 'male', '2024-01-01T10:00:00Z'),
        ('P2', '王', '芳', '1988-07-04', 'female', '2024-01-01T10:00:00Z')""")
    conn.execute(f"""INSERT INTO {schema}.visits VALUES
        ('V1', 'P1', 'inpatient', '2024-01-02T08:00:00Z', '2024-01-05T12:00:00Z', '2024-01-05T12:00:00Z'),
        ('V2', 'P2', 'outpatient', '2024-01-03T09:00:00Z', '2024-01-03T09:30:00Z', '2024-01-03T09:30:00Z')""")
    yield conn, schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


def _conf(tmp_path, schema):
    conf = make_conf(tmp_path, {"hosp-s": [{"kind": "jdbc", "path": "his-db", "mapping": "his-sql",
                                            "options": {"url_env": "CARELAKE_TEST_HIS_URL"}}]})
    mapping = {"name": "his-sql", "entities": {
        "patients": {"table": f"{schema}.patients", "watermark": "updated_at", "date_format": "%Y-%m-%d",
                     "columns": {"patient_id": "pat_no", "family": "surname", "given": "forename", "birth_date": "dob", "sex": "gender"}},
        "encounters": {"table": f"{schema}.visits", "watermark": "updated_at",
                       "columns": {"encounter_id": "visit_no", "patient_id": "pat_no", "class": "visit_type",
                                   "start": "admitted", "end": "discharged"}},
    }}
    (conf / "csv_mappings" / "his-sql.yaml").write_text(yaml.safe_dump(mapping, allow_unicode=True))
    return conf


def test_jdbc_feed_reads_incrementally_on_its_watermark(pg, tmp_path, spark, monkeypatch):
    conn, schema = pg
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("CARELAKE_TEST_HIS_URL", DSN)
    # every read within one second: the later read's rows must still win (they did only half the time
    # when received_at had whole seconds and two runs on a fast machine fell into the same one)
    reads = iter(["2026-12-06T02:34:46.100000Z", "2026-12-06T02:34:46.500000Z", "2026-12-06T02:34:46.900000Z"])
    monkeypatch.setattr(jdbc, "_read_time", lambda: next(reads))
    config = load_config(_conf(tmp_path, schema))
    workdir = tmp_path / "home"
    first = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert first.error is None, first.error
    assert first.results["ingest"]["feeds"]["hosp-s/jdbc"] == {"read": 4, "new": 4}
    lake = Lake.from_config(config, workdir)
    assert lake.read(spark, "silver.patient").count() == 2
    assert lake.read(spark, "silver.encounter").count() == 2
    state = {r["entity"]: r["watermark"] for r in lake.read(spark, "phi.feed_state").collect()}
    assert state["patients"].startswith("2024-01-01T10:00:00")

    # the hospital corrects a name and adds a visit; untouched rows stay below the watermark
    conn.execute(f"UPDATE {schema}.patients SET surname = 'Mueller', updated_at = '2024-02-01T00:00:00Z' WHERE pat_no = 'P1'")
    conn.execute(f"INSERT INTO {schema}.visits VALUES ('V3', 'P1', 'emergency', '2024-02-01T01:00:00Z', NULL, '2024-02-01T01:00:00Z')")
    second = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert second.error is None, second.error
    read = second.results["ingest"]["feeds"]["hosp-s/jdbc"]
    # >= on the watermark re-reads the last row of each table; its content hash keeps it out of bronze
    assert read == {"read": 4, "new": 2}  # P1 changed, P2 and V1 re-read at the mark, V3 new
    patients = {r["id"]: r["resource"] for r in lake.read(spark, "silver.patient").collect()}
    assert len(patients) == 2 and sum("Mueller" in p for p in patients.values()) == 1
    assert lake.read(spark, "silver.encounter").count() == 3
    third = run_pipeline(config, workdir, ["ingest"])
    assert third.results["ingest"]["feeds"]["hosp-s/jdbc"]["new"] == 0


def test_a_read_time_has_microseconds_and_sorts_as_text():
    first = jdbc._read_time()
    time.sleep(0.002)
    second = jdbc._read_time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first)
    assert first < second


def test_jdbc_feed_with_a_renamed_column_names_the_table_and_column(pg, tmp_path, spark, monkeypatch):
    conn, schema = pg
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("CARELAKE_TEST_HIS_URL", DSN)
    conf = _conf(tmp_path, schema)
    path = conf / "csv_mappings" / "his-sql.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("forename", "first_name"), encoding="utf-8")
    summary = run_pipeline(load_config(conf), tmp_path / "home", ["ingest"])
    assert summary.error and f"{schema}.patients (patients)" in summary.error
    assert "missing ['first_name']" in summary.error and "unexpected ['forename']" in summary.error
