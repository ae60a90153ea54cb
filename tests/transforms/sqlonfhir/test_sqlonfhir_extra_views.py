"""The google/fhir-data-pipes ViewDefinitions (written for Synthea data) over real Synthea bundles.

They have no expected rows; what is checked is that each compiles, produces rows, and that its keys
join: a view's patient_id / encounter_id values are ids that the Patient / Encounter resources have.
"""

from __future__ import annotations

import json

import pytest

from transforms.sqlonfhir import compile_view

from .conftest import extdata_path

VIEWS = ["condition", "diagnostic_report", "encounter", "immunization", "location", "medication_request",
         "observation", "organization", "patient", "practitioner", "practitioner_role", "procedure"]
# The HIV sample holds no MedicationRequest or Procedure; those two views run on the Massachusetts sample.
NOT_IN_HIV_SAMPLE = {"MedicationRequest", "Procedure"}


def _view(name: str) -> dict:
    path = extdata_path("sql-on-fhir-extra", "google-fhir-data-pipes-viewdefinitions", f"{name}_flat_view.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _ids(resources: list[dict], resource_type: str) -> set[str]:
    return {r["id"] for r in resources if r["resourceType"] == resource_type}


@pytest.mark.extdata
@pytest.mark.parametrize("name", VIEWS)
def test_view_produces_rows(name, synthea_hiv_resources, synthea_ma_resources):
    view = compile_view(_view(name))
    resources = synthea_ma_resources if view.resource in NOT_IN_HIV_SAMPLE else synthea_hiv_resources
    if view.resource in NOT_IN_HIV_SAMPLE:
        assert not _ids(synthea_hiv_resources, view.resource)
    rows = list(view.evaluate_many(resources))
    n_resources = len(_ids(resources, view.resource))
    assert n_resources and len(rows) >= n_resources
    assert all(list(row) == view.column_names for row in rows)
    assert {row["id"] for row in rows} == _ids(resources, view.resource)
    # References inside a bundle are urn:uuid links; load_resources() rewrites them so that they join.
    for column, target in (("patient_id", "Patient"), ("encounter_id", "Encounter")):
        if column in view.column_names:
            keys = {row[column] for row in rows if row[column] is not None}
            assert keys, f"{column} is always null"
            assert keys <= _ids(resources, target)


@pytest.mark.extdata
def test_observation_values(synthea_hiv_resources):
    view = compile_view(_view("observation"))
    rows = list(view.evaluate_many(synthea_hiv_resources))
    numeric = [r for r in rows if r["val_quantity"] is not None]
    assert numeric and all(isinstance(r["val_quantity"], (int, float)) for r in numeric)
    assert all(r["code_sys"] == "http://loinc.org" for r in rows if r["code_sys"])
    assert all(r["obs_date"][:2] in ("19", "20") for r in rows)
