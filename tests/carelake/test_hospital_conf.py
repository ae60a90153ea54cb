"""carelake.hospital_conf: one set of rules for conf/hospitals/*.yaml, applied by `carelake run`
(carelake.config.load_config) and by the DAG factory (carelake.airflow_tasks.dag_conf) alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carelake.airflow_tasks import DagConfError, dag_conf
from carelake.config import load_config
from carelake.errors import ConfigError
from carelake.hospital_conf import FEED_KINDS, check_feed, read_hospital

ROOT = Path(__file__).resolve().parents[2]
GOOD = "id: hosp-x\nfeeds:\n  - kind: hl7v2\n    path: hosp-x/hl7v2/*.hl7\n"
REST = "id: hosp-x\nfeeds:\n  - kind: fhir-rest\n    path: hosp-x/rest\n    options: {url: 'https://fhir.example/r4'%s}\n"


def _conf(tmp_path: Path, hospitals: dict[str, str]) -> Path:
    """The project's conf with only the given hospital files."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("hospitals"))
    (conf / "hospitals").mkdir()
    for name, text in hospitals.items():
        (conf / "hospitals" / f"{name}.yaml").write_text(text)
    return conf


def _both(conf: Path) -> tuple[ConfigError, DagConfError]:
    """The errors `carelake run` and the DAG factory raise for `conf` (each must raise)."""
    with pytest.raises(ConfigError) as run_side:
        load_config(conf)
    with pytest.raises(DagConfError) as dag_side:
        dag_conf(conf)
    return run_side.value, dag_side.value


@pytest.mark.parametrize("text, message", [
    ("feeds: []\n", "'id' is required: lower-case letters, digits, '-' or '_' (e.g. hosp-a); found None"),
    ("id: Hosp A\nfeeds: []\n", "'id' is required: lower-case letters, digits, '-' or '_' (e.g. hosp-a); found 'Hosp A'"),
    ("id: hosp-x\nfeeds: []\n", "'feeds' is empty; a hospital needs at least one feed"),
    ("id: hosp-x\nfeeds: {kind: csv}\n", "'feeds' must be a list of feeds"),
    (GOOD + "feed: []\n", "unknown keys ['feed']; a hospital file has id, name, schedule, feeds, hl7v2, airflow"),
    ("id: hosp-x\nfeeds:\n  - kind: telex\n    path: x\n", "feeds[0]: 'kind' must be one of hl7v2, csv, fhir, jdbc, fhir-rest"),
    ("id: hosp-x\nfeeds:\n  - kind: csv\n", "feeds[0]: 'path' is required"),
    ("id: hosp-x\nfeeds:\n  - kind: csv\n    path: x\n", "feeds[0]: a csv feed needs 'mapping' (a file name in conf/csv_mappings/)"),
    ("id: hosp-x\nfeeds:\n  - kind: csv\n    path: x\n    mapping: his-a\n    encoding: utf-8\n",
     "feeds[0]: unknown keys ['encoding']; a feed has kind, path, mapping and options"),
    (GOOD + "  - kind: fhir\n    path: x\n    options: [a]\n", "feeds[1]: 'options' must be a mapping"),
    (GOOD + "  - kind: hl7v2\n    path: x\n    options: {delimiter: ';'}\n",
     "feeds[1]: unknown options ['delimiter'] for a hl7v2 feed; known: []"),
    ("id: hosp-x\nfeeds:\n  - kind: jdbc\n    path: db\n    mapping: his-a\n", "feeds[0]: a jdbc feed needs options.url_env"),
    ("id: hosp-x\nfeeds:\n  - kind: jdbc\n    path: db\n    mapping: his-a\n    options: {url: 'postgresql://u:hunter2@db/his'}\n",
     "feeds[0]: options.url carries a password; put the URL in an environment variable named by options.url_env"),
    (GOOD + "  - kind: fhir\n    path: x\n    options: {reference_files: 'org*.json'}\n",
     "feeds[1]: 'options.reference_files' must be a list of globs"),
    ("id: hosp-x\nfeeds:\n  - kind: fhir-rest\n    path: x\n",
     "feeds[0]: a fhir-rest feed needs options.url (the FHIR server's base URL"),
    (REST % ", mode: stream", "feeds[0]: 'options.mode' must be search or bulk, found 'stream'"),
    (REST % ", types: Patient", "feeds[0]: 'options.types' must be a non-empty list of FHIR resource types"),
    (REST % ", types: [patient]", "feeds[0]: 'options.types' must be a non-empty list of FHIR resource types"),
    (REST % ", page_size: 0", "feeds[0]: 'options.page_size' must be a whole number > 0 and <= 10,000, found 0"),
    (REST % ", max_wait_minutes: -5", "feeds[0]: 'options.max_wait_minutes' must be a number > 0, found -5"),
    (REST % ", auth_env: 'my token'", "feeds[0]: 'options.auth_env' must name an environment variable"),
    (REST % ", auth_env: TOKEN, airflow_conn: fhir", "feeds[0]: set one of options.auth_env and options.airflow_conn, not both"),
    (REST % ", airflow_conn: 42", "feeds[0]: 'options.airflow_conn' must be an Airflow connection id, found 42"),
    (REST.replace("https://fhir.example/r4", "https://me:pw@fhir.example/r4") % "",
     "feeds[0]: 'options.url' must not carry credentials; put the token in options.auth_env or options.airflow_conn"),
    (REST.replace("https://fhir.example/r4", "https://fhir.example/r4?token=abc") % "",
     "feeds[0]: 'options.url' must be the server's base URL without '?' or '#' parts"),
    (REST.replace("https://fhir.example/r4", "fhir.example") % "", "feeds[0]: 'options.url' must be the server's base URL"),
    (GOOD + "schedule: sometimes\n", "'schedule' must be a cron expression ('0 2 * * *') or a preset ('@daily')"),
    (GOOD + "airflow:\n  retries: many\n", "airflow: 'retries' must be a whole number >= 0, found 'many'"),
    (GOOD + "airflow:\n  pool: big\n", "airflow: unknown keys ['pool']; known: retries"),
    (GOOD + "hl7v2: [x]\n", "'hl7v2' must be a mapping"),
    (GOOD + "hl7v2:\n  timezone: CET\n", "hl7v2.timezone must be an offset like '+08:00', got 'CET'"),
    (GOOD + "hl7v2:\n  z_segments: [{field: PID-3, target: identifier}]\n",
     "hl7v2.z_segments[1]: 'field' must name a Z-segment field like ZPI-3 or ZPI-3.2"),
    ("id: [unclosed\n", "is not valid YAML"),
    ("- a list\n", "must hold a mapping at the top level"),
])
def test_run_and_dag_factory_refuse_a_broken_file_with_the_same_message(tmp_path, text, message):
    conf = _conf(tmp_path, {"x": text})
    run_error, dag_error = _both(conf)
    assert str(run_error) == str(dag_error)
    assert str(run_error).startswith(str(conf / "hospitals" / "x.yaml"))
    assert message in str(run_error)
    assert "hunter2" not in str(run_error) and "me:pw" not in str(run_error)  # secrets are never echoed


def test_cross_file_rules_are_shared_too(tmp_path):
    run_error, dag_error = _both(_conf(tmp_path / "dup", {"a": GOOD, "b": GOOD}))
    assert str(run_error) == str(dag_error)
    assert "hospital id 'hosp-x' is declared twice" in str(run_error)
    missing = "id: hosp-x\nfeeds:\n  - kind: csv\n    path: x\n    mapping: his-z\n"
    run_error, dag_error = _both(_conf(tmp_path / "map", {"x": missing}))
    assert str(run_error) == str(dag_error)
    assert "hospital hosp-x: csv mapping 'his-z' not found in" in str(run_error)


def test_a_good_file_reads_the_same_on_both_sides(tmp_path):
    text = ("id: hosp-x\nname: Hospital X\nschedule: '0 3 * * *'\nairflow: {retries: 5}\nfeeds:\n"
            "  - {kind: csv, path: hosp-x/csv, mapping: his-a}\n"
            "  - kind: fhir-rest\n    path: hosp-x/rest\n"
            "    options: {url: 'https://fhir.example/r4', mode: bulk, types: [Patient], airflow_conn: hosp_x_fhir}\n")
    conf = _conf(tmp_path, {"x": text})
    (hospital,) = load_config(conf).hospitals
    (spec,) = dag_conf(conf).hospitals
    assert (hospital.id, hospital.name, hospital.schedule) == (spec.id, spec.name, spec.schedule) == ("hosp-x", "Hospital X", "0 3 * * *")
    assert [(f.kind, f.path, f.mapping) for f in hospital.feeds] == [(f.kind, f.path, f.mapping) for f in spec.feeds]
    assert hospital.feeds[1].options["mode"] == "bulk" and spec.connection_ids == ("hosp_x_fhir",) and spec.retries == 5
    parsed = read_hospital(conf / "hospitals" / "x.yaml")
    assert parsed.schedule_set and parsed.airflow == {"retries": 5}


def test_schedule_defaults_differ_only_where_they_should(tmp_path):
    """Without `schedule`, `carelake run` records @daily and the DAG takes conf/airflow.yaml's ingest schedule."""
    conf = _conf(tmp_path, {"x": GOOD, "y": GOOD.replace("hosp-x", "hosp-y") + "schedule: null\n"})
    assert [h.schedule for h in load_config(conf).hospitals] == ["@daily", None]
    assert [h.schedule for h in dag_conf(conf).hospitals] == ["@daily", None]


def test_check_feed_alone_is_what_adhoc_runs_use():
    feed = check_feed({"kind": "fhir-rest", "path": "p", "options": {"url": "https://fhir.example/r4"}}, "--feed x")
    assert feed.options == {"url": "https://fhir.example/r4"} and "fhir-rest" in FEED_KINDS
    with pytest.raises(ConfigError, match=r"^--feed x: 'options.mode' must be search or bulk"):
        check_feed({"kind": "fhir-rest", "path": "p", "options": {"url": "https://f.example", "mode": "x"}}, "--feed x")


def test_the_shared_module_is_light_enough_for_dag_parsing():
    code = ("import sys, carelake.hospital_conf\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'great_expectations', 'pysail', "
            "'deltalake', 'pandas', 'pyarrow', 'airflow', 'transforms') or m in ('carelake.config', 'carelake.engine'))\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "CARELAKE_CONF"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
