"""ingest: delivered files -> bronze records, one row per source record.

Input columns (one row per landing file, built by `carelake.ingest`):
    hospital, feed (hl7v2 | csv | fhir), path (absolute), source (path under landing),
    received_at (the file's modification time, ISO 8601 UTC), entity (csv only), options (JSON: csv mapping)
Output columns (`BRONZE_COLUMNS`):
    record_id (content hash of hospital, feed and payload), hospital, feed, format, source, position
    (0-based index of the record within its file), received_at, payload (the record as delivered, text)

Splitting a file into records happens inside the engine, a file per task, so big deliveries never pass
through the driver.
"""

from __future__ import annotations

import json
from typing import Iterator

from transforms.arrow import map_rows
from transforms.ids import record_id

__all__ = ["BRONZE_COLUMNS", "split_files", "split_file"]

BRONZE_COLUMNS = [
    ("record_id", "string"), ("hospital", "string"), ("feed", "string"), ("format", "string"),
    ("source", "string"), ("position", "long"), ("received_at", "string"), ("payload", "string"),
]


def split_file(row: dict) -> Iterator[dict]:
    """The records of one landing file (a row of the input above) as bronze rows."""
    feed = row["feed"]
    base = {"hospital": row["hospital"], "feed": feed, "source": row["source"], "received_at": row["received_at"]}
    for position, fmt, payload in _records(feed, row):
        yield {**base, "record_id": record_id(row["hospital"], feed, payload), "format": fmt, "position": position, "payload": payload}


def _records(feed: str, row: dict) -> Iterator[tuple[int, str, str]]:
    if feed == "hl7v2":
        from transforms.hl7v2 import split_messages

        with open(row["path"], "rb") as handle:
            data = handle.read()
        for position, message in enumerate(split_messages(data)):
            yield position, "hl7v2", message
    elif feed == "csv":
        from transforms.csv_feed import read_csv_records

        mapping = json.loads(row["options"])
        for record in read_csv_records(row["path"], mapping):
            payload = json.dumps({"entity": record.entity, "row": record.row}, ensure_ascii=False, sort_keys=True)
            yield record.position, f"csv:{record.entity}", payload
    elif feed == "fhir":
        with open(row["path"], "rb") as handle:
            for position, line in enumerate(handle):
                text = line.decode("utf-8", errors="replace").strip()
                if text:
                    yield position, "ndjson", text
    else:
        raise ValueError(f"unknown feed kind {feed!r}")


def split_files(files):
    """DataFrame of landing files -> DataFrame of bronze records (see the module docstring)."""
    return map_rows(files, split_file, BRONZE_COLUMNS)
