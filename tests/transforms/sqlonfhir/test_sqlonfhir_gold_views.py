"""The gold layer's ViewDefinitions (conf/views/*.json) on hand-made resources shaped like the mappers'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms.sqlonfhir import compile_view
from transforms.systems import ACT_CODE, ICD10, LOINC, NATIONAL_ID_SYSTEM, UCUM, local_code_system, mrn_system

VIEWS_DIR = Path(__file__).resolve().parents[3] / "conf" / "views"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _view(name: str):
    return compile_view(json.loads((VIEWS_DIR / f"{name}.json").read_text(encoding="utf-8")))


PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "identifier": [
        {"system": "urn:carelake:h1:visit", "value": "V9"},
        {"system": mrn_system("h1"), "value": "MRN-001",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}},
        {"system": NATIONAL_ID_SYSTEM, "value": "NID-42"},
    ],
    "name": [{"use": "nickname", "given": ["Kiki"]}, {"family": "Curie", "given": ["Marie", "Salomea"]}],
    "gender": "female", "birthDate": "1967-11-07",
    "telecom": [{"system": "email", "value": "m@example.org"}, {"system": "phone", "value": "555-0100", "use": "home"}],
    "address": [{"use": "old", "line": ["1 Old Rd"], "city": "Warsaw", "postalCode": "00-001"},
                {"use": "home", "line": ["36 Quai de Bethune", "Apt 2"], "city": "Paris", "postalCode": "75004"}],
    "deceasedDateTime": "2034-07-04",
}
ENCOUNTER = {
    "resourceType": "Encounter", "id": "e1", "status": "finished",
    "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2024-03-01T08:00:00+01:00", "end": "2024-03-05T12:30:00+01:00"},
}
OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": local_code_system("h1", "lab"), "code": "GLU"},
                        {"system": LOINC, "code": "2345-7", "display": "Glucose"}]},
    "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
    "effectiveDateTime": "2024-03-02T06:15:00+01:00",
    "valueQuantity": {"value": 7.8, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
    "interpretation": [{"coding": [{"system": INTERPRETATION, "code": "H", "display": "High"}]}],
}
CONDITION = {
    "resourceType": "Condition", "id": "c1",
    "code": {"coding": [{"system": local_code_system("h1", "dx"), "code": "DM2"},
                        {"system": ICD10, "code": "E11.9"}], "text": "Type 2 diabetes"},
    "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
    "onsetDateTime": "2019-05-20",
}


@pytest.mark.parametrize("name", ["patient", "encounter", "observation", "condition"])
def test_every_column_is_documented_and_typed(name):
    doc = json.loads((VIEWS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    view = compile_view(doc)
    assert view.name == name
    for select in doc["select"]:
        for column in select["column"]:
            assert column.get("description"), f"{name}.{column['name']} has no description"
            assert column.get("type"), f"{name}.{column['name']} has no type"
    assert all(not collection for _, _, collection in view.columns)


def test_patient():
    assert _view("patient").evaluate(PATIENT) == [{
        "id": "p1", "mrn": "MRN-001", "national_id": "NID-42", "family": "Curie", "given": "Marie",
        "birth_date": "1967-11-07", "gender": "female", "phone": "555-0100", "street": "36 Quai de Bethune",
        "city": "Paris", "postal_code": "75004", "deceased": True,
    }]


def test_patient_sparse():
    row, = _view("patient").evaluate({"resourceType": "Patient", "id": "p2", "deceasedBoolean": False,
                                      "address": [{"city": "Lyon"}]})
    assert row == {"id": "p2", "mrn": None, "national_id": None, "family": None, "given": None,
                   "birth_date": None, "gender": None, "phone": None, "street": None, "city": "Lyon",
                   "postal_code": None, "deceased": False}
    assert _view("patient").evaluate({"resourceType": "Patient", "id": "p3"})[0]["deceased"] is None


def test_encounter():
    assert _view("encounter").evaluate(ENCOUNTER) == [{
        "id": "e1", "patient_id": "p1", "class": "IMP", "status": "finished",
        "start": "2024-03-01T08:00:00+01:00", "end": "2024-03-05T12:30:00+01:00",
    }]
    assert _view("encounter").evaluate({**ENCOUNTER, "status": "entered-in-error"}) == []


def test_observation():
    assert _view("observation").evaluate(OBSERVATION) == [{
        "id": "o1", "patient_id": "p1", "encounter_id": "e1", "loinc": "2345-7", "local_code": "GLU",
        "value": 7.8, "comparator": None, "unit": "mmol/L", "interpretation": "H",
        "effective": "2024-03-02T06:15:00+01:00",
    }]


def test_observation_text_result_and_bound():
    view = _view("observation")
    text = {**OBSERVATION, "valueString": "negative"}
    del text["valueQuantity"]
    row, = view.evaluate(text)
    assert (row["value"], row["unit"]) == (None, None)
    bound = {**OBSERVATION, "valueQuantity": {"value": 5, "comparator": "<", "unit": "mg/L"},
             "effectivePeriod": {"start": "2024-03-02"}}
    del bound["effectiveDateTime"]
    row, = view.evaluate(bound)
    assert (row["value"], row["comparator"], row["effective"]) == (5, "<", "2024-03-02")
    assert view.evaluate({**OBSERVATION, "status": "entered-in-error"}) == []


def test_condition():
    assert _view("condition").evaluate(CONDITION) == [{
        "id": "c1", "patient_id": "p1", "encounter_id": "e1", "icd10": "E11.9", "onset": "2019-05-20",
    }]
    withdrawn = {**CONDITION, "verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}}
    assert _view("condition").evaluate(withdrawn) == []


def test_keys_join_across_views():
    patient, = _view("patient").evaluate(PATIENT)
    encounter, = _view("encounter").evaluate(ENCOUNTER)
    observation, = _view("observation").evaluate(OBSERVATION)
    condition, = _view("condition").evaluate(CONDITION)
    assert encounter["patient_id"] == observation["patient_id"] == condition["patient_id"] == patient["id"]
    assert observation["encounter_id"] == condition["encounter_id"] == encounter["id"]
