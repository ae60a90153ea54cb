"""ingest: delivered files -> bronze records, one row per source record.

Input columns (one row per landing file, built by `carelake.ingest`):
    hospital, feed (hl7v2 | csv | fhir), path (absolute), source (path under landing),
    received_at (the file's modification time, ISO 8601 UTC), entity (csv only), options (JSON: csv mapping,
    or fhir feed options)
Output columns (`BRONZE_COLUMNS`):
    record_id (content hash of hospital, feed and payload), hospital, feed, format, source, position
    (0-based index of the record within its file), received_at, payload (the record as delivered, text)

Splitting a file into records happens inside the engine, a file per task, so big deliveries never pass
through the driver.
"""

from __future__ import annotations

import json
from typing import Iterator

from transforms.arrow import as_dicts, map_tuple_rows
from transforms.errors import marker_payload
from transforms.ids import record_id, record_ids

__all__ = ["BRONZE_COLUMNS", "split_files", "split_file", "split_file_tuples", "DEFAULT_MAX_RECORD_BYTES"]

#: conf/lake.yaml limits.max_record_bytes when not set (carelake.lake.Limits)
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024

BRONZE_COLUMNS = [
    ("record_id", "string"), ("hospital", "string"), ("feed", "string"), ("format", "string"),
    ("source", "string"), ("position", "long"), ("received_at", "string"), ("payload", "string"),
]


def split_file(row: dict, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[dict]:
    """The records of one landing file (a row of the input above) as bronze rows. Never raises.

    A record over `max_record_bytes` is kept as a TOO_LARGE marker (its record_id still hashes the
    whole record, so a re-delivery is recognized); when a file stops splitting part way (truncated
    batch, undecodable bytes), what is left becomes one PARSE marker record. Normalize quarantines
    both, so nothing a hospital sent disappears without a count and a reason.
    """
    return as_dicts(split_file_tuples(row, max_record_bytes=max_record_bytes), BRONZE_COLUMNS)


def split_file_tuples(row: dict, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[tuple]:
    """`split_file` with each bronze row a tuple of the `BRONZE_COLUMNS` values in order: what
    `split_files` gathers (a tuple per record costs less to build and to turn into columns than a dict)."""
    hospital, feed, source, received_at = row["hospital"], row["feed"], row["source"], row["received_at"]
    rid_of = record_ids(hospital, feed)
    position = -1
    try:
        for position, fmt, payload in _records(feed, row):
            rid = rid_of(payload or "")
            if payload is not None and len(payload) * 4 > max_record_bytes and len(payload.encode("utf-8")) > max_record_bytes:
                payload = marker_payload("TOO_LARGE", f"{fmt} record of {len(payload.encode('utf-8')):,} bytes is over "
                                                      f"limits.max_record_bytes ({max_record_bytes:,})")
            # format "skipped:<why>" (no payload): left out of bronze by the runner, which counts it
            yield (rid, hospital, feed, fmt, source, position, received_at, payload)
    except Exception as exc:  # one bad file must not stop the other files of the batch
        payload = marker_payload("PARSE", f"the {feed} file could not be split after record {position + 1} ({type(exc).__name__})")
        yield (record_id(hospital, feed, f"{payload}\x1f{source}\x1f{position + 1}"), hospital, feed, f"{feed}:unsplit",
               source, position + 1, received_at, payload)


def _records(feed: str, row: dict) -> Iterator[tuple[int, str, str]]:
    if feed == "hl7v2":
        from transforms.hl7v2 import split_file_messages

        with open(row["path"], "rb") as handle:
            for position, message in enumerate(split_file_messages(handle)):
                yield position, "hl7v2", message
    elif feed == "csv":
        from transforms.csv_feed import csv_file_records

        yield from csv_file_records(row["path"], json.loads(row["options"]))
    elif feed == "fhir":
        from transforms.fhir_bundle import fhir_file_records

        yield from fhir_file_records(row["path"], json.loads(row["options"]) if row.get("options") else None)
    else:
        raise ValueError(f"unknown feed kind {feed!r}")


def split_files(files, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
    """DataFrame of landing files -> DataFrame of bronze records (see the module docstring)."""
    return map_tuple_rows(files, lambda row: split_file_tuples(row, max_record_bytes=max_record_bytes), BRONZE_COLUMNS,
                          rows_per_task=1)
