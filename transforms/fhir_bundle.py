"""FHIR files as delivered (NDJSON bulk files, Bundles, single resources) -> one record per resource.

A bronze record of the FHIR feed is always ONE resource as a JSON text, whatever the file held, so that
normalize, quarantine and conservation work resource by resource and a bad entry never takes its Bundle
down with it.

How a file is read (`fhir_file_records`):

- NDJSON (bulk export, ``$export`` downloads): one record per non-blank line, streamed (bulk files can be
  large). The line is the payload as delivered.
- A Bundle (``transaction``, ``batch``, ``collection``, ``searchset``, ``document``, ``message``;
  pretty-printed or on one line): one record per entry resource. The Bundle is read whole; references
  are resolved first, within the file (`resolve_bundle`), so each entry stands on its own:

  * ``urn:uuid:...`` / ``urn:oid:...`` / absolute ``fullUrl`` references -> ``Type/id`` of the entry with
    that ``fullUrl``. An entry without ``id`` (transaction POST) gets the id its ``urn:uuid`` fullUrl
    carries, so the reference and the resource still meet.
  * conditional references ``Type?identifier=system|value`` -> ``Type/id`` of the resource with that
    identifier: first among the entries of the same Bundle, then among the resources of the
    *reference files* delivered alongside (default ``hospitalInformation*.json`` and
    ``practitionerInformation*.json`` in the same folder, as Synthea writes them; a feed can name other
    globs with the ``reference_files`` option). Those files are indexed once per folder and process.
  * a reference that cannot be resolved is left as it was (it stays a valid FHIR reference string), so
    nothing is guessed; it simply points nowhere in carelake.

  Entries of types the FHIR feed does not map (Claim, ExplanationOfBenefit, Organization, ...) and
  DELETE requests come out as ``skipped:...`` records without payload: the ingest stage counts them per
  type in its summary and keeps them out of bronze.
- Any other JSON document holding one resource: one record.

Why resolve at ingest rather than in normalize: a ``urn:uuid`` only means something inside its Bundle,
and normalize sees one record at a time. After ingest, an entry record is an ordinary resource with
relative references, mapped exactly like an NDJSON line (`transforms.fhir_feed`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from transforms import fastjson
from transforms.fhir_feed import SUPPORTED_TYPES

__all__ = ["fhir_file_records", "resolve_bundle", "REFERENCE_FILES", "identifier_index"]

#: Globs (in the folder of a Bundle) of the files whose resources conditional references may point at.
REFERENCE_FILES = ("hospitalInformation*.json", "practitionerInformation*.json")
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?identifier=(.+)")
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


def _local_id(full_url: str | None) -> str | None:
    """The id a fullUrl carries: the uuid of ``urn:uuid:<uuid>``, the last segment of a RESTful URL."""
    if not full_url:
        return None
    if full_url.startswith("urn:uuid:"):
        return full_url[len("urn:uuid:"):]
    if full_url.startswith("urn:oid:"):
        return full_url[len("urn:oid:"):]
    tail = full_url.rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _identifier_keys(resource: dict) -> Iterator[str]:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            system = identifier.get("system") or ""
            yield f"{resource['resourceType']}|{system}|{identifier['value']}"
            yield f"{resource['resourceType']}||{identifier['value']}"  # ?identifier=value without system


def identifier_index(resources: list[dict]) -> dict[str, str]:
    """``Type|system|value`` (and ``Type||value``) -> ``Type/id`` for resources with identifiers."""
    index: dict[str, str] = {}
    for resource in resources:
        if isinstance(resource, dict) and resource.get("id") and isinstance(resource.get("resourceType"), str):
            for key in _identifier_keys(resource):
                index.setdefault(key, f"{resource['resourceType']}/{resource['id']}")
    return index


def _conditional_key(reference: str) -> str | None:
    match = _CONDITIONAL.fullmatch(reference)
    if match is None:
        return None
    target_type, token = match.group(1), match.group(2)
    if "&" in token:  # more than one criterion: not a plain identifier lookup
        return None
    system, _, value = token.rpartition("|")
    return f"{target_type}|{system}|{value}" if value else None


def _rewrite(node, full_urls: dict[str, str], identifiers: dict[str, str]):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                resolved = full_urls.get(value)
                if resolved is None:
                    conditional = _conditional_key(value)
                    resolved = identifiers.get(conditional) if conditional else None
                out[key] = resolved or value
            else:
                out[key] = _rewrite(value, full_urls, identifiers)
        return out
    if isinstance(node, list):
        return [_rewrite(item, full_urls, identifiers) for item in node]
    return node


def resolve_bundle(bundle: dict, outside: dict[str, str] | None = None) -> list[tuple[int, dict | None, str | None]]:
    """(entry index, resolved resource or None, skip reason or None) for each entry of `bundle`.

    `outside` is an identifier index (see `identifier_index`) of resources delivered alongside; entries
    of the Bundle itself win over it. The input is not modified.
    """
    entries = [e if isinstance(e, dict) else {} for e in bundle.get("entry") or []]
    resources: list[dict | None] = []
    full_urls: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            resources.append(None)
            continue
        resource = dict(resource)
        if not resource.get("id"):
            local = _local_id(entry.get("fullUrl"))
            if local:
                resource["id"] = local
        resources.append(resource)
        if entry.get("fullUrl") and resource.get("id"):
            full_urls[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
    identifiers = {**(outside or {}), **identifier_index([r for r in resources if r])}
    out = []
    for index, (entry, resource) in enumerate(zip(entries, resources)):
        method = ((entry.get("request") or {}).get("method") or "").upper()
        if method == "DELETE":
            out.append((index, None, "skipped:fhir-delete"))
        elif resource is None:
            out.append((index, None, "skipped:fhir-no-resource"))
        elif resource["resourceType"] not in SUPPORTED_TYPES:
            shown = resource["resourceType"] if _TYPE.fullmatch(resource["resourceType"]) else "malformed"
            out.append((index, None, f"skipped:fhir-type:{shown}"))
        else:
            out.append((index, _rewrite(resource, full_urls, identifiers), None))
    return out


def _load_json(path: Path):
    with open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8-sig"))


@lru_cache(maxsize=32)
def _folder_index(folder: str, patterns: tuple[str, ...], stamp: tuple) -> dict[str, str]:
    resources: list[dict] = []
    for pattern in patterns:
        for path in sorted(Path(folder).glob(pattern)):
            try:
                document = _load_json(path)
            except (OSError, ValueError):
                continue  # a broken reference file only leaves references unresolved
            if isinstance(document, dict) and document.get("resourceType") == "Bundle":
                resources += [(e or {}).get("resource") or {} for e in document.get("entry") or []]
            elif isinstance(document, dict):
                resources.append(document)
    return identifier_index(resources)


def _reference_index(path: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    folder = path.parent
    stamp = tuple(sorted((str(p), p.stat().st_mtime_ns) for pattern in patterns for p in folder.glob(pattern)))
    return _folder_index(str(folder), patterns, stamp)


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    return b""


def fhir_file_records(path: str | Path, options: dict | None = None) -> Iterator[tuple[int, str, str | None]]:
    """(position, format, payload) for each resource of one delivered FHIR file (see the module docstring).

    A payload that is not valid JSON is still a record (normalize quarantines it as PARSE), so a cut
    NDJSON line is accounted for. `options`: ``reference_files`` (globs, see `REFERENCE_FILES`).
    """
    path = Path(path)
    patterns = tuple((options or {}).get("reference_files") or REFERENCE_FILES)
    first = _first_line(path).decode("utf-8-sig", errors="replace")
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if isinstance(head, dict) and head.get("resourceType") != "Bundle":
        yield from _ndjson(path)
        return
    if head is None and not first.startswith(("{", "[")):
        yield from _ndjson(path)
        return
    try:
        document = head if isinstance(head, dict) and _single_line(path) else _load_json(path)
    except ValueError:
        yield from _ndjson(path)  # neither NDJSON nor a JSON document: each line is quarantined as PARSE
        return
    if not isinstance(document, dict):
        yield 0, "fhir-json", json.dumps(document, ensure_ascii=False)
    elif document.get("resourceType") == "Bundle":
        bundle_type = document.get("type") if isinstance(document.get("type"), str) else "unknown"
        for index, resource, skipped in resolve_bundle(document, _reference_index(path, patterns)):
            if skipped:
                yield index, skipped, None
            else:
                yield index, f"fhir-bundle:{bundle_type}", fastjson.dumps(resource)
    else:
        yield 0, "fhir-json", fastjson.dumps(document)


def _single_line(path: Path) -> bool:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip()) == 1


def _ndjson(path: Path) -> Iterator[tuple[int, str, str]]:
    with open(path, "rb") as handle:
        for position, line in enumerate(handle):
            text = line.decode("utf-8", errors="replace").strip()
            if text:
                yield position, "ndjson", text
