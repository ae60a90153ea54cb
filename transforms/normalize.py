"""normalize: bronze records -> FHIR R4 resources, or a quarantine verdict per record.

Input columns: the bronze columns (`transforms.ingest.BRONZE_COLUMNS`).
Output columns (`NORMALIZED_COLUMNS`), one row per resource of a normalized record, or one row for a
quarantined record:
    record_id, hospital, feed, source, position, received_at,
    outcome (normalized | quarantined), error_code, reason (no PHI: names fields, never values),
    resource_type, id, patient_id (the Patient the resource belongs to), national_id (Patients only,
    for person linkage), resource (FHIR JSON), updated (meta.lastUpdated), unmapped (local codings
    without a standard one), record_resources (on the record's first row only: how many resources
    the record gave, 0 when quarantined; null on its other rows)

`record_outcomes` turns these rows into one outcome per record.

A record is normalized whole or quarantined whole: if one of its resources fails FHIR validation, none
of them reaches silver, so ``bronze = normalized + quarantined`` holds record by record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator

from transforms import fastjson
from transforms.arrow import as_dicts, map_tuple_rows
from transforms.csv_feed import csv_row_to_resources
from transforms.errors import RecordError, marker_error
from transforms.fast_validate import validate
from transforms.fhir_feed import fhir_json_to_resources
from transforms.hl7v2 import message_to_resources
from transforms.systems import ICD10, LOINC, NATIONAL_ID_SYSTEM, SNOMED, UCUM
from transforms.terminology import Terminology

__all__ = ["NORMALIZED_COLUMNS", "OUTCOME_COLUMNS", "Mapping", "normalize_records", "normalize_record", "normalize_record_tuples",
           "record_outcomes", "RESOURCE_TABLES", "STANDARD_SYSTEMS", "CODE_ELEMENTS", "mapping_fingerprint"]

NORMALIZED_COLUMNS = [
    ("record_id", "string"), ("hospital", "string"), ("feed", "string"), ("source", "string"),
    ("position", "long"), ("received_at", "string"), ("outcome", "string"), ("error_code", "string"),
    ("reason", "string"), ("resource_type", "string"), ("id", "string"), ("patient_id", "string"),
    ("national_id", "string"), ("resource", "string"), ("updated", "string"), ("unmapped", "string"),
    ("record_resources", "int"),
]
#: `record_outcomes`' columns: one row per record
OUTCOME_COLUMNS = ["record_id", "hospital", "feed", "source", "position", "outcome", "error_code", "reason", "resources"]

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


@dataclass(frozen=True)
class Mapping:
    """What the mappers need besides the record: terminology, csv layouts, per-hospital overrides."""

    terminology: Terminology = field(default_factory=Terminology)
    csv_mappings: dict = field(default_factory=dict)  # "hospital/feed" (or hospital) -> mapping (conf/csv_mappings/*.yaml)
    hl7v2_overrides: dict = field(default_factory=dict)  # hospital -> overrides


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
    element = CODE_ELEMENTS.get(resource.get("resourceType"))
    if element is None:
        return None
    codings = [c for c in (resource.get(element) or {}).get("coding") or () if isinstance(c, dict)]
    if not codings:
        return None
    for c in codings:
        if c.get("system") in _STANDARD_SYSTEMS:  # hashable: a validated coding's system is a str or absent
            return None
    return _compact_json([[c.get("system"), c.get("code")] for c in codings])


#: The modules whose code decides what a record maps to: a change in any of them re-maps every record.
_MAPPER_SOURCES = ("normalize.py", "csv_feed.py", "fhir_feed.py", "fhir_bundle.py", "fast_validate.py", "fhir_validate.py",
                   "ids.py", "systems.py", "terminology.py", "errors.py", "fastjson.py", "hl7v2/*.py")


def mapping_fingerprint(mapping: Mapping) -> str:
    """16 hex chars naming what the mapping of a record depends on: the terminology maps, the CSV layouts,
    the HL7 v2 overrides and the mapper code. The normalize runner stores it per record and maps again
    only the records whose fingerprint differs, so a mapping fix is picked up without a `full` run."""
    from pathlib import Path

    digest = hashlib.sha256()
    conf = {"terminology": mapping.terminology.to_rows(), "csv": mapping.csv_mappings, "hl7v2": mapping.hl7v2_overrides}
    digest.update(json.dumps(conf, sort_keys=True, default=str).encode("utf-8"))
    root = Path(__file__).resolve().parent
    for pattern in _MAPPER_SOURCES:
        for path in sorted(root.glob(pattern)):
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


#: a quarantined record's row after its reason: no resource columns, and 0 resources
_NO_RESOURCE = (None,) * 7 + (0,)


def normalize_record(row: dict, mapping: Mapping) -> Iterator[dict]:
    """One bronze row -> its output rows as dicts keyed by `NORMALIZED_COLUMNS` (see the module
    docstring). Never raises."""
    return as_dicts(normalize_record_tuples(row, mapping), NORMALIZED_COLUMNS)


def normalize_record_tuples(row: dict, mapping: Mapping) -> list[tuple]:
    """`normalize_record` with each output row a tuple of the `NORMALIZED_COLUMNS` values in order:
    what `normalize_records` gathers (a record gives up to tens of rows, 17 columns each; a tuple
    costs less to build and to turn into columns than a dict)."""
    head = (row["record_id"], row["hospital"], row["feed"], row["source"], row["position"], row["received_at"])
    try:
        resources = _resources(row, mapping)
        if not resources:
            raise RecordError("UNSUPPORTED", f"{row['format']} record maps to no resource")
        plain_floats = []  # per resource: validate found its floats plain, so dumps need not look for them
        for resource in resources:
            plain_floats.append(validate(resource))
            if resource.get("resourceType") not in RESOURCE_TABLES:
                raise RecordError("UNSUPPORTED", f"resource type {resource.get('resourceType')} has no silver table")
    except RecordError as exc:
        return [head + ("quarantined", exc.code, exc.reason) + _NO_RESOURCE]
    except Exception as exc:  # a mapper bug must not take the run down; the record waits for a retry
        return [head + ("quarantined", "MAPPING_BUG", f"{type(exc).__name__} in the {row['feed']} mapping") + _NO_RESOURCE]
    out = []
    count = len(resources)  # on the record's first row only
    for resource, plain in zip(resources, plain_floats):
        out.append(head + (
            "normalized", None, None, resource["resourceType"], resource["id"], _patient_id(resource), _national_id(resource),
            fastjson.dumps(resource, plain_floats=plain),  # the stdlib's compact sorted text, byte for byte
            (resource.get("meta") or {}).get("lastUpdated"), _unmapped(resource), count))
        count = None
    return out


def normalize_records(bronze, mapping: Mapping, *, partitions: int | None = None):
    """DataFrame of bronze records -> DataFrame of `NORMALIZED_COLUMNS`.

    `partitions` spreads the records over that many partitions by a hash of record_id first: give it
    when bronze may arrive as one partition on an engine whose tasks are the unit of parallelism (JVM
    Spark). On the embedded engine the UDF worker pool (`transforms.arrow`) already keeps every core busy.
    """
    if partitions:
        bronze = bronze.repartition(partitions, "record_id")
    return map_tuple_rows(bronze, lambda row: normalize_record_tuples(row, mapping), NORMALIZED_COLUMNS)


def record_outcomes(normalized):
    """Rows of `normalize_records` -> `OUTCOME_COLUMNS`: one row per record, with its outcome, error code,
    reason and how many resources it gave. Each record's first row says it all, so no aggregation over
    every record (a sort or hash table of millions of record ids) is needed."""
    return normalized.filter("record_resources IS NOT NULL").select(
        *OUTCOME_COLUMNS[:-1], normalized["record_resources"].cast("long").alias("resources"))
