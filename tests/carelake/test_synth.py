"""The synthetic region: determinism, realism of the population, feed formats, and the ground truth."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from carelake.synth import (
    REFERENCE_DATE, csv_mapping_for, feed_for_year, generate, hl7_escape, hospital_ids, terminology_rows,
    uses_local_lab_codes,
)
from transforms.systems import LOINC, local_code_system

PREFIXES = ["101", "102", "036"]


def _generate(root: Path, **kwargs):
    kwargs = {"patients": 200, "postal_prefixes": PREFIXES} | kwargs
    return generate(root / "landing", truth_dir=root / "truth", **kwargs)


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("region"))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _hl7_messages(path: Path) -> list[list[str]]:
    messages: list[list[str]] = []
    # read_bytes: text mode would turn the CR separators into newlines
    for segment in path.read_bytes().decode("utf-8").split("\r"):
        if segment.startswith("MSH|"):
            messages.append([segment])
        elif segment:
            messages[-1].append(segment)
    return messages


def _fields(segment: str) -> list[str]:
    """Fields by HL7 number: _fields(seg)[n] is SEG-n (MSH counts its field separator as MSH-1)."""
    parts = segment.split("|")
    return [parts[0], "|", *parts[1:]] if parts[0] == "MSH" else parts


def _segment(message: list[str], name: str) -> list[str] | None:
    return next((_fields(s) for s in message if s.startswith(name + "|")), None)


# ---------------------------------------------------------------------------------------------------


def test_same_seed_writes_the_same_bytes(tmp_path):
    first = _generate(tmp_path / "1", patients=40, seed=11)
    second = _generate(tmp_path / "2", patients=40, seed=11)
    assert _snapshot(first.landing) == _snapshot(second.landing)
    assert _snapshot(first.truth_dir) == _snapshot(second.truth_dir)


def test_another_seed_gives_another_region(tmp_path):
    first = _generate(tmp_path / "1", patients=40, seed=11)
    other = _generate(tmp_path / "2", patients=40, seed=12)
    assert _snapshot(first.truth_dir)["persons.csv"] != _snapshot(other.truth_dir)["persons.csv"]


def test_hospitals_each_deliver_three_feeds(region):
    assert region.hospitals == ("hosp-a", "hosp-b", "hosp-c")
    for hospital in region.hospitals:
        assert (region.landing / hospital / "csv" / "patients.csv").exists()
        assert (region.landing / hospital / "fhir" / "Patient.ndjson").exists()
        assert list((region.landing / hospital / "hl7v2").glob("*.hl7"))
        assert all(region.records[hospital][feed] > 0 for feed in ("hl7v2", "csv", "fhir"))
        assert all(region.encounters[hospital][feed] > 0 for feed in ("hl7v2", "csv", "fhir"))


def test_about_a_third_of_persons_are_patients_of_several_hospitals(region):
    persons = _csv_rows(region.persons_csv)
    assert len(persons) == region.persons == 200
    hospitals_per_person = [sum(1 for h in region.hospitals if p[f"mrn_{h}"]) for p in persons]
    assert min(hospitals_per_person) == 1
    share = sum(1 for n in hospitals_per_person if n >= 2) / len(persons)
    assert 0.2 <= share <= 0.4
    assert sum(region.patients.values()) == sum(hospitals_per_person)


def test_population_looks_like_a_real_region(region):
    persons = _csv_rows(region.persons_csv)
    assert len({p["national_id"] for p in persons}) == len(persons)
    assert all(len(p["national_id"]) == 10 and p["national_id"].isdigit() for p in persons)
    names = [p["family"] + p["given"] for p in persons]
    assert any(not n.isascii() for n in names)
    assert any("\u4e00" <= ch <= "\u9fff" for n in names for ch in n)  # Chinese characters
    births = [date.fromisoformat(p["birth_date"]) for p in persons]
    ages = [(REFERENCE_DATE - b).days // 365.25 for b in births]
    assert max(births) <= REFERENCE_DATE and min(ages) >= 0 and max(ages) <= 99
    assert sum(1 for a in ages if a >= 90) >= 2
    assert {"male", "female"} <= {p["sex"] for p in persons} <= {"male", "female", "other", "unknown"}
    assert {p["postal_code"][:3] for p in persons} == set(PREFIXES)
    assert all(len(p["postal_code"]) == 5 for p in persons)


def test_every_mrn_in_the_truth_is_delivered_by_its_hospital(region):
    persons = _csv_rows(region.persons_csv)
    for hospital in region.hospitals:
        delivered = {r[next(iter(r))] for r in _csv_rows(region.landing / hospital / "csv" / "patients.csv")}
        with open(region.landing / hospital / "fhir" / "Patient.ndjson", encoding="utf-8") as handle:
            delivered |= {json.loads(line)["id"] for line in handle}
        for path in (region.landing / hospital / "hl7v2").glob("*.hl7"):
            for message in _hl7_messages(path):
                pid = _segment(message, "PID")
                if pid and len(pid) > 3:
                    delivered.add(pid[3].split("~")[0].split("^")[0])
        expected = {p[f"mrn_{hospital}"] for p in persons if p[f"mrn_{hospital}"]}
        assert expected <= delivered
        assert len(delivered - expected) <= 1  # at most the truncated MRN of the cut HL7 message


def test_each_encounter_is_delivered_by_exactly_one_feed(region):
    for hospital in region.hospitals:
        base = region.landing / hospital
        column = {"his-a": "ENCOUNTER_ID", "his-b": "visit_no", "his-c": "EncounterNumber"}[csv_mapping_for(hospital)]
        from_csv = {r[column] for r in _csv_rows(base / "csv" / "encounters.csv")}
        with open(base / "fhir" / "Encounter.ndjson", encoding="utf-8") as handle:
            from_fhir = {json.loads(line)["id"] for line in handle}
        from_hl7 = set()
        for path in base.joinpath("hl7v2").glob("*.hl7"):
            for message in _hl7_messages(path):
                if _fields(message[0])[9].startswith("ADT^A01"):
                    pv1 = _segment(message, "PV1")
                    if pv1:
                        from_hl7.add(pv1[19].split("^")[0])
        assert not (from_csv & from_fhir or from_csv & from_hl7 or from_fhir & from_hl7)
        bad_csv = sum(1 for b in region.bad_records if b.hospital == hospital and b.file.endswith("encounters.csv"))
        assert len(from_csv) == region.encounters[hospital]["csv"] + bad_csv
        assert len(from_fhir) == region.encounters[hospital]["fhir"]
        assert len(from_hl7) == region.encounters[hospital]["hl7v2"]


def test_feed_follows_the_year_the_encounter_started():
    assert [feed_for_year(y) for y in (2019, 2021, 2022, 2023, 2024, 2026)] == ["csv", "csv", "fhir", "fhir", "hl7v2", "hl7v2"]


def test_hl7_files_are_cr_separated_v2_5_1_messages(region):
    types = Counter()
    for hospital in region.hospitals:
        for path in (region.landing / hospital / "hl7v2").glob("*.hl7"):
            data = path.read_bytes()
            assert b"\n" not in data and data.endswith(b"\r")
            for message in _hl7_messages(path):
                msh = _fields(message[0])
                assert msh[2] == "^~\\&" and msh[4] == hospital and msh[11] == "P" and msh[12] == "2.5.1"
                assert msh[18] == "UNICODE UTF-8" and len(msh[7]) == 19  # YYYYMMDDHHMMSS+ZZZZ
                types[msh[9]] += 1
    assert set(types) == {"ADT^A01^ADT_A01", "ADT^A08^ADT_A01", "ADT^A03^ADT_A03", "ORU^R01^ORU_R01"}


def test_hl7_observations_carry_codes_units_and_flags(region):
    seen_local = seen_loinc = False
    for hospital in region.hospitals:
        for path in (region.landing / hospital / "hl7v2").glob("*.hl7"):
            for message in _hl7_messages(path):
                for segment in message:
                    if segment.startswith("OBX|"):
                        obx = _fields(segment)
                        assert obx[2] == "NM" and obx[11] == "F" and obx[6].endswith("^^UCUM")
                        assert obx[3].split("^")[2] == ("L" if uses_local_lab_codes(hospital) else "LN")
                        assert obx[8] in ("H", "L", "N", "")
                        seen_local |= obx[3].endswith("^L")
                        seen_loinc |= obx[3].endswith("^LN")
    assert seen_local and seen_loinc


def test_hl7_text_is_escaped():
    assert hl7_escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def test_bad_records_are_delivered_and_listed_in_the_truth(region):
    listed = _csv_rows(region.bad_records_csv)
    assert [(r["hospital"], r["file"], int(r["position"]), r["expected_code"]) for r in listed] == \
        [(b.hospital, b.file, b.position, b.expected_code) for b in region.bad_records]
    for hospital in region.hospitals:
        kinds = {(b.feed, b.expected_code) for b in region.bad_records if b.hospital == hospital}
        assert kinds == {("hl7v2", "PARSE"), ("hl7v2", "UNKNOWN_CODE"), ("csv", "INVALID_DATE"),
                         ("csv", "UNKNOWN_CODE"), ("fhir", "INVALID_DATE"), ("fhir", "PARSE")}


def test_bad_hl7_messages_are_where_the_truth_says(region):
    for bad in (b for b in region.bad_records if b.feed == "hl7v2"):
        message = _hl7_messages(region.landing / bad.file)[bad.position]
        if bad.expected_code == "PARSE":
            assert [s[:3] for s in message] == ["MSH", "EVN", "PID"] and _segment(message, "PV1") is None
        else:
            assert _segment(message, "PV1")[2] == "Z"


def test_terminology_rows_map_local_lab_codes_except_two(region):
    rows = terminology_rows(region.hospitals)
    assert rows and {r["source_system"] for r in rows} == {local_code_system("hosp-b", "lab")}
    assert {r["target_system"] for r in rows} == {LOINC}
    assert set(rows[0]) == {"source_system", "source_code", "target_system", "target_code", "target_display"}
    used = {r["test_code"] for r in _csv_rows(region.landing / "hosp-b" / "csv" / "observations.csv")}
    unmapped = used - {r["source_code"] for r in rows}
    assert unmapped and unmapped <= {"CRP-Q", "VITD25"}


def test_csv_layouts_differ_between_hospitals(region):
    assert [csv_mapping_for(h) for h in hospital_ids(4)] == ["his-a", "his-b", "his-c", "his-a"]
    headers = {h: (region.landing / h / "csv" / "patients.csv").read_text(encoding="utf-8").splitlines()[0]
               for h in region.hospitals}
    assert len(set(headers.values())) == 3


def test_refuses_to_overwrite_feeds_unless_asked(tmp_path):
    _generate(tmp_path, patients=10)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _generate(tmp_path, patients=10)
    again = _generate(tmp_path, patients=10, seed=8, overwrite=True)
    assert again.persons == 10


@pytest.mark.parametrize("prefixes", [[], ["1010"], ["ab1"]])
def test_rejects_bad_postal_prefixes(tmp_path, prefixes):
    with pytest.raises(ValueError, match="postal_prefixes"):
        _generate(tmp_path, postal_prefixes=prefixes)


# ---------------------------------------------------------------------------------------------------
# Contract with the HL7 v2 mapper: same ids as the CSV and FHIR feeds, bad messages fail as recorded.


def _hl7_outcomes(region):
    hl7v2 = pytest.importorskip("transforms.hl7v2")
    from transforms.errors import RecordError
    from transforms.terminology import Terminology

    for hospital in region.hospitals:
        for path in sorted((region.landing / hospital / "hl7v2").glob("*.hl7")):
            for position, text in enumerate(hl7v2.split_messages(path.read_bytes())):
                key = (path.relative_to(region.landing).as_posix(), position)
                try:
                    yield hospital, key, hl7v2.message_to_resources(text, hospital=hospital, terminology=Terminology()), None
                except RecordError as error:
                    yield hospital, key, None, error.code


def test_hl7_mapper_gives_the_ids_the_other_feeds_give(region):
    from transforms.fhir_validate import validate
    from transforms.ids import resource_id

    persons = _csv_rows(region.persons_csv)
    bad = {(b.file, b.position) for b in region.bad_records if b.feed == "hl7v2"}
    for hospital, key, resources, _ in _hl7_outcomes(region):
        if key in bad or resources is None:
            continue
        mrns = {resource_id(hospital, "Patient", p[f"mrn_{hospital}"]) for p in persons if p[f"mrn_{hospital}"]}
        for resource in resources:
            validate(resource)
            if resource["resourceType"] == "Patient":
                assert resource["id"] in mrns
            if resource["resourceType"] == "Encounter":
                assert resource["id"] == resource_id(hospital, "Encounter", resource["identifier"][0]["value"])


@pytest.mark.parametrize("code", ["UNKNOWN_CODE", "PARSE"])
def test_hl7_mapper_rejects_the_bad_messages(region, code):
    expected = {(b.file, b.position) for b in region.bad_records if b.feed == "hl7v2" and b.expected_code == code}
    found = {key for _, key, _, error in _hl7_outcomes(region) if error == code}
    assert expected and expected <= found
