"""FHIR NDJSON lines to carelake resources: ids, references, codes, and quarantine errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml

from carelake.synth import csv_mapping_for, generate, terminology_rows
from transforms.csv_feed import csv_row_to_resources, read_csv_records
from transforms.errors import RecordError
from transforms.fhir_feed import add_standard_codings, fhir_json_to_resources
from transforms.fhir_validate import validate
from transforms.ids import resource_id
from transforms.systems import LOINC, local_code_system
from transforms.terminology import Concept, Terminology

HOSPITAL = "hosp-x"
LOCAL_LAB = local_code_system(HOSPITAL, "lab")
TERMINOLOGY = Terminology({(LOCAL_LAB, "GLU"): Concept(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma")})
MAPPINGS = Path(__file__).resolve().parents[2] / "conf" / "csv_mappings"

PATIENT = {"resourceType": "Patient", "id": "00042", "birthDate": "1950-01-30", "gender": "female",
           "identifier": [{"system": "urn:carelake:hosp-x:mrn", "value": "00042"}]}
OBSERVATION = {
    "resourceType": "Observation", "id": "0b7c1d2e-aaaa-4bbb-8ccc-123456789abc", "status": "final",
    "code": {"coding": [{"system": LOCAL_LAB, "code": "GLU", "display": "Glucose"}]},
    "subject": {"reference": "Patient/00042"}, "encounter": {"reference": "Encounter/V1"},
    "effectiveDateTime": "2023-05-01T10:00:00+02:00",
    "valueQuantity": {"value": 132, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
}


def _map(resource: dict | str) -> dict:
    text = resource if isinstance(resource, str) else json.dumps(resource)
    out = fhir_json_to_resources(text, hospital=HOSPITAL, terminology=TERMINOLOGY)
    assert len(out) == 1
    validate(out[0])
    return out[0]


def _error(text: str) -> RecordError:
    with pytest.raises(RecordError) as caught:
        fhir_json_to_resources(text, hospital=HOSPITAL, terminology=TERMINOLOGY)
    return caught.value


def test_ids_are_namespaced_by_hospital_and_deterministic():
    patient = _map(PATIENT)
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "00042")
    assert fhir_json_to_resources(json.dumps(PATIENT), hospital="hosp-y", terminology=TERMINOLOGY)[0]["id"] != patient["id"]
    assert _map(PATIENT) == patient


def test_references_follow_the_same_rule_as_ids():
    observation = _map(OBSERVATION)
    assert observation["subject"] == {"reference": f"Patient/{resource_id(HOSPITAL, 'Patient', '00042')}"}
    assert observation["encounter"] == {"reference": f"Encounter/{resource_id(HOSPITAL, 'Encounter', 'V1')}"}


def test_references_it_cannot_resolve_are_left_alone():
    references = ["https://other.example/fhir/Patient/9", "#contained-1",
                  "Patient?identifier=urn:carelake:hosp-x:mrn|00042"]
    for reference in references:
        assert _map(OBSERVATION | {"subject": {"reference": reference}})["subject"]["reference"] == reference


def test_versioned_reference_loses_the_version():
    observation = _map(OBSERVATION | {"subject": {"reference": "Patient/00042/_history/3"}})
    assert observation["subject"]["reference"] == f"Patient/{resource_id(HOSPITAL, 'Patient', '00042')}"


def test_input_is_not_modified():
    original = json.loads(json.dumps(OBSERVATION))
    fhir_json_to_resources(json.dumps(original), hospital=HOSPITAL, terminology=TERMINOLOGY)
    assert original == OBSERVATION


def test_local_code_keeps_local_coding_and_gains_loinc():
    codings = _map(OBSERVATION)["code"]["coding"]
    assert codings == [{"system": LOCAL_LAB, "code": "GLU", "display": "Glucose"},
                       {"system": LOINC, "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}]


def test_unmapped_local_code_stays_as_it_is():
    coding = [{"system": LOCAL_LAB, "code": "VITD25"}]
    assert _map(OBSERVATION | {"code": {"coding": coding}})["code"]["coding"] == coding


def test_standard_coding_is_not_added_twice():
    concept = {"coding": [{"system": LOCAL_LAB, "code": "GLU"}, {"system": LOINC, "code": "2345-7"}], "text": "Glucose"}
    assert add_standard_codings(concept, TERMINOLOGY) == concept


@pytest.mark.parametrize("text", ['{"resourceType": "Patient", "id": "1"', "not json", "[1, 2]", '{"id": "1"}', ""])
def test_unreadable_lines_are_parse_errors(text):
    assert _error(text).code == "PARSE"


def test_unsupported_resource_type():
    error = _error(json.dumps({"resourceType": "Bundle", "id": "b1", "type": "collection"}))
    assert error.code == "UNSUPPORTED" and "Bundle" in error.reason
    assert "not/a" not in _error(json.dumps({"resourceType": "not/a type", "id": "x"})).reason


def test_missing_id_is_missing_field():
    assert _error(json.dumps({k: v for k, v in PATIENT.items() if k != "id"})).code == "MISSING_FIELD"


@pytest.mark.parametrize("resource, element", [
    (PATIENT | {"birthDate": "2023-02-30"}, "Patient.birthDate"),
    ({**OBSERVATION, "effectiveDateTime": "2023-13-01T10:00:00+02:00"}, "Observation.effectiveDateTime"),
    ({"resourceType": "Encounter", "id": "V1", "status": "finished", "class": {"code": "AMB"},
      "period": {"start": "2023-04-31T10:00:00+02:00"}}, "Encounter.period.start"),
])
def test_impossible_dates_are_invalid_date_naming_the_element(resource, element):
    error = _error(json.dumps(resource))
    assert error.code == "INVALID_DATE" and element in error.reason
    assert "2023" not in error.reason


def test_partial_dates_are_accepted():
    assert _map(PATIENT | {"birthDate": "1950-01"})["birthDate"] == "1950-01"
    assert _map(PATIENT | {"birthDate": "1950"})["birthDate"] == "1950"


# ---------------------------------------------------------------------------------------------------
# The generator's bulk exports


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    root = tmp_path_factory.mktemp("region")
    return generate(root / "landing", patients=80, seed=5, postal_prefixes=["101", "036"], truth_dir=root / "truth")


@pytest.fixture(scope="module")
def terminology(region):
    return Terminology({(r["source_system"], r["source_code"]): Concept(r["target_system"], r["target_code"],
                                                                      r["target_display"])
                        for r in terminology_rows(region.hospitals)})


def _mapped_lines(region, terminology, hospital):
    for path in sorted((region.landing / hospital / "fhir").glob("*.ndjson")):
        with open(path, encoding="utf-8") as handle:
            for position, line in enumerate(handle):
                key = (path.relative_to(region.landing).as_posix(), position)
                try:
                    yield key, fhir_json_to_resources(line, hospital=hospital, terminology=terminology), None
                except RecordError as error:
                    yield key, None, error.code


def test_generated_ndjson_maps_to_valid_fhir_and_bad_lines_fail_as_recorded(region, terminology):
    expected_bad = {(b.file, b.position): b.expected_code for b in region.bad_records if b.feed == "fhir"}
    seen_bad, mapped = {}, 0
    for hospital in region.hospitals:
        for key, resources, code in _mapped_lines(region, terminology, hospital):
            if code:
                seen_bad[key] = code
                continue
            for resource in resources:
                validate(resource)
            mapped += 1
    assert seen_bad == expected_bad
    assert mapped > 300


def test_generated_references_resolve_within_the_export(region, terminology):
    for hospital in region.hospitals:
        ids, references = set(), set()
        for _, resources, _ in _mapped_lines(region, terminology, hospital):
            for resource in resources or ():
                ids.add(f"{resource['resourceType']}/{resource['id']}")
                references |= {resource[k]["reference"] for k in ("subject", "encounter") if k in resource}
        assert references and references <= ids


def test_same_patient_gets_the_same_id_from_csv_and_fhir(region, terminology):
    hospital = "hosp-b"  # numeric MRNs with leading zeros: the hardest case for equal ids
    mapping = yaml.safe_load((MAPPINGS / f"{csv_mapping_for(hospital)}.yaml").read_text(encoding="utf-8"))
    from_csv = {res["id"] for rec in read_csv_records(region.landing / hospital / "csv", mapping)
                if rec.entity == "patients"
                for res in _try_csv(rec, hospital, mapping, terminology)}
    from_fhir = {res["id"] for key, resources, _ in _mapped_lines(region, terminology, hospital)
                 if key[0].endswith("Patient.ndjson") for res in resources or ()}
    with open(region.persons_csv, newline="", encoding="utf-8") as handle:
        mrns = [row[f"mrn_{hospital}"] for row in csv.DictReader(handle) if row[f"mrn_{hospital}"]]
    expected = {resource_id(hospital, "Patient", mrn) for mrn in mrns}
    assert from_csv & from_fhir  # patients with old and middle-aged encounters appear in both feeds
    assert from_csv | from_fhir <= expected


def _try_csv(record, hospital, mapping, terminology):
    try:
        return csv_row_to_resources(record.entity, record.row, hospital=hospital, mapping=mapping, terminology=terminology)
    except RecordError:
        return []


# -- the one-pass mapping (references and dates checked while parsing) equals the two walks it replaced --

def _reference_mapping(text: str, hospital: str):
    """The mapping as first written: parse, check every date on one walk, rewrite references on another."""
    from transforms.fhir_feed import _CODED_ELEMENTS, _DATE_ELEMENTS, _FHIR_ID, _check_type, _parse, _rewrite_reference, _valid_date

    def check_dates(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _DATE_ELEMENTS and isinstance(value, str) and not _valid_date(value):
                    raise RecordError("INVALID_DATE", f"{path}.{key} is not a valid FHIR date/dateTime")
                check_dates(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                check_dates(item, path)

    def rewrite(node):
        if isinstance(node, dict):
            return {k: (_rewrite_reference(v, hospital) if k == "reference" and isinstance(v, str) else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    resource = _parse(text)
    resource_type = resource["resourceType"]
    _check_type(resource_type)
    original_id = resource.get("id")
    if not isinstance(original_id, str) or not _FHIR_ID.fullmatch(original_id):
        raise RecordError("MISSING_FIELD", f"{resource_type}.id is missing or not a FHIR id")
    check_dates(resource, resource_type)
    out = rewrite(resource)
    out["id"] = resource_id(hospital, resource_type, original_id)
    for element in _CODED_ELEMENTS.get(resource_type, ()):
        if isinstance(out.get(element), dict):
            out[element] = add_standard_codings(out[element], TERMINOLOGY)
    return [out]


def _outcome(fn, text):
    try:
        return fn(text)
    except RecordError as exc:
        return (exc.code, exc.reason)


_DATES = st.sampled_from(["2023", "2023-02", "2023-02-28", "2023-02-30", "2023-13", "2023-02-28T10:00:00Z",
                          "2023-02-28T25:00:00Z", "2023-02-28T10:00:00", "yesterday", "2024-02-29T23:59:59.5+01:00"])
_KEYS = st.sampled_from(["start", "end", "onsetDateTime", "issued", "reference", "text", "period", "id", "date"])
_LEAVES = st.one_of(_DATES, st.sampled_from(["Patient/abc", "Encounter/e.1/_history/2", "#c1", "http://x/Patient/1",
                                             "Patient?identifier=a|b"]), st.integers(), st.booleans(), st.none())
_TREES = st.recursive(_LEAVES, lambda children: st.one_of(st.lists(children, max_size=3),
                                                          st.dictionaries(_KEYS, children, max_size=4)), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["Observation", "Encounter", "Condition", "Bundle"]),
       st.dictionaries(_KEYS, _TREES, max_size=5), st.sampled_from(["o-1", "", 7, None]), st.booleans())
def test_one_pass_mapping_equals_the_two_walks(resource_type, body, original_id, break_json):
    resource = {"resourceType": resource_type, **body} | ({} if original_id is None else {"id": original_id})
    text = json.dumps(resource) + ("}" if break_json else "")
    expected = _outcome(lambda t: _reference_mapping(t, HOSPITAL), text)
    assert _outcome(lambda t: fhir_json_to_resources(t, hospital=HOSPITAL, terminology=TERMINOLOGY), text) == expected
