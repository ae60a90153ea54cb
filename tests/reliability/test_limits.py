"""Resource limits: one huge record or file does not take a run down; a full disk or an unreadable
landing file fails the stage with a clear message and loses nothing already committed."""

from __future__ import annotations

import json
import os

import pytest

from reliability_helpers import KEY, assert_tables_readable, run_child, snapshot

from carelake.errors import LandingFileError
from carelake.lake import Lake, Limits
from transforms.errors import MARKER_PREFIX
from transforms.ingest import split_file
from transforms.normalize import Mapping, normalize_record

ADT = ("MSH|^~\\&|HIS|HOSP|LAKE|REG|20240101120000||ADT^A01|MSG1|P|2.5\r"
       "PID|1||12345^^^HOSP^MR||Doe^Jane||19800101|F\rPV1|1|I\r")


def _file_row(path, feed="hl7v2"):
    return {"hospital": "hosp-a", "feed": feed, "path": str(path), "source": f"hosp-a/{path.name}",
            "received_at": "2024-01-01T00:00:00Z", "entity": None, "options": None}


def test_an_oversized_record_is_kept_as_a_marker_and_quarantined_too_large(tmp_path):
    huge = ADT.replace("Doe^Jane", "Doe^" + "J" * 50_000)
    path = tmp_path / "batch.hl7"
    path.write_text(ADT + huge + ADT.replace("MSG1", "MSG2"))
    records = list(split_file(_file_row(path), max_record_bytes=10_000))
    assert [r["position"] for r in records] == [0, 1, 2]
    marker = records[1]
    assert marker["payload"].startswith(MARKER_PREFIX + "TOO_LARGE")
    assert "J" * 20 not in marker["payload"] and "Doe" not in marker["payload"]  # no content kept
    # the record id still hashes the whole record: a re-delivery is recognized
    assert marker["record_id"] == list(split_file(_file_row(path), max_record_bytes=10_000))[1]["record_id"]
    rows = list(normalize_record({**marker, "received_at": "x"}, Mapping()))
    assert [(r["outcome"], r["error_code"]) for r in rows] == [("quarantined", "TOO_LARGE")]
    assert "record of 50,1" in rows[0]["reason"] and "limits.max_record_bytes" in rows[0]["reason"]


def test_a_file_that_stops_splitting_keeps_its_records_and_one_parse_marker(tmp_path):
    path = tmp_path / "broken.ndjson"
    path.write_bytes(b'{"resourceType":"Patient","id":"a"}\n')
    row = _file_row(path, "fhir")
    row["path"] = str(tmp_path / "gone.ndjson")  # vanished between listing and reading
    records = list(split_file(row))
    assert len(records) == 1 and records[0]["payload"].startswith(MARKER_PREFIX + "PARSE")
    assert "FileNotFoundError" in records[0]["payload"]


def test_limits_come_from_conf_and_bad_values_are_refused():
    assert Limits.from_dict({"max_record_bytes": 10}).max_record_bytes == 10
    with pytest.raises(Exception, match=r"limits.max_file_bytes must be a positive number, found -1"):
        Limits.from_dict({"max_file_bytes": -1})
    with pytest.raises(Exception, match=r"unknown key\(s\) under 'limits': max_rows"):
        Limits.from_dict({"max_rows": 3})


def test_an_oversized_or_unreadable_landing_file_is_refused_by_name(tmp_path):
    lake = Lake(tmp_path, {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"},
                Limits(max_file_bytes=100))
    (tmp_path / "landing" / "hosp-a").mkdir(parents=True)
    big = tmp_path / "landing" / "hosp-a" / "big.hl7"
    big.write_bytes(b"x" * 101)
    with pytest.raises(LandingFileError, match=r"landing file hosp-a/big.hl7 is 101 bytes, over limits.max_file_bytes \(100\)"):
        lake.check_landing_files([_file_row(big) | {"source": "hosp-a/big.hl7"}])
    gone = tmp_path / "landing" / "hosp-a" / "gone.hl7"
    with pytest.raises(LandingFileError, match=r"landing file hosp-a/gone.hl7 cannot be read \(No such file or directory\)"):
        lake.check_landing_files([_file_row(gone) | {"source": "hosp-a/gone.hl7"}])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_file_over_the_limit_stops_ingest_before_any_write(region):
    lake_yaml = region / "conf" / "lake.yaml"
    lake_yaml.write_text(lake_yaml.read_text().replace("max_file_bytes: 2147483648", "max_file_bytes: 2000"))
    code, summary, err = run_child(region, "ingest")
    assert code == LandingFileError.exit_code, err[-2000:]
    assert "over limits.max_file_bytes (2,000)" in summary["error"] and "landing file hosp-" in summary["error"]
    assert not (region / "phi" / "bronze").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_full_disk_fails_the_stage_clearly_and_keeps_what_was_committed(region):
    code, _, err = run_child(region, "ingest")
    assert code == 0, err[-2000:]
    before = snapshot(region)
    versions = assert_tables_readable(region)
    # normalize on a "full disk": no file may grow past 4 KB (its Parquet files are bigger)
    code, summary, err = run_child(region, "normalize", CARELAKE_TEST_FSIZE="4096")
    assert code == 8, err[-3000:]
    assert summary["error"].startswith("normalize: ") and "rerun resumes" in summary["error"], summary
    assert assert_tables_readable(region)["bronze.records"] == versions["bronze.records"]
    assert snapshot(region)["bronze.records"] == before["bronze.records"]
    code, summary, err = run_child(region, "normalize")
    assert code == 0, err[-3000:]
    status = snapshot(region)["phi.record_status"]
    assert len(status) == len(before["bronze.records"])
