"""Bad input: truncated, mis-encoded, binary, huge, deeply nested, mistyped and duplicated records
never crash or hang a stage; every bad record is quarantined with a code and a reason, and counts are
conserved (bronze = normalized + quarantined).

Property tests (hypothesis) run the per-record functions directly; one pipeline test runs a landing
zone of junk files through ingest and normalize.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.errors import CODES
from transforms.hl7v2 import split_messages
from transforms.ingest import split_file
from transforms.normalize import Mapping, normalize_record

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=int(os.environ.get("CARELAKE_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
#: inputs each property test tried (reported in docs/reliability.md)
TRIED: dict[str, int] = {}

ADT = ("MSH|^~\\&|HIS|HOSP|LAKE|REG|20240101120000||ADT^A01|MSG00001|P|2.5\r"
       "EVN|A01|20240101120000\rPID|1||12345^^^HOSP^MR||Doe^Jane||19800101|F|||1 Main St^^Town^^12345\r"
       "PV1|1|I|WARD^1^1||||1234^Smith^John|||||||||||V0001\r")
FHIR_PATIENT = json.dumps({"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe", "given": ["Jane"]}],
                           "birthDate": "1980-01-01", "gender": "female"})
CSV_ROW = json.dumps({"entity": "patients", "row": {"PATIENT_ID": "1", "LAST_NAME": "Doe", "FIRST_NAME": "Jane",
                                                     "BIRTHDATE": "1980-01-01", "SEX": "F"}})


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _truncations(text: str):
    return st.integers(0, len(text)).map(lambda n: text[:n])


junk_text = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="surrogateescape").encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
    _truncations(ADT), _truncations(FHIR_PATIENT), _truncations(CSV_ROW),
    st.integers(1, 200_000).map(lambda n: ADT.replace("Doe^Jane", "X" * n)),  # huge field
    st.integers(10, 50_000).map(_deep),  # deep nesting
    st.integers(10, 5_000).map(lambda n: '{"resourceType":"Patient","id":"p","extension":' + _deep(n) + "}"),
    st.sampled_from([json.dumps(v) for v in (None, 1, "Patient", [], {}, {"resourceType": 5}, {"resourceType": "Patient", "id": 7},
                                             {"resourceType": "Patient", "birthDate": 19800101}, {"entity": 3, "row": []},
                                             {"entity": "patients", "row": {"BIRTHDATE": ["x"]}})]),
    st.sampled_from([ADT.replace("|", "\x00"), ADT.replace("\r", ""), "MSH", "MSH|", "MSH|^~\\&", ADT * 3]),
)


def _row(feed: str, payload: str, fmt: str = "x") -> dict:
    return {"record_id": "r", "hospital": "hosp-a", "feed": feed, "format": fmt, "source": "s", "position": 0,
            "received_at": "2024-01-01T00:00:00Z", "payload": payload}


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping(csv_mappings={"hosp-a": yaml.safe_load((ROOT / "conf" / "csv_mappings" / "his-a.yaml").read_text())})


def _check_outcome(rows: list[dict]) -> str:
    assert rows, "a record must give at least one row"
    outcomes = {r["outcome"] for r in rows}
    assert outcomes in ({"normalized"}, {"quarantined"}), outcomes
    if outcomes == {"quarantined"}:
        assert len(rows) == 1
        assert rows[0]["error_code"] in CODES and rows[0]["reason"]
    return outcomes.pop()


@FUZZ
@given(feed=st.sampled_from(["hl7v2", "csv", "fhir", "jdbc", "telex"]), payload=junk_text)
def test_normalize_record_never_raises_and_quarantines_with_a_reason(mapping, feed, payload):
    TRIED["normalize_record"] = TRIED.get("normalize_record", 0) + 1
    _check_outcome(list(normalize_record(_row(feed, payload), mapping)))


@FUZZ
@given(data=st.one_of(st.binary(max_size=2000), junk_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.sampled_from([b"\x0b" + ADT.encode() + b"\x1c\r", b"\xef\xbb\xbf" + ADT.encode(),
                                       ADT.encode("utf-16"), b"FHS|^~\\&\rBHS|^~\\&\r" + ADT.encode(), b"\x0b\x1c" * 100])))
def test_split_messages_never_raises(data):
    TRIED["split_messages"] = TRIED.get("split_messages", 0) + 1
    messages = split_messages(data)
    assert all(isinstance(m, str) for m in messages)


@FUZZ
@given(feed=st.sampled_from(["hl7v2", "fhir", "csv"]), data=st.one_of(
    st.binary(max_size=3000), junk_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(junk_text, max_size=20).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"PATIENT_ID,LAST_NAME\n1,Doe\n", b"\xff\xfe" + "PATIENT_ID".encode("utf-16-le"), b"\"unterminated\n1,2"])))
def test_split_file_never_raises_and_positions_are_unique(tmp_path_factory, feed, data):
    TRIED["split_file"] = TRIED.get("split_file", 0) + 1
    folder = tmp_path_factory.mktemp("f")
    mapping = yaml.safe_load((ROOT / "conf" / "csv_mappings" / "his-a.yaml").read_text())
    if feed == "csv":
        (folder / "patients.csv").write_bytes(data)
        single = {**mapping, "entities": {"patients": mapping["entities"]["patients"]}}
        row = {"path": str(folder), "options": json.dumps(single), "entity": "patients"}
    else:
        (folder / "f.dat").write_bytes(data)
        row = {"path": str(folder / "f.dat"), "options": None, "entity": None}
    row.update(hospital="hosp-a", feed=feed, source="hosp-a/f.dat", received_at="2024-01-01T00:00:00Z")
    records = list(split_file(row, max_record_bytes=1000))
    positions = [r["position"] for r in records]
    assert len(positions) == len(set(positions))
    for record in records:
        if record["payload"] is not None:
            assert len(record["payload"].encode("utf-8", "surrogatepass")) <= 1000 or not record["format"].startswith(feed)


def test_nhapi_bad_inputs_never_crash_and_are_accounted_for(mapping):
    folder = ROOT.parent / "shared" / "extdata" / "hl7v2" / "nhapi" / "BadInputs"
    if not folder.exists():
        pytest.skip(f"external test data not found at {folder} (expected ../shared/extdata beside the project)")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    outcomes = {"normalized": 0, "quarantined": 0}
    for path in files:
        for message in split_messages(path.read_bytes()):
            outcomes[_check_outcome(list(normalize_record(_row("hl7v2", message), mapping)))] += 1
    TRIED["nhapi_files"] = len(files)
    assert len(files) >= 30 and outcomes["quarantined"] > 0


JUNK_FILES = {
    "hl7v2/junk-binary.hl7": bytes(range(256)) * 8,
    "hl7v2/truncated.hl7": ADT.encode()[:57],
    "hl7v2/latin1.hl7": ADT.replace("Doe", "Dö").encode("latin-1"),
    "hl7v2/utf16.hl7": ADT.encode("utf-16"),
    "hl7v2/empty.hl7": b"",
    "hl7v2/duplicate.hl7": (ADT + "\r" + ADT).encode(),
    "hl7v2/huge-field.hl7": ADT.replace("Doe^Jane", "X" * 300_000).encode(),
    "fhir/junk.ndjson": b"{not json\n\x00\x01\x02\n" + _deep(20_000).encode() + b"\n[1,2,3]\n\"Patient\"\n"
                        + json.dumps({"resourceType": "Patient", "id": 7}).encode() + b"\n",
    "fhir/truncated.ndjson": FHIR_PATIENT.encode()[:40] + b"\n",
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_landing_zone_of_junk_files_is_conserved(spark, tmp_path):
    """Junk files beside a hospital's good deliveries: every record read lands in bronze and is
    either normalized or quarantined with a reason; the run does not fail."""
    from reliability_helpers import KEY, prepare_region

    from carelake.config import load_config
    from carelake.pipeline import run_pipeline

    workdir = tmp_path / "home"
    conf = prepare_region(workdir, hospitals=2, patients=15, seed=21)
    hospital = next((workdir / "landing").iterdir()).name
    lake_yaml = conf / "lake.yaml"
    lake_yaml.write_text(lake_yaml.read_text().replace("max_record_bytes: 4194304", "max_record_bytes: 100000"))
    for name, data in JUNK_FILES.items():
        target = workdir / "landing" / hospital / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    os.environ["CARELAKE_DEID_KEY"] = KEY
    summary = run_pipeline(load_config(conf), workdir, ["ingest", "normalize"])
    assert summary.error is None, summary.error
    conservation = summary.results["normalize"]["conservation"]
    assert conservation and all(feed["balanced"] for feed in conservation.values()), conservation
    from pyspark.sql import functions as F

    from carelake.lake import Lake

    lake = Lake.from_config(load_config(conf), workdir)
    quarantine = lake.read(spark, "phi.quarantine")
    junk = quarantine.filter(F.col("source").contains("junk") | F.col("source").contains("truncated")
                             | F.col("source").contains("huge") | F.col("source").contains("utf16"))
    assert junk.filter("reason IS NULL OR reason = '' OR error_code IS NULL").count() == 0
    codes = {r["error_code"] for r in junk.select("error_code").distinct().collect()}
    assert "TOO_LARGE" in {r["error_code"] for r in quarantine.select("error_code").distinct().collect()}
    assert codes, "the junk files must leave quarantined records"
    TRIED["junk_files"] = len(JUNK_FILES)
    TRIED["junk_pipeline_records"] = sum(feed["bronze"] for feed in conservation.values())
