"""One bronze record -> its normalized rows: the map step's per-record work (see `transforms.normalize`
for the columns), apart from the engine transforms so that it can run compiled (`transforms._compiled`:
the engine pickles those transforms' closures for its UDF workers, and compiled functions do not pickle
by value; this module's functions are pickled by name).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from transforms import fastjson
from transforms.csv_feed import csv_row_to_resources
from transforms.errors import RecordError, marker_error
from transforms.fast_validate import validate
from transforms.fhir_feed import fhir_json_to_resources
from transforms.hl7v2 import message_to_resources
from transforms.systems import ICD10, LOINC, NATIONAL_ID_SYSTEM, SNOMED, UCUM

if TYPE_CHECKING:
    from transforms.normalize import Mapping

__all__ = ["normalize_record_tuples", "RESOURCE_TABLES", "STANDARD_SYSTEMS", "CODE_ELEMENTS"]

#: Code systems that count as standard; a coded element with none of them is "unmapped".
STANDARD_SYSTEMS = (LOINC, SNOMED, ICD10, UCUM, "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/cvx",
                    "http://www.nlm.nih.gov/research/umls/rxnorm")
#: The coded element of each resource type that terminology maps apply to.
CODE_ELEMENTS = {
    "Observation": "code", "Condition": "code", "Procedure": "code", "DiagnosticReport": "code",
    "AllergyIntolerance": "code", "Immunization": "vaccineCode", "MedicationRequest": "medicationCodeableConcept",
}

#: silver table of each resource type the pipeline keeps
RESOURCE_TABLES = {
    "Patient": "patient", "Encounter": "encounter", "Observation": "observation", "Condition": "condition",
    "DiagnosticReport": "diagnostic_report", "Procedure": "procedure", "AllergyIntolerance": "allergy_intolerance",
    "Immunization": "immunization", "MedicationRequest": "medication_request", "Coverage": "coverage",
    "RelatedPerson": "related_person", "Specimen": "specimen", "ServiceRequest": "service_request",
    "Appointment": "appointment", "DocumentReference": "document_reference",
}

#: a quarantined record's row after its reason: no resource columns, and 0 resources
_NO_RESOURCE = (None,) * 7 + (0,)


def _resources(row: dict, mapping: Mapping) -> list[dict]:
    feed, hospital, payload = row["feed"], row["hospital"], row["payload"]
    if (marker := marker_error(payload)) is not None:  # ingest kept a marker: too large, or an unsplittable file
        raise marker
    if feed == "hl7v2":
        return message_to_resources(payload, hospital=hospital, terminology=mapping.terminology,
                                    overrides=mapping.hl7v2_overrides.get(hospital))
    if feed in ("csv", "jdbc"):  # a jdbc row is mapped like a CSV row, by its own mapping
        record = fastjson.loads(payload)
        layout = mapping.csv_mappings.get(f"{hospital}/{feed}") or mapping.csv_mappings.get(hospital) or {}
        return csv_row_to_resources(record["entity"], record["row"], hospital=hospital,
                                    mapping=layout, terminology=mapping.terminology)
    if feed == "fhir":
        return fhir_json_to_resources(payload, hospital=hospital, terminology=mapping.terminology)
    raise RecordError("UNSUPPORTED", f"feed kind {feed!r} has no mapping")


def _patient_id(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for element in ("subject", "patient", "beneficiary"):
        target = resource.get(element)
        if target:  # `or {}` of an absent or empty element, without building the dict
            reference = target.get("reference") or ""
            if reference.startswith("Patient/"):
                return reference.split("/", 1)[1]
    for participant in resource.get("participant") or ():  # Appointment names its patient among the participants
        reference = ((participant or {}).get("actor") or {}).get("reference") or ""
        if reference.startswith("Patient/"):
            return reference.split("/", 1)[1]
    return None


def _national_id(resource: dict) -> str | None:
    if resource.get("resourceType") != "Patient":
        return None
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == NATIONAL_ID_SYSTEM and identifier.get("value"):
            return identifier["value"]
    return None


_STANDARD_SYSTEMS = frozenset(STANDARD_SYSTEMS)


# json.dumps builds an encoder per call when given separators; this one writes the same text.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _unmapped(resource: dict) -> str | None:
    element = CODE_ELEMENTS.get(resource.get("resourceType") or "")
    if element is None:
        return None
    codings = [c for c in (resource.get(element) or {}).get("coding") or () if isinstance(c, dict)]
    if not codings:
        return None
    for c in codings:
        if c.get("system") in _STANDARD_SYSTEMS:  # hashable: a validated coding's system is a str or absent
            return None
    return _compact_json([[c.get("system"), c.get("code")] for c in codings])


def normalize_record_tuples(row: dict, mapping: Mapping) -> list[tuple]:
    """`transforms.normalize.normalize_record` with each output row a tuple of the `NORMALIZED_COLUMNS`
    values in order: what `normalize_records` gathers (a record gives up to tens of rows, 17 columns each; a tuple
    costs less to build and to turn into columns than a dict). The resource's text is UTF-8 bytes, which
    the Arrow string column takes as they are (`normalize_record` gives it as str)."""
    head = (row["record_id"], row["hospital"], row["feed"], row["source"], row["position"], row["received_at"])
    try:
        resources = _resources(row, mapping)
        if not resources:
            raise RecordError("UNSUPPORTED", f"{row['format']} record maps to no resource")
        texts = []
        for resource in resources:
            plain = validate(resource)  # True: its floats are plain, so dumps need not look for them
            if resource.get("resourceType") not in RESOURCE_TABLES:
                raise RecordError("UNSUPPORTED", f"resource type {resource.get('resourceType')} has no silver table")
            # the stdlib's compact sorted text, byte for byte, as UTF-8: the Arrow column takes the bytes as they are
            texts.append(fastjson.dumps_utf8(resource, plain_floats=plain))
    except RecordError as exc:
        return [head + ("quarantined", exc.code, exc.reason) + _NO_RESOURCE]
    except Exception as exc:  # a mapper bug must not take the run down; the record waits for a retry
        return [head + ("quarantined", "MAPPING_BUG", f"{type(exc).__name__} in the {row['feed']} mapping") + _NO_RESOURCE]
    out = []
    count: int | None = len(resources)  # on the record's first row only
    for resource, text in zip(resources, texts):
        out.append(head + (
            "normalized", None, None, resource["resourceType"], resource["id"], _patient_id(resource), _national_id(resource),
            text, (resource.get("meta") or {}).get("lastUpdated"), _unmapped(resource), count))
        count = None
    return out
