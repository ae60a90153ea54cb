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

from transforms.arrow import as_dicts, map_tuple_rows
from transforms.record_rows import CODE_ELEMENTS, RESOURCE_TABLES, STANDARD_SYSTEMS, normalize_record_tuples
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


@dataclass(frozen=True)
class Mapping:
    """What the mappers need besides the record: terminology, csv layouts, per-hospital overrides."""

    terminology: Terminology = field(default_factory=Terminology)
    csv_mappings: dict = field(default_factory=dict)  # "hospital/feed" (or hospital) -> mapping (conf/csv_mappings/*.yaml)
    hl7v2_overrides: dict = field(default_factory=dict)  # hospital -> overrides


#: The modules whose code decides what a record maps to: a change in any of them re-maps every record.
_MAPPER_SOURCES = ("normalize.py", "record_rows.py", "csv_feed.py", "fhir_feed.py", "fhir_bundle.py", "fast_validate.py", "fhir_validate.py",
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


def normalize_record(row: dict, mapping: Mapping) -> Iterator[dict]:
    """One bronze row -> its output rows as dicts keyed by `NORMALIZED_COLUMNS` (see the module
    docstring), the resource as text, as the engine gives it. Never raises."""
    for out in as_dicts(normalize_record_tuples(row, mapping), NORMALIZED_COLUMNS):
        if out["resource"] is not None:
            out["resource"] = out["resource"].decode("utf-8")  # the tuples carry it as UTF-8 bytes for Arrow
        yield out


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
