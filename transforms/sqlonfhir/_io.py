"""Reading FHIR resources from files, and writing view rows as CSV.

`load_resources` reads what hospitals and FHIR servers hand over: NDJSON bulk exports (optionally
gzipped), Bundles, single resources, JSON arrays of resources, and folders of any of those.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ViewError

__all__ = ["ResourceFileError", "load_resources", "rows_to_csv"]

_SUFFIXES = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz")


class ResourceFileError(ValueError):
    """A file that does not hold FHIR resources in JSON, NDJSON or Bundle form."""


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _is_ndjson(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".ndjson", ".jsonl"))


def _rewrite_references(node, mapping: dict) -> None:
    """Replace ``urn:uuid:`` references with the ``Type/id`` of the entry they name, in place."""
    if type(node) is dict:
        ref = node.get("reference")
        if type(ref) is str and ref in mapping:
            node["reference"] = mapping[ref]
        for value in node.values():
            if type(value) in (dict, list):
                _rewrite_references(value, mapping)
    elif type(node) is list:
        for value in node:
            if type(value) in (dict, list):
                _rewrite_references(value, mapping)


def _bundle_resources(bundle: dict, source: str) -> Iterator[dict]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise ResourceFileError(f"{source}: Bundle.entry must be a list")
    # Transaction bundles (Synthea, HL7 v2 converters) link entries by fullUrl; getReferenceKey()
    # only resolves relative references, so the links are rewritten as the bundle is read.
    mapping = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(full_url, str) and resource.get("id"):
            if full_url.startswith(("urn:uuid:", "urn:oid:")) or full_url.endswith(
                    f"/{resource.get('resourceType')}/{resource['id']}"):
                mapping[full_url] = f"{resource.get('resourceType')}/{resource['id']}"
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            if mapping:
                _rewrite_references(resource, mapping)
            yield resource


def _from_document(doc, source: str) -> Iterator[dict]:
    if isinstance(doc, list):
        for item in doc:
            yield from _from_document(item, source)
        return
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise ResourceFileError(f"{source}: expected a FHIR resource (an object with 'resourceType'), "
                                f"found {type(doc).__name__}")
    if doc["resourceType"] == "Bundle":
        yield from _bundle_resources(doc, source)
    else:
        yield doc


def _load_file(path: Path) -> Iterator[dict]:
    if _is_ndjson(path):
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ResourceFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                yield from _from_document(doc, f"{path}:{lineno}")
        return
    with _open_text(path) as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ResourceFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    yield from _from_document(doc, str(path))


def load_resources(path: str | os.PathLike) -> Iterator[dict]:
    """Yield every FHIR resource under `path`, lazily.

    `path` is an NDJSON file (``.ndjson``/``.jsonl``, optionally ``.gz``), a JSON file holding a resource,
    a Bundle (its entries' resources are yielded, with ``urn:uuid:`` references rewritten to
    ``Type/id``) or a list of resources, or a folder searched recursively for such files in name order.
    """
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
        for file in files:
            yield from _load_file(file)
    elif root.is_file():
        yield from _load_file(root)
    else:
        raise FileNotFoundError(f"no FHIR resources at {root}: not a file or folder")


def _csv_value(value) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def rows_to_csv(columns: Iterable, rows: Iterable[dict]) -> str:
    """Rows as CSV text with a header; `columns` are names or ``CompiledView.columns`` tuples.

    Nulls become empty fields, booleans ``true``/``false``, collections and complex values JSON.
    """
    names = [c if isinstance(c, str) else c[0] for c in columns]
    if not names:
        raise ViewError("rows_to_csv needs at least one column")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_value(row.get(n)) for n in names])
    return buf.getvalue()
