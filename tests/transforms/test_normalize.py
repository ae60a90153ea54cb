"""normalize, transform level: one bronze record -> its resources or one quarantine row, in Python and
inside the engine (through the UDF worker pool and in place)."""

from __future__ import annotations

import json

import pytest

from transforms.arrow import map_rows
from transforms.normalize import NORMALIZED_COLUMNS, Mapping, normalize_record, normalize_records

BASE = {"hospital": "hosp-x", "feed": "fhir", "format": "ndjson", "source": "hosp-x/fhir/a.ndjson", "received_at": "2024-01-01T00:00:00Z"}
PATIENT = {"resourceType": "Patient", "id": "00042", "birthDate": "1950-01-30", "gender": "female"}
OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "Glucose"},
    "subject": {"reference": "Patient/00042"}, "effectiveDateTime": "2023-05-01T10:00:00+02:00",
    "valueQuantity": {"value": 132, "unit": "mg/dL"},
}

BRONZE_SCHEMA = ", ".join(f"{name} {'long' if name == 'position' else 'string'}" for name in
                          ("record_id", "hospital", "feed", "format", "source", "position", "received_at", "payload"))


def _row(n: int, resource) -> dict:
    payload = resource if isinstance(resource, str) else json.dumps(resource)
    return {**BASE, "record_id": f"r{n}", "position": n, "payload": payload}


def _rows() -> list[dict]:
    bad_date = {**OBSERVATION, "id": "o2", "effectiveDateTime": "2023-05-01T10:00:00"}  # a time needs a zone
    unknown = {**OBSERVATION, "id": "o3", "flavour": "sweet"}
    return [_row(0, PATIENT), _row(1, OBSERVATION), _row(2, bad_date), _row(3, unknown), _row(4, "{not json")]


def test_normalized_and_quarantined_records():
    out = {row["record_id"]: list(normalize_record(row, Mapping())) for row in _rows()}
    assert [r["outcome"] for r in out["r0"]] == ["normalized"]
    patient = out["r0"][0]
    assert patient["resource_type"] == "Patient" and patient["patient_id"] == patient["id"]
    assert json.loads(patient["resource"])["birthDate"] == "1950-01-30"
    assert out["r1"][0]["patient_id"] == patient["id"]
    for record in ("r2", "r3", "r4"):
        assert len(out[record]) == 1 and out[record][0]["outcome"] == "quarantined", record
    assert out["r3"][0]["error_code"] == "FHIR_INVALID" and "flavour" in out["r3"][0]["reason"]
    # the reason names the element, never the value
    assert "2023-05-01" not in out["r2"][0]["reason"]


def test_a_known_shape_with_a_bad_value_is_still_quarantined():
    """The second record has the first one's shape: the cached plan must still catch the bad code."""
    good = {**OBSERVATION, "id": "o10"}
    bad = {**OBSERVATION, "id": "o11", "status": "final  x"}  # a code may not hold two spaces in a row
    first, second = (list(normalize_record(_row(n, r), Mapping())) for n, r in ((10, good), (11, bad)))
    assert first[0]["outcome"] == "normalized"
    assert second[0]["outcome"] == "quarantined" and second[0]["error_code"] == "FHIR_INVALID"


def _in_engine(spark, processes: str, monkeypatch) -> list[tuple]:
    monkeypatch.setenv("CARELAKE_UDF_PROCESSES", processes)
    bronze = spark.createDataFrame(_rows() * 3, BRONZE_SCHEMA)
    rows = normalize_records(bronze, Mapping()).collect()
    return sorted(tuple(r[c] for c, _ in NORMALIZED_COLUMNS) for r in rows)


def test_in_engine_equals_per_record_with_and_without_worker_processes(spark, monkeypatch):
    expected = sorted(tuple(r.get(c) for c, _ in NORMALIZED_COLUMNS) for row in _rows() * 3 for r in normalize_record(row, Mapping()))
    assert _in_engine(spark, "0", monkeypatch) == expected
    assert _in_engine(spark, "2", monkeypatch) == expected


def test_map_rows_errors_surface_from_worker_processes(spark, monkeypatch):
    monkeypatch.setenv("CARELAKE_UDF_PROCESSES", "2")

    def explode(row):
        raise RuntimeError("mapper bug")

    with pytest.raises(Exception, match="mapper bug"):
        map_rows(spark.createDataFrame([("a",)], "x string"), explode, [("x", "string")]).collect()


def test_updated_and_unmapped_come_from_the_mapping():
    local = {**OBSERVATION, "id": "o20", "code": {"coding": [{"system": "urn:carelake:hosp-x:lab", "code": "GLU"}]}}
    standard = {**OBSERVATION, "id": "o21", "meta": {"lastUpdated": "2024-03-01T10:00:00Z"},
                "code": {"coding": [{"system": "urn:carelake:hosp-x:lab", "code": "GLU"}, {"system": "http://loinc.org", "code": "2345-7"}]}}
    (first,), (second,) = (list(normalize_record(_row(n, r), Mapping())) for n, r in ((20, local), (21, standard)))
    assert json.loads(first["unmapped"]) == [["urn:carelake:hosp-x:lab", "GLU"]] and first["updated"] is None
    assert second["unmapped"] is None and second["updated"] == "2024-03-01T10:00:00Z"


def test_the_mapping_fingerprint_follows_the_configuration():
    from transforms.normalize import mapping_fingerprint

    assert mapping_fingerprint(Mapping()) == mapping_fingerprint(Mapping())
    assert mapping_fingerprint(Mapping()) != mapping_fingerprint(Mapping(csv_mappings={"hosp-x": {"delimiter": ";"}}))


def test_an_appointment_names_its_patient_among_the_participants():
    siu = "\r".join([
        "MSH|^~\\&|SCHED|HOSPX|LAKE|REGION|20240102103000+0800||SIU^S12^SIU_S12|CTRL0100|P|2.5.1",
        "SCH|P100|F200||||CHECKUP^Routine checkup^HL70276|||30|min||||||||||||||Booked",
        "TQ1|||||||20240110093000+0800|20240110100000+0800",
        "PID|1||MRN123^^^HOSPX^MR||Wang^Li||19800215|F",
    ])
    row = {**_row(30, siu), "feed": "hl7v2", "format": "hl7v2", "source": "hosp-x/hl7v2/a.hl7"}
    out = {r["resource_type"]: r for r in normalize_record(row, Mapping())}
    assert set(out) >= {"Patient", "Appointment"}, out
    assert out["Appointment"]["patient_id"] == out["Patient"]["id"]


def test_record_outcomes_give_each_record_once_with_its_resource_count(spark):
    from transforms.normalize import OUTCOME_COLUMNS, record_outcomes

    admit = "\r".join(["MSH|^~\\&|ADT|HOSPX|LAKE|REGION|20240102103000+0800||ADT^A01^ADT_A01|CTRL0200|P|2.5.1",
                       "EVN|A01|20240102103000+0800", "PID|1||MRN123^^^HOSPX^MR||Wang^Li||19800215|F",
                       "PV1|1|I|WARD^1^1||||||||||||||||V100|||||||||||||||||||||||||20240102103000+0800"])
    rows = [*_rows(), {**_row(5, admit), "feed": "hl7v2", "format": "hl7v2", "source": "hosp-x/hl7v2/a.hl7"}]
    mapped = [r for row in rows for r in normalize_record(row, Mapping())]
    expected = {}
    for r in mapped:  # what an aggregation over every row of a record would say
        outcome = expected.setdefault(r["record_id"], {"outcome": r["outcome"], "error_code": r.get("error_code"), "resources": 0})
        outcome["resources"] += r.get("id") is not None
    assert expected["r5"]["resources"] >= 2 and expected["r2"]["resources"] == 0  # Patient + Encounter; quarantined
    staged = spark.createDataFrame([tuple(r.get(c) for c, _ in NORMALIZED_COLUMNS) for r in mapped],
                                   ", ".join(f"{c} {t}" for c, t in NORMALIZED_COLUMNS))
    got = record_outcomes(staged).collect()
    assert [c for c in got[0].asDict()] == OUTCOME_COLUMNS
    assert len(got) == len(rows)
    assert {r.record_id: {"outcome": r.outcome, "error_code": r.error_code, "resources": r.resources} for r in got} == expected


def test_a_lone_surrogate_escape_is_quarantined_and_its_batch_still_maps(spark, monkeypatch):
    """A FHIR JSON string may escape half a surrogate pair ("\\ud800"), which json decodes to a str that
    UTF-8 cannot hold. Once its shape was compiled, such a resource passed the fast validator and its
    text failed the whole batch in the engine; now it is quarantined like fhir.resources says."""
    monkeypatch.setenv("CARELAKE_UDF_PROCESSES", "0")
    template = '{"resourceType":"Patient","id":"s%d","name":[{"family":"%s"}],"gender":"female"}'
    rows = [_row(40 + n, template % (n, family)) for n, family in enumerate(["Muster", "Meier", "Schulz", "Mus\\ud800ter"])]
    out = {r["record_id"]: r for r in normalize_records(spark.createDataFrame(rows, BRONZE_SCHEMA), Mapping()).collect()}
    assert [out[f"r{40 + n}"]["outcome"] for n in range(3)] == ["normalized"] * 3
    assert out["r43"]["outcome"] == "quarantined" and out["r43"]["error_code"] == "FHIR_INVALID"
    assert "string_unicode" in out["r43"]["reason"]
