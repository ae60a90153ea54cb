"""`carelake convert hl7v2`: Bundles on disk, naming, quarantine lines, exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle

from carelake.convert import convert
from transforms.fhir_validate import validate

ROOT = Path(__file__).resolve().parents[2]
MICROSOFT = (ROOT.parent / "shared" / "extdata" / "hl7v2" / "microsoft-fhir-converter").resolve()

MSH = "MSH|^~\\&|HIS|HOSPA|LAKE|REGION|20240102103000+0800||ADT^A01^ADT_A01|{ctl}|P|2.5.1"
PID = "PID|1||MRN{n}^^^HOSPA^MR||Wang^Li||19800215|F"
PV1 = "PV1|1|I|||||||||||||||||V{n}|||||||||||||||||||||||||20240102100000+0800"
ORU = "\r".join([
    "MSH|^~\\&|LIS|HOSPA|LAKE|REGION|20240103080000+0800||ORU^R01^ORU_R01|R1|P|2.5.1",
    "PID|1||MRN9^^^HOSPA^MR||Li^Na||19700101|F",
    "OBR|1|PL1|FL1|24323-8^Panel^LN|||20240103073000+0800",
    "OBX|1|NM|2345-7^Glucose^LN||7.8|mmol/L^^UCUM|3.9-6.1|H|||F",
])


def adt(n: int) -> str:
    return "\r".join([MSH.format(ctl=f"C{n}"), PID.format(n=n), PV1.format(n=n)])


def run(*args: str):
    result = CliRunner().invoke(convert, ["hl7v2", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def check_bundle(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    Bundle.model_validate(data)
    assert data["type"] == "collection"
    urls = {e["fullUrl"] for e in data["entry"]}
    for entry in data["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        validate(entry["resource"])
    # Every reference to a resource of the Bundle resolves to an entry.
    text = json.dumps(data)
    for ref in (r.split('"')[0] for r in text.split('"reference": "')[1:]):
        if ref.startswith("urn:uuid:"):
            assert ref in urls
    return data


def quarantine_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]


def test_one_message_per_file_and_several(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "single.hl7").write_text(adt(1), encoding="utf-8")
    (src / "batch.hl7").write_text("\n".join([adt(2), adt(3), ORU]), encoding="utf-8")
    (src / "notes.md").write_text("not picked up inside a folder", encoding="utf-8")
    out = tmp_path / "out"
    result = run(str(src), "--out", str(out))
    assert "files: 2, messages: 4, converted: 4, quarantined: 0" in result.output
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == ["batch-1.json", "batch-2.json", "batch-3.json", "single.json"]
    single = check_bundle(out / "single.json")
    assert [e["resource"]["resourceType"] for e in single["entry"]] == ["Patient", "Encounter"]
    assert single["timestamp"] == "2024-01-02T10:30:00+08:00"
    oru = check_bundle(out / "batch-3.json")
    types = sorted(e["resource"]["resourceType"] for e in oru["entry"])
    assert types == ["DiagnosticReport", "Observation", "Patient", "ServiceRequest", "Specimen"]  # IG: OBR -> both
    assert quarantine_lines(out) == []


def test_quarantine_lines_and_exit_zero(tmp_path):
    bad_date = adt(4).replace("19800215", "19801345")
    no_pid3 = adt(5).replace("MRN5^^^HOSPA^MR", "")
    path = tmp_path / "mixed.txt"
    path.write_text("\r\n".join([adt(6), bad_date, no_pid3]), encoding="utf-8")
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = run(str(path), str(empty), "--out", str(out), "--hospital", "H9")
    assert "files: 2, messages: 3, converted: 1, quarantined: 3" in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["mixed-1.json"]
    lines = quarantine_lines(out)
    assert [(Path(x["file"]).name, x["message"], x["code"]) for x in lines] == [
        ("mixed.txt", 2, "INVALID_DATE"), ("mixed.txt", 3, "MISSING_FIELD"), ("empty.hl7", 0, "PARSE"),
    ]
    assert lines[0]["reason"] == "PID-7 is not a valid HL7 date/time"
    assert "19801345" not in (out / "quarantine.jsonl").read_text()


def test_keep_unidentified_and_options(tmp_path):
    path = tmp_path / "anon.hl7"
    path.write_text(adt(7).replace("MRN7^^^HOSPA^MR", "").replace("+0800", ""), encoding="utf-8")
    out = tmp_path / "out"
    run(str(path), "--out", str(out), "--keep-unidentified", "--timezone", "+08:00")
    bundle = check_bundle(out / "anon.json")
    encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    assert encounter["period"]["start"] == "2024-01-02T10:00:00+08:00"
    bad = CliRunner().invoke(convert, ["hl7v2", str(path), "--out", str(out), "--timezone", "8"])
    assert bad.exit_code == 2 and "+08:00" in bad.output


def test_conf_terminology_maps_local_codes(tmp_path):
    conf = tmp_path / "conf"
    (conf / "terminology").mkdir(parents=True)
    (conf / "terminology" / "lab.csv").write_text(
        "source_system,source_code,target_system,target_code,target_display\n"
        "urn:carelake:HOSPA:lab,GLU-L,http://loinc.org,2345-7,Glucose\n", encoding="utf-8")
    path = tmp_path / "oru.hl7"
    path.write_text(ORU.replace("2345-7^Glucose^LN", "GLU-L^Glucose local^L"), encoding="utf-8")
    out = tmp_path / "out"
    run(str(path), "--out", str(out), "--conf", str(conf))
    bundle = check_bundle(out / "oru.json")
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"} in obs["code"]["coding"]


def test_same_stem_twice_is_not_overwritten(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.hl7").write_text(adt(8), encoding="utf-8")
    out = tmp_path / "out"
    run(str(tmp_path / "a" / "x.hl7"), str(tmp_path / "b" / "x.hl7"), "--out", str(out))
    assert sorted(p.name for p in out.glob("*.json")) == ["x.json", "x~2.json"]


@pytest.mark.extdata
def test_microsoft_sample_folder(tmp_path):
    if not MICROSOFT.exists():
        pytest.skip(f"external test data not found at {MICROSOFT}")
    out = tmp_path / "out"
    result = run(str(MICROSOFT), "--out", str(out))
    files = sorted(p for p in MICROSOFT.rglob("*") if p.suffix.lower() in (".hl7", ".txt"))
    written = sorted(out.rglob("*.json"))
    quarantined = quarantine_lines(out)
    assert f"files: {len(files)}," in result.output
    assert len(written) + len(quarantined) >= len(files)
    assert len(written) >= 0.95 * len(files)
    for path in written:
        check_bundle(path)
    assert {p.stem for p in written} <= {p.stem for p in files} | {f"{p.stem}-{n}" for p in files for n in range(1, 20)}


def test_a_file_that_fails_part_way_keeps_what_was_read(tmp_path, monkeypatch):
    """Files are read in blocks: a read error after the first message leaves its Bundle, quarantines the
    rest of the file with the error's kind (not its text: a path may name a person) and goes on."""
    import transforms.hl7v2

    real = transforms.hl7v2.split_file_messages

    def failing(handle, **kwargs):
        for n, text in enumerate(real(handle, **kwargs)):
            if n == 1 and handle.name.endswith("broken.hl7"):
                raise PermissionError("/mnt/wang-li/broken.hl7: permission denied")
            yield text

    monkeypatch.setattr(transforms.hl7v2, "split_file_messages", failing)
    (tmp_path / "broken.hl7").write_text("\r".join([adt(1), adt(2), adt(3)]), encoding="utf-8")
    (tmp_path / "fine.hl7").write_text(adt(4), encoding="utf-8")
    out = tmp_path / "out"
    result = run(str(tmp_path / "broken.hl7"), str(tmp_path / "fine.hl7"), "--out", str(out))
    assert "files: 2, messages: 2, converted: 2, quarantined: 1" in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["broken-1.json", "fine.json"]
    assert [(Path(x["file"]).name, x["message"], x["code"], x["reason"]) for x in quarantine_lines(out)] == [
        ("broken.hl7", 2, "PARSE", "file could not be read after message 1 (PermissionError)")]
