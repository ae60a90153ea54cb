"""carelake.airflow_tasks: the DAG specification read from conf/ at parse time, and the interval filter."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from carelake.airflow_tasks import (
    FEED_KINDS, SILVER_TABLES, DagConfError, _raise_for, dag_conf, default_conf_dir,
)
from carelake.errors import CarelakeError, ConfigError, PrivacyGateError, QualityGateError

ROOT = Path(__file__).resolve().parents[2]


def _conf(tmp_path: Path, hospitals: dict[str, str], airflow: str | None = None) -> Path:
    (tmp_path / "hospitals").mkdir(parents=True)
    for name, text in hospitals.items():
        (tmp_path / "hospitals" / f"{name}.yaml").write_text(text)
    if airflow is not None:
        (tmp_path / "airflow.yaml").write_text(airflow)
    return tmp_path


GOOD = "id: hosp-x\nfeeds:\n  - kind: hl7v2\n    path: hosp-x/hl7v2/*.hl7\n"


def test_the_project_conf_makes_one_ingest_dag_per_demo_hospital():
    conf = dag_conf(ROOT / "conf")
    assert [h.dag_id for h in conf.hospitals] == ["carelake_ingest_hosp-a", "carelake_ingest_hosp-b", "carelake_ingest_hosp-c"]
    assert all(h.schedule == "@daily" and [f.kind for f in h.feeds] == ["hl7v2", "csv", "fhir"] for h in conf.hospitals)
    assert conf.defaults.retries == 3 and conf.defaults.retry_exponential_backoff == 2.0
    assert conf.vacuum_retention_hours == 168 and conf.quarantine_retention_days == 365 and conf.quality_retention_days == 365
    assert conf.start_date == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_the_demo_hospital_files_are_what_the_demo_generates():
    import yaml

    from carelake.demo import demo_hospital
    from carelake.synth import csv_mapping_for

    for hospital in ("hosp-a", "hosp-b", "hosp-c"):
        shipped = yaml.safe_load((ROOT / "conf" / "hospitals" / f"{hospital}.yaml").read_text())
        assert shipped == demo_hospital(hospital, csv_mapping_for(hospital))


def test_defaults_apply_without_airflow_yaml_and_a_hospital_can_override(tmp_path):
    conf = dag_conf(_conf(tmp_path, {"x": GOOD, "y": GOOD.replace("hosp-x", "hosp-y") + "schedule: '0 3 * * *'\nairflow:\n  retries: 7\n"}))
    x, y = conf.hospitals
    assert (x.schedule, x.retries) == ("@daily", None)
    assert (y.schedule, y.retries) == ("0 3 * * *", 7)
    assert conf.pool is None and conf.maintenance_schedule == "@weekly"
    assert conf.defaults.default_args(pool="lake")["pool"] == "lake"


def test_a_connection_id_comes_from_the_feed_options(tmp_path):
    text = GOOD + "  - kind: fhir-rest\n    path: hosp-x/rest\n    options: {url: 'https://fhir.example', airflow_conn: hosp_x_fhir}\n"
    (hospital,) = dag_conf(_conf(tmp_path, {"x": text})).hospitals
    assert hospital.connection_ids == ("hosp_x_fhir",)


@pytest.mark.parametrize("text, message", [
    ("feeds: []\n", "'id' is required"),
    ("id: Hosp A\nfeeds: []\n", "'id' is required"),
    ("id: hosp-x\nfeeds: []\n", "'feeds' is empty"),
    ("id: hosp-x\nfeeds:\n  - kind: telex\n    path: x\n", "feeds[0]: 'kind' must be one of hl7v2, csv, fhir, jdbc, fhir-rest"),
    ("id: hosp-x\nfeeds:\n  - kind: csv\n", "feeds[0]: 'path' is required"),
    (GOOD + "schedule: sometimes\n", "'schedule' must be a cron expression"),
    (GOOD + "airflow:\n  retries: many\n", "airflow: 'retries' must be a whole number"),
    ("id: [unclosed\n", "is not valid YAML"),
    ("- a list\n", "must hold a mapping at the top level"),
])
def test_a_broken_hospital_file_raises_a_named_error_with_file_and_key(tmp_path, text, message):
    conf = _conf(tmp_path, {"x": text})
    with pytest.raises(DagConfError) as info:
        dag_conf(conf)
    assert str(conf / "hospitals" / "x.yaml") in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_duplicate_hospital_ids_and_bad_shared_settings_are_named(tmp_path):
    conf = _conf(tmp_path, {"a": GOOD, "b": GOOD})
    with pytest.raises(DagConfError, match="hospital id 'hosp-x' is declared twice"):
        dag_conf(conf)
    other = _conf(tmp_path / "other", {"a": GOOD}, "defaults:\n  retry_delay_minutes: -1\n")
    with pytest.raises(DagConfError, match=r"airflow.yaml: defaults: 'retry_delay_minutes' must be a number of minutes >= 0"):
        dag_conf(other)
    with pytest.raises(DagConfError, match="does not exist; set CARELAKE_CONF"):
        dag_conf(tmp_path / "nowhere")


def test_conf_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CARELAKE_CONF", str(tmp_path))
    assert default_conf_dir() == tmp_path.resolve()
    monkeypatch.delenv("CARELAKE_CONF")
    assert default_conf_dir() == (ROOT / "conf").resolve()


def test_parse_time_constants_match_the_runtime_modules():
    from carelake.config import FEED_KINDS as CONFIG_KINDS
    from carelake.normalize import CORE_TABLES

    assert FEED_KINDS == CONFIG_KINDS
    assert SILVER_TABLES == CORE_TABLES


def test_importing_the_dag_side_pulls_no_engine_and_no_quality_library():
    code = ("import sys, carelake.airflow_tasks\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'great_expectations', 'pysail', "
            "'deltalake', 'pandas', 'pyarrow') or m in ('carelake.config', 'carelake.engine'))\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "CARELAKE_CONF"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_stage_error_is_raised_with_its_own_class():
    class Summary:
        def __init__(self, error, exit_code):
            self.error, self.exit_code = error, exit_code

    _raise_for(Summary(None, 0))
    with pytest.raises(QualityGateError, match="curate: critical expectation"):
        _raise_for(Summary("curate: critical expectation failed", 4))
    with pytest.raises(PrivacyGateError):
        _raise_for(Summary("curate: PHI", 5))
    with pytest.raises(CarelakeError):
        _raise_for(Summary("ingest: something", 2))


def test_landing_files_keeps_the_files_received_in_the_window(tmp_path):
    from carelake.config import Feed
    from carelake.ingest import landing_files

    folder = tmp_path / "hosp-x" / "hl7v2"
    folder.mkdir(parents=True)
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    for day in range(3):
        path = folder / f"day{day}.hl7"
        path.write_text("MSH|^~\\&|\r")
        stamp = (start + timedelta(days=day, hours=23, minutes=59, seconds=59)).timestamp()
        os.utime(path, (stamp, stamp))
    feeds = [Feed("hosp-x", "hl7v2", "hosp-x/hl7v2/*.hl7")]
    window = (start + timedelta(days=1), start + timedelta(days=2))
    assert [r["source"] for r in landing_files(feeds, tmp_path, {}, received_between=window)] == ["hosp-x/hl7v2/day1.hl7"]
    assert len(landing_files(feeds, tmp_path, {})) == 3
