"""FHIR Bundles as a feed: entries as records, references resolved at ingest, incremental loads."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from carelake.config import load_config
from carelake.lake import Lake
from carelake.pipeline import run_pipeline
from tests.carelake.test_linkage_synthea_paired import make_conf
from tests.conftest import TEST_KEY, extdata
from transforms.fhir_bundle import fhir_file_records, resolve_bundle


def test_resolves_urn_uuid_and_conditional_references_and_skips_unmapped_types(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:e1", "resource": {"resourceType": "Encounter", "id": "e1", "status": "finished",
                                                 "subject": {"reference": "urn:uuid:p1"},
                                                 "serviceProvider": {"reference": "Organization?identifier=org|42"},
                                                 "participant": [{"individual": {"reference": "Practitioner?identifier=npi|7"}}]}},
        {"fullUrl": "urn:uuid:c1", "resource": {"resourceType": "Claim", "id": "c1"}},
        {"request": {"method": "DELETE", "url": "Observation/9"}},
    ]}
    (tmp_path / "patient.json").write_text(json.dumps(bundle, indent=2))
    (tmp_path / "hospitalInformation1.json").write_text(json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Organization", "id": "o42", "identifier": [{"system": "org", "value": "42"}]}}]}))
    records = list(fhir_file_records(tmp_path / "patient.json"))
    assert [r[1] for r in records] == ["fhir-bundle:transaction", "fhir-bundle:transaction", "skipped:fhir-type:Claim", "skipped:fhir-delete"]
    patient, encounter = json.loads(records[0][2]), json.loads(records[1][2])
    assert patient["id"] == "p1"  # the id its urn:uuid carries
    assert encounter["subject"]["reference"] == "Patient/p1"
    assert encounter["serviceProvider"]["reference"] == "Organization/o42"  # from the file alongside
    assert encounter["participant"][0]["individual"]["reference"] == "Practitioner?identifier=npi|7"  # unresolved: kept
    assert bundle["entry"][1]["resource"]["subject"]["reference"] == "urn:uuid:p1"  # input untouched


def test_collection_bundle_resolves_within_itself():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "a"}},
        {"resource": {"resourceType": "Observation", "id": "o", "subject": {"reference": "http://x/fhir/Patient/a"}}}]}
    [(_, patient, _), (_, observation, _)] = resolve_bundle(bundle)
    assert observation["subject"]["reference"] == "Patient/a"


def test_ndjson_lines_stay_records_as_delivered(tmp_path):
    path = tmp_path / "Observation.ndjson"
    path.write_text('{"resourceType":"Observation","id":"1"}\n\n{"resourceType":"Obs\n')
    assert list(fhir_file_records(path)) == [(0, "ndjson", '{"resourceType":"Observation","id":"1"}'),
                                             (2, "ndjson", '{"resourceType":"Obs')]


def test_hiv_small_bundles_then_incremental_updates_rather_than_duplicates(tmp_path, spark, monkeypatch):
    root = extdata("synthea", "google-fhir-data-pipes-synthea-hiv-small")
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    # the delivery folder is a copy only so that the test can re-deliver a changed resource later
    landing = tmp_path / "delivery"
    shutil.copytree(root, landing)
    base = make_conf(tmp_path / "base", {"hosp-h": [{"kind": "fhir", "path": str(landing / "*.json")}]})
    full = make_conf(tmp_path / "full", {"hosp-h": [{"kind": "fhir", "path": str(landing / "**" / "*.json")}]})
    workdir = tmp_path / "home"
    first = run_pipeline(load_config(base), workdir, ["ingest", "normalize"])
    assert first.error is None, first.error
    lake = Lake.from_config(load_config(base), workdir)
    counts1 = {t: lake.read(spark, f"silver.{t}").count() for t in ("patient", "encounter", "observation", "immunization")}
    assert counts1["patient"] == 14

    second = run_pipeline(load_config(full), workdir, ["ingest", "normalize"])
    assert second.error is None, second.error
    counts2 = {t: lake.read(spark, f"silver.{t}").count() for t in counts1}
    assert counts2["patient"] == 17
    new_entries = {"encounter": 0, "observation": 0, "immunization": 0}
    for path in (landing / "incremental").glob("*.json"):
        for entry in json.loads(path.read_text())["entry"]:
            table = entry["resource"]["resourceType"].lower()
            if table in new_entries:
                new_entries[table] += 1
    for table, added in new_entries.items():
        assert counts2[table] == counts1[table] + added, table
    feed = second.results["ingest"]["feeds"]["hosp-h/fhir"]
    assert feed["new"] == sum(1 for p in (landing / "incremental").glob("*.json")
                              for e in json.loads(p.read_text())["entry"] if e["resource"]["resourceType"] in
                              {"Patient", "Encounter", "Observation", "Condition", "Procedure", "MedicationRequest",
                               "Immunization", "AllergyIntolerance", "DiagnosticReport"})

    # a corrected Patient re-delivered in a later file replaces the earlier version in silver
    path = next((landing / "incremental").glob("Alva958*.json"))
    bundle = json.loads(path.read_text())
    patient = bundle["entry"][0]["resource"]
    patient["gender"] = "other" if patient.get("gender") != "other" else "unknown"
    patient["meta"] = {**patient.get("meta", {}), "lastUpdated": "2030-01-01T00:00:00Z"}
    (landing / "incremental" / "zz-correction.json").write_text(json.dumps({"resourceType": "Bundle", "type": "batch",
                                                                          "entry": [{"resource": patient}]}))
    third = run_pipeline(load_config(full), workdir, ["ingest", "normalize"])
    assert third.error is None, third.error
    assert third.results["ingest"]["feeds"]["hosp-h/fhir"]["new"] == 1
    rows = [json.loads(r["resource"]) for r in lake.read(spark, "silver.patient").collect()]
    assert len(rows) == 17
    assert [r["gender"] for r in rows if r["name"][0]["family"] == patient["name"][0]["family"]] == [patient["gender"]]
