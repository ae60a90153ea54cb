"""CSV exports of hospital information systems -> FHIR R4 resources.

Each hospital exports its own columns and formats; a mapping (``conf/csv_mappings/<name>.yaml``, loaded
as a dict) says which file holds which entity, which column is which canonical field, and how dates are
written. Reading checks every header against the mapping first, so a renamed column fails the delivery
loudly (`CsvLayoutError`) instead of mapping empty fields row after row.

A mapping::

    name: his-a
    delimiter: ","
    encoding: utf-8
    timezone: Europe/Berlin          # only for datetimes written without a UTC offset
    entities:
      patients:
        file: patients.csv
        date_format: "%Y-%m-%d"
        columns: {patient_id: PATIENT_ID, birth_date: BIRTHDATE, ...}
        values: {sex: {w: female}}   # optional: hospital codes -> standard ones, before the built-in synonyms
      encounters: {file: ..., datetime_format: "%Y-%m-%dT%H:%M:%S%z", columns: {...}}

Canonical fields per entity are in `FIELDS`; those in `REQUIRED` must be non-empty. A missing
``datetime_format`` means ISO 8601. Observations need ``code_system`` (``LOINC``/``LN`` or
``LOCAL``/``L``) in a column or as the entity's ``default_code_system``; conditions and immunizations
take ``code_system`` the same way (ICD-10 by default for conditions, CVX for immunizations; also SNOMED,
LOINC, or any URI).

Beyond the columns, an entity may say:

- ``ignore: [COL, ...]``: columns the export carries and carelake deliberately does not read. Every
  other column must be mapped: an unknown column still fails the header check.
- ``exclude: {field: [value, ...]}``: rows that are not records of the entity (Synthea writes its
  QALY/DALY/QOLS bookkeeping as observations). They are counted at ingest, never stored.
- ``panels: {<panel code>: {display: ..., components: [code, ...]}}`` (observations): consecutive rows
  of one patient, encounter and time whose codes are components of one panel become ONE Observation
  with ``component`` entries, as a FHIR export writes it (blood pressure, PRAPARE).
- no ``<entity>_id`` column: the id is a content key, the hash of the row's mapped values. A row
  delivered again maps to the same id; two identical rows are one record (they say the same thing).

A mapping may set ``national_id_system`` (default ``urn:carelake:national-id``): the identifier system of
the ``national_id`` column, e.g. ``http://hl7.org/fhir/sid/us-ssn`` for a US export.

Ids: ``resource_id(hospital, <type>, <local id>)`` of the row's own id, and references built the same way,
so a patient's CSV rows meet the resources the HL7 v2 and FHIR feeds of the same hospital produce.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from transforms.errors import RecordError
from transforms.ids import resource_id
from transforms.systems import (
    ACT_CODE, ICD10, LOINC, NATIONAL_ID_SYSTEM, SNOMED, UCUM, local_code_system, mrn_system, visit_system,
)
from transforms.terminology import Terminology

__all__ = [
    "CsvLayoutError", "CsvRecord", "read_csv_records", "csv_row_to_resources", "csv_file_records",
    "ENTITIES", "FIELDS", "REQUIRED", "EXTRA_CELLS", "COMPONENTS", "PANEL", "ID_FIELDS", "header_matches", "format_pattern",
]

ENTITIES = ("patients", "encounters", "observations", "conditions", "immunizations")
#: Canonical fields a mapping may map, per entity.
FIELDS = {
    "patients": ("patient_id", "national_id", "family", "given", "birth_date", "sex", "phone", "street", "city",
                 "postal_code"),
    "encounters": ("encounter_id", "patient_id", "class", "start", "end"),
    "observations": ("observation_id", "patient_id", "encounter_id", "code", "code_system", "display", "category",
                     "value", "unit", "flag", "effective"),
    "conditions": ("condition_id", "patient_id", "encounter_id", "code", "code_system", "display", "onset",
                   "abatement"),
    "immunizations": ("immunization_id", "patient_id", "encounter_id", "code", "code_system", "display",
                      "occurrence"),
}
#: Every field of each entity, empty: what a row has of the fields its mapping leaves out.
_NO_CELLS = {entity: dict.fromkeys(fields, "") for entity, fields in FIELDS.items()}
#: The id field of each entity; when a mapping leaves it out, the id is a content key.
ID_FIELDS = {"patients": "patient_id", "encounters": "encounter_id", "observations": "observation_id",
             "conditions": "condition_id", "immunizations": "immunization_id"}
REQUIRED = {
    "patients": ("patient_id",),
    "encounters": ("encounter_id", "patient_id", "class", "start"),
    "observations": ("observation_id", "patient_id", "code", "effective"),
    "conditions": ("condition_id", "patient_id", "code"),
    "immunizations": ("immunization_id", "patient_id", "code", "occurrence"),
}
#: Row key holding the surplus cells of a row longer than its header (the row is then malformed).
EXTRA_CELLS = "__extra_cells__"
#: Row key holding the component rows of a panel observation (see ``panels``).
COMPONENTS = "__components__"
#: Row key holding the panel code of a panel observation.
PANEL = "__panel__"

_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T")
_CLASS_SYNONYMS = {
    "i": "IMP", "imp": "IMP", "inpatient": "IMP",
    "o": "AMB", "amb": "AMB", "outpatient": "AMB", "ambulatory": "AMB",
    "e": "EMER", "emer": "EMER", "emergency": "EMER",
    "vr": "VR", "virtual": "VR", "hh": "HH", "home": "HH",
}
_CLASS_DISPLAY = {"IMP": "inpatient encounter", "AMB": "ambulatory", "EMER": "emergency", "VR": "virtual",
                  "HH": "home health"}
_GENDER_SYNONYMS = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other", "other": "other",
                    "u": "unknown", "unknown": "unknown"}
_CODE_SYSTEM_SYNONYMS = {"ln": "loinc", "loinc": "loinc", LOINC: "loinc", "l": "local", "local": "local"}
_CVX = "http://hl7.org/fhir/sid/cvx"
#: Code system names a mapping may use for condition and immunization codes (or give the URI itself).
_SYSTEM_URIS = {"icd10": ICD10, "icd-10": ICD10, "i10": ICD10, "snomed": SNOMED, "snomed-ct": SNOMED, "sct": SNOMED,
                "loinc": LOINC, "ln": LOINC, "cvx": _CVX}
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_FLAGS = {"H": "High", "L": "Low", "N": "Normal", "A": "Abnormal", "HH": "Critical high", "LL": "Critical low"}
_VITAL_SIGNS = frozenset({"8480-6", "8462-4", "29463-7", "8302-2", "8867-4", "9279-1", "8310-5", "59408-5",
                          "39156-5", "85354-9"})
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: what the ``surrogateescape`` reader makes of a byte the encoding cannot decode
_UNDECODABLE = re.compile("[" + chr(0xDC80) + "-" + chr(0xDCFF) + "]")  # chr: mypyc takes no surrogate literals
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class CsvLayoutError(ValueError):
    """A CSV file does not have the columns its mapping describes."""


@dataclass(frozen=True)
class CsvRecord:
    """One data row: `row` maps canonical field -> raw cell text.

    A cell missing from a short row is None; surplus cells of a long row are listed under `EXTRA_CELLS`.
    `position` is the 0-based index of the data row in its file (blank lines are not rows).
    """

    entity: str
    file: str
    position: int
    row: dict
    skipped: bool = False  # excluded by the mapping (``exclude``): counted at ingest, not stored


# ---------------------------------------------------------------------------------------------------
# Reading


def _entities(mapping: dict) -> dict:
    entities = mapping.get("entities")
    if not isinstance(entities, dict) or not entities:
        raise CsvLayoutError(f"mapping {mapping.get('name', '?')!r} has no 'entities'; expected some of {list(ENTITIES)}")
    unknown = sorted(set(entities) - set(ENTITIES))
    if unknown:
        raise CsvLayoutError(f"mapping {mapping.get('name', '?')!r} has unknown entities {unknown}; known: {list(ENTITIES)}")
    return entities


def header_matches(header: list[str], spec: dict) -> bool:
    """Whether a file's header fits an entity of a mapping (every mapped column, nothing unknown)."""
    expected = set(spec["columns"].values())
    return expected <= set(header) and set(header) <= expected | set(spec.get("ignore") or ())


def _check_header(path: Path, header: list[str], spec: dict, mapping_name: str) -> None:
    expected = list(spec["columns"].values())
    known = set(expected) | set(spec.get("ignore") or ())
    missing = [c for c in expected if c not in header]
    unexpected = [c for c in header if c not in known]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if not (missing or unexpected or duplicated):
        return
    parts = [f"missing {missing}"] if missing else []
    parts += [f"unexpected {unexpected}"] if unexpected else []
    parts += [f"duplicated {duplicated}"] if duplicated else []
    raise CsvLayoutError(
        f"{path.name}: columns do not match mapping '{mapping_name}': {', '.join(parts)}"
        f" (fix the export, or the mapping if the hospital changed its layout)"
    )


def _row(header: list[str], cells: list[str], columns: dict[str, str]) -> dict:
    by_column = dict(zip(header, cells))
    row: dict = {field: by_column.get(column) for field, column in columns.items()}
    if len(cells) > len(header):
        row[EXTRA_CELLS] = cells[len(header):]
    return row


def _row_maker(header: list[str], columns: dict[str, str]):
    """`_row` for the rows of one file: a row as long as its header takes its cells by index, without
    the by-column dict (`_check_header` made sure every column is in the header, once)."""
    fields = tuple(columns)
    if len(fields) < 2:  # itemgetter of one index returns the cell, not a tuple
        return lambda cells: _row(header, cells, columns)
    at = {column: index for index, column in enumerate(header)}
    cells_of = itemgetter(*[at[column] for column in columns.values()])
    width = len(header)
    return lambda cells: dict(zip(fields, cells_of(cells))) if len(cells) == width else _row(header, cells, columns)


def _read_file(path: Path, entity: str, spec: dict, mapping: dict) -> Iterator[CsvRecord]:
    name = mapping.get("name", "?")
    # surrogateescape: a bad byte spoils its row (PARSE in csv_row_to_resources), not the whole file.
    with open(path, newline="", encoding=mapping.get("encoding", "utf-8"), errors="surrogateescape") as handle:
        reader = csv.reader(handle, delimiter=mapping.get("delimiter", ","), quotechar=mapping.get("quotechar", '"'))
        header = next(reader, None)
        if header is None:
            raise CsvLayoutError(f"{path.name}: file is empty; mapping '{name}' expects a header row")
        header = [h.strip() for h in header]
        header[0] = header[0].lstrip("\ufeff")
        _check_header(path, header, spec, name)
        rows = _rows(reader, header, entity, str(path), spec)
        yield from (_panels(rows, spec["panels"]) if spec.get("panels") else rows)


def _rows(reader, header: list[str], entity: str, path: str, spec: dict) -> Iterator[CsvRecord]:
    exclude = {field: {str(v) for v in values} for field, values in (spec.get("exclude") or {}).items()}
    make_row = _row_maker(header, spec["columns"])
    position = 0
    for cells in reader:
        if not cells:
            continue
        row = make_row(cells)
        skipped = any((row.get(field) or "").strip() in values for field, values in exclude.items())
        yield CsvRecord(entity, path, position, row, skipped)
        position += 1


def _panels(records: Iterator[CsvRecord], panels: dict) -> Iterator[CsvRecord]:
    """Fold the component rows of one panel (same patient, encounter, time) into one record.

    Exports interleave rows of different patients, so rows are grouped by key, not by adjacency: a
    group is emitted when it holds every declared component, when a component code repeats (a second
    reading), or at the end of the file. Only panel rows wait in memory. The first component row
    carries the others under `COMPONENTS`; its position is the record's.
    """
    wanted = {str(panel): {str(c) for c in spec.get("components") or ()} for panel, spec in panels.items()}
    panel_of = {code: panel for panel, codes in wanted.items() for code in codes}
    open_groups: dict[tuple, list[CsvRecord]] = {}

    def emit(key: tuple) -> CsvRecord:
        group = open_groups.pop(key)
        first = group[0]
        return CsvRecord(first.entity, first.file, first.position,
                         {**first.row, PANEL: key[0], COMPONENTS: [r.row for r in group]})

    for record in records:
        code = (record.row.get("code") or "").strip()
        panel = None if record.skipped else panel_of.get(code)
        if panel is None:
            yield record
            continue
        key = (panel, record.row.get("patient_id"), record.row.get("encounter_id"), record.row.get("effective"))
        if key in open_groups and code in {(r.row.get("code") or "").strip() for r in open_groups[key]}:
            yield emit(key)
        open_groups.setdefault(key, []).append(record)
        if {(r.row.get("code") or "").strip() for r in open_groups[key]} >= wanted[panel]:
            yield emit(key)
    for key in sorted(open_groups, key=lambda k: open_groups[k][0].position):
        yield emit(key)


def read_csv_records(directory: str | Path, mapping: dict) -> Iterator[CsvRecord]:
    """Yield every data row of the mapped files in `directory`, entity by entity.

    Files the mapping names but the delivery lacks are skipped (an export may carry only some
    entities); a delivery with none of them, or a header that differs from the mapping, raises
    `CsvLayoutError`.
    """
    directory = Path(directory)
    entities = _entities(mapping)
    present = [(entity, spec) for entity, spec in entities.items() if (directory / spec["file"]).exists()]
    if not present:
        files = [spec["file"] for spec in entities.values()]
        raise CsvLayoutError(f"{directory}: none of the files of mapping '{mapping.get('name', '?')}' found; expected {files}")
    for entity, spec in present:
        yield from _read_file(directory / spec["file"], entity, spec, mapping)


def csv_file_records(path: str | Path, mapping: dict) -> Iterator[tuple[int, str, str | None]]:
    """(position, format, payload) of each record of a CSV delivery folder, for the ingest stage.

    Rows the mapping excludes come out with format ``skipped:csv-exclude`` and no payload: the ingest
    counts them and keeps them out of bronze.
    """
    for record in read_csv_records(path, mapping):
        if record.skipped:
            yield record.position, "skipped:csv-exclude", None
            continue
        yield record.position, f"csv:{record.entity}", _payload_json({"entity": record.entity, "row": record.row})


def _payload_encoder():
    """``json.dumps(payload, ensure_ascii=False, sort_keys=True)`` for a payload of str, None and lists of
    str. json.dumps builds a JSONEncoder on every call, and its encode the C encoder too: half the cost
    of a row's payload. This is that C encoder made once (no circle check: such a payload has no cycle)."""
    from json.encoder import c_make_encoder, encode_basestring

    encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
    if c_make_encoder is None:  # no C accelerator: encode does it in Python
        return encoder.encode
    make = c_make_encoder(None, encoder.default, encode_basestring, None, encoder.key_separator,
                          encoder.item_separator, True, False, True)
    return lambda payload: "".join(make(payload, 0))


_payload_json = _payload_encoder()


# ---------------------------------------------------------------------------------------------------
# Mapping rows to resources


class _Row:
    """One row being mapped, and what its mapping says about its entity.

    `cells` has every field of the entity, "" where the row has none (a field the mapping leaves out);
    `values` is the cleaned row as delivered, which the content key hashes.
    """

    # Not a frozen dataclass: its __init__ sets each field through object.__setattr__, and that, with a
    # `get` call per cell read, was a tenth of the CSV mapping.
    __slots__ = ("entity", "values", "cells", "hospital", "spec", "mapping", "terminology", "extra")

    def __init__(self, entity: str, values: dict[str, str], hospital: str, spec: dict, mapping: dict,
                 terminology: Terminology, extra: dict | None = None):
        self.entity, self.values, self.hospital = entity, values, hospital
        self.cells = _NO_CELLS[entity] | values
        self.spec, self.mapping, self.terminology = spec, mapping, terminology
        self.extra = extra or {}  # panel code and component rows of a panel observation

    def column(self, field: str) -> str:
        """How a field is named in reasons: the hospital's column and the canonical field, never the value."""
        return f"{self.spec['columns'].get(field, field)} ({self.entity}.{field})"

    def ref(self, resource_type: str, field: str) -> dict:
        return {"reference": f"{resource_type}/{resource_id(self.hospital, resource_type, self.cells[field])}"}

    def id(self, resource_type: str, field: str) -> str:
        if field == ID_FIELDS[self.entity] and field not in self.spec["columns"]:
            return resource_id(self.hospital, resource_type, self.content_key())
        return resource_id(self.hospital, resource_type, self.cells[field])

    def content_key(self) -> str:
        """Local id of a row without an id column: a hash of its mapped values (and its panel's)."""
        parts = [f"{k}={v}" for k, v in sorted(self.values.items())]
        parts += [f"{k}={v}" for c in self.components for k, v in sorted(c.items())]
        return "ck-" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:40]

    @property
    def components(self) -> list[dict[str, str]]:
        return self.extra.get(COMPONENTS) or []


def _clean_cells(entity: str, row: dict) -> dict[str, str]:
    if EXTRA_CELLS in row or None in row.values():
        raise RecordError("PARSE", f"{entity} row does not have as many cells as the header")
    values = {k: v.strip() for k, v in row.items()}
    text = "".join(values.values())  # one search over the row, not one per cell
    if not text.isascii() and _UNDECODABLE.search(text):  # isascii reads a flag: most rows need no search
        raise RecordError("PARSE", f"{entity} row is not valid in the mapping's encoding")
    return values


def _clean(entity: str, row: dict) -> dict[str, str]:
    if COMPONENTS not in row and PANEL not in row:  # all but panel rows: no copy needed (not modified)
        return _clean_cells(entity, row)
    return _clean_cells(entity, {k: v for k, v in row.items() if k not in (COMPONENTS, PANEL)})


def _lookup(r: _Row, field: str, synonyms: dict[str, str], raw: str) -> str:
    values = r.spec.get("values", {}).get(field)
    found = None
    if values:  # most fields have no hospital codes: no dicts to build for them
        own = {str(k): str(v) for k, v in values.items()}
        found = own.get(raw) or {k.lower(): v for k, v in own.items()}.get(raw.lower())
    found = synonyms.get((found or raw).lower())
    if found is None:
        raise RecordError("UNKNOWN_CODE", f"{r.column(field)}: code not in the mapping's values or known synonyms")
    return found


@lru_cache(maxsize=64)
def _has_time(fmt: str) -> bool:
    return any(d in fmt for d in _TIME_DIRECTIVES)


# `datetime.strptime` runs in Python (the _strptime module) and was a tenth of the CSV mapping. Formats
# made only of the fixed-width numeric directives below get a plain regular expression instead. It is
# stricter than strptime's (two digits where strptime also takes one, one space where it takes any
# whitespace, case as written), and strptime's own pattern prefers the two-digit forms, so whatever it
# accepts strptime reads the same way; anything else, and any out-of-range value, goes to strptime.
# The matched digits are put in ISO 8601 order for `datetime.fromisoformat`, which runs in C (building
# the datetime from the parts in Python cost twice as much) and checks the ranges as `datetime(...)` does.
_FIXED_DIRECTIVES = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{2})", "d": r"(?P<d>\d{2})", "H": r"(?P<H>\d{2})",
                     "M": r"(?P<M>\d{2})", "S": r"(?P<S>\d{2})", "z": r"(?P<z>Z|[+-]\d{2}:?[0-5]\d)"}
#: ISO 8601 text of the directives, with the value strptime assumes for a directive the format lacks
_ISO_TEMPLATE = "{Y}-{m}-{d}T{H}:{M}:{S}{z}"
_ISO_DEFAULTS = {"m": "01", "d": "01", "H": "00", "M": "00", "S": "00", "z": ""}


def format_pattern(fmt: str, directives: dict[str, str]) -> tuple[str, list[str]] | None:
    """A strptime format made only of `directives` (each once) and literal text -> (a regular expression:
    each directive's pattern, the text escaped; the directives in order). Else None."""
    parts: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            directive = fmt[i + 1:i + 2]
            if directive not in directives or directive in seen:
                return None
            seen.append(directive)
            parts.append(directives[directive])
            i += 2
        else:  # literally: strptime also takes other letter case and any run of whitespace here
            parts.append(re.escape(fmt[i]))
            i += 1
    return "".join(parts), seen


@lru_cache(maxsize=64)
def _fixed_format(fmt: str) -> tuple[re.Pattern, str] | None:
    """For `fmt` made only of `_FIXED_DIRECTIVES`: its pattern, and a `str.format` template that puts the
    pattern's groups (in match order) into ISO 8601 text for `datetime.fromisoformat`. Else None."""
    found = format_pattern(fmt, _FIXED_DIRECTIVES)
    if found is None or "Y" not in found[1]:
        return None
    pattern, seen = found
    fields = {directive: f"{{{seen.index(directive)}}}" for directive in seen}
    return re.compile(pattern), _ISO_TEMPLATE.format_map(_ISO_DEFAULTS | fields)


def _strptime(text: str, fmt: str) -> datetime:
    fixed = _fixed_format(fmt)
    match = fixed[0].fullmatch(text) if fixed is not None else None
    if fixed is None or match is None:
        return datetime.strptime(text, fmt)
    try:
        return datetime.fromisoformat(fixed[1].format(*match.groups()))
    except ValueError:  # out of range: strptime gives the verdict (and reads single digits its own way)
        return datetime.strptime(text, fmt)


def _parse(text: str, fmt: str | None) -> datetime:
    return datetime.fromisoformat(text) if fmt is None else _strptime(text, fmt)


def _date(r: _Row, field: str) -> str:
    fmt = r.spec.get("date_format")
    try:
        return _parse(r.cells[field], fmt).date().isoformat()
    except ValueError:
        raise RecordError("INVALID_DATE", f"{r.column(field)}: not a valid date in format {fmt or 'ISO 8601'}") from None


def _date_iso(r: _Row, field: str) -> date:
    try:
        return date.fromisoformat(r.cells[field])
    except ValueError:
        raise RecordError("INVALID_DATE", f"{r.column(field)}: not a valid date in format ISO 8601") from None


def _zone(r: _Row, field: str) -> ZoneInfo:
    name = r.mapping.get("timezone")
    if not name:
        raise RecordError("INVALID_DATE", f"{r.column(field)}: time without UTC offset and the mapping sets no timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecordError("INVALID_DATE", f"{r.column(field)}: the mapping's timezone is not a known IANA zone") from None


def _moment(r: _Row, field: str) -> datetime | date:
    """A datetime field: aware datetime when the format has a time, else a date."""
    fmt = r.spec.get("datetime_format")
    if fmt is None and len(r.cells[field]) == 10:  # ISO date without time: keep it a date, not midnight
        return _date_iso(r, field)
    try:
        moment = _parse(r.cells[field], fmt)
    except ValueError:
        if "date_format" not in r.spec:
            raise RecordError("INVALID_DATE", f"{r.column(field)}: not a valid date-time in format {fmt or 'ISO 8601'}") from None
        return date.fromisoformat(_date(r, field))  # a date-only value is a valid FHIR dateTime
    if fmt is not None and not _has_time(fmt):
        return moment.date()
    return moment if moment.tzinfo else moment.replace(tzinfo=_zone(r, field))


def _fhir_datetime(moment: datetime | date) -> str:
    return moment.isoformat(timespec="seconds") if isinstance(moment, datetime) else moment.isoformat()


def _number(text: str) -> int | float | None:
    if _INTEGER.fullmatch(text):
        return int(text)
    return float(text) if _DECIMAL.fullmatch(text) else None


# ---------------------------------------------------------------------------------------------------
# Builders, one per entity


def _patient(r: _Row) -> dict:
    v = r.cells
    identifiers = [{"use": "usual", "type": {"coding": [{"system": _V2_0203, "code": "MR"}]},
                    "system": mrn_system(r.hospital), "value": v["patient_id"]}]
    if v["national_id"]:
        identifiers.append({"use": "official", "type": {"coding": [{"system": _V2_0203, "code": "NI"}]},
                            "system": r.mapping.get("national_id_system") or NATIONAL_ID_SYSTEM,
                            "value": v["national_id"]})
    resource = {"resourceType": "Patient", "id": r.id("Patient", "patient_id"), "identifier": identifiers}
    name = ({"family": v["family"]} if v["family"] else {}) | ({"given": [v["given"]]} if v["given"] else {})
    if name:
        resource["name"] = [{"use": "official", **name}]
    if v["phone"]:
        resource["telecom"] = [{"system": "phone", "value": v["phone"], "use": "home"}]
    if v["sex"]:
        resource["gender"] = _lookup(r, "sex", _GENDER_SYNONYMS, v["sex"])
    if v["birth_date"]:
        resource["birthDate"] = _date(r, "birth_date")
    address = ({"line": [v["street"]]} if v["street"] else {}) | \
        {key: v[field] for key, field in (("city", "city"), ("postalCode", "postal_code")) if v[field]}
    if address:
        resource["address"] = [{"use": "home", **address}]
    return resource


def _encounter(r: _Row) -> dict:
    v = r.cells
    act = _lookup(r, "class", _CLASS_SYNONYMS, v["class"])
    start = _moment(r, "start")
    end = _moment(r, "end") if v["end"] else None
    if isinstance(start, datetime) and isinstance(end, datetime) and end < start:
        raise RecordError("INVALID_DATE", f"{r.column('end')}: before {r.column('start')}")
    period = {"start": _fhir_datetime(start)} | ({"end": _fhir_datetime(end)} if end else {})
    return {
        "resourceType": "Encounter", "id": r.id("Encounter", "encounter_id"),
        "identifier": [{"system": visit_system(r.hospital), "value": v["encounter_id"]}],
        "status": "finished" if end else "in-progress",
        "class": {"system": ACT_CODE, "code": act, "display": _CLASS_DISPLAY[act]},
        "subject": r.ref("Patient", "patient_id"),
        "period": period,
    }


def _observation_coding(r: _Row) -> dict:
    v = r.cells
    default = r.spec.get("default_code_system")
    if not v["code_system"] and not default:
        raise RecordError("MISSING_FIELD", f"{r.column('code_system')} is empty and the mapping has no default_code_system")
    kind = _lookup(r, "code_system", _CODE_SYSTEM_SYNONYMS, v["code_system"] or default or "")
    system = LOINC if kind == "loinc" else local_code_system(r.hospital, "lab")
    return {"system": system, "code": v["code"]} | ({"display": v["display"]} if v["display"] else {})


def _system(r: _Row, default: str) -> str:
    """Code system URI of a condition or immunization code: column, else the entity default."""
    name = r.cells["code_system"] or r.spec.get("default_code_system") or default
    if ":" in name:
        return name
    if name.lower() in ("local", "l"):
        return local_code_system(r.hospital, r.entity)
    uri = _SYSTEM_URIS.get(name.lower())
    if uri is None:
        raise RecordError("UNKNOWN_CODE", f"{r.column('code_system')}: not a known code system name or URI")
    return uri


def _coding(system: str, code: str, display: str | None) -> dict:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def _concept(coding: dict, terminology: Terminology) -> dict:
    """The CodeableConcept of one coding: `add_standard_codings` of it, without that function's general
    case (several codings), which cost as much again as the rest of the code element."""
    target = terminology.translate(coding["system"], coding["code"])
    if target is None or (target.system == coding["system"] and target.code == coding["code"]):
        return {"coding": [coding]}
    return {"coding": [coding, target.coding()]}


def _observation_value(r: _Row) -> dict:
    text = r.cells["value"]
    if not text:
        return {}
    number = _number(text)
    if number is None:
        return {"valueString": text}
    unit = r.cells["unit"]
    return {"valueQuantity": {"value": number, "unit": unit, "system": UCUM, "code": unit} if unit else {"value": number}}


_CATEGORIES = frozenset({"social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam",
                         "therapy", "activity"})


def _observation(r: _Row) -> dict:
    v = r.cells
    coding = _observation_coding(r)
    panel = r.extra.get(PANEL)
    if panel is not None:
        coding = {"system": LOINC, "code": panel}
        display = (r.spec["panels"].get(panel) or {}).get("display")
        coding |= {"display": display} if display else {}
    code = _concept(coding, r.terminology)
    category = v["category"].lower()
    if category not in _CATEGORIES:
        vital = any(c["system"] == LOINC and c["code"] in _VITAL_SIGNS for c in code["coding"])
        category = "vital-signs" if vital else "laboratory"
    resource = {
        "resourceType": "Observation", "id": r.id("Observation", "observation_id"), "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category}]}],
        "code": code,
        "subject": r.ref("Patient", "patient_id"),
    }
    if v["encounter_id"]:
        resource["encounter"] = r.ref("Encounter", "encounter_id")
    resource["effectiveDateTime"] = _fhir_datetime(_moment(r, "effective"))
    if panel is not None:
        resource["component"] = [_component(r, values) for values in r.components]
        return resource
    resource |= _observation_value(r)
    flag = v["flag"].upper()
    if flag:
        if flag not in _FLAGS:
            raise RecordError("UNKNOWN_CODE", f"{r.column('flag')}: not one of {sorted(_FLAGS)}")
        resource["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": flag, "display": _FLAGS[flag]}]}]
    return resource


def _component(r: _Row, raw: dict) -> dict:
    c = _Row(r.entity, _clean(r.entity, raw), r.hospital, r.spec, r.mapping, r.terminology)
    return {"code": _concept(_observation_coding(c), r.terminology)} | _observation_value(c)


def _condition(r: _Row) -> dict:
    v = r.cells
    resource: dict = {
        "resourceType": "Condition", "id": r.id("Condition", "condition_id"),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        "code": _concept(_coding(_system(r, ICD10), v["code"], v["display"]), r.terminology),
        "subject": r.ref("Patient", "patient_id"),
    }
    if v["encounter_id"]:
        resource["encounter"] = r.ref("Encounter", "encounter_id")
    if v["onset"]:
        resource["onsetDateTime"] = _fhir_datetime(_moment(r, "onset"))
    if v["abatement"]:
        resource["abatementDateTime"] = _fhir_datetime(_moment(r, "abatement"))
        resource["clinicalStatus"]["coding"][0]["code"] = "resolved"
    return resource


def _immunization(r: _Row) -> dict:
    v = r.cells
    resource = {
        "resourceType": "Immunization", "id": r.id("Immunization", "immunization_id"), "status": "completed",
        "vaccineCode": _concept(_coding(_system(r, "cvx"), v["code"], v["display"]), r.terminology),
        "patient": r.ref("Patient", "patient_id"),
        "occurrenceDateTime": _fhir_datetime(_moment(r, "occurrence")),
    }
    if v["encounter_id"]:
        resource["encounter"] = r.ref("Encounter", "encounter_id")
    return resource


_BUILDERS = {"patients": _patient, "encounters": _encounter, "observations": _observation, "conditions": _condition,
             "immunizations": _immunization}


def csv_row_to_resources(entity: str, row: dict, *, hospital: str, mapping: dict, terminology: Terminology) -> list[dict]:
    """FHIR R4 resources (one per row today) for a CSV row of `entity`, as read by `read_csv_records`.

    Raises `RecordError`: PARSE (malformed row), UNSUPPORTED (entity), MISSING_FIELD, INVALID_DATE,
    UNKNOWN_CODE (class, sex, code system, flag). Validation against FHIR is the caller's separate step.
    """
    builder = _BUILDERS.get(entity)
    spec = (mapping.get("entities") or {}).get(entity)
    if builder is None or spec is None:
        raise RecordError("UNSUPPORTED", f"CSV entity {entity if entity in ENTITIES else '(unknown)'} is not mapped")
    panel_row = COMPONENTS in row or PANEL in row
    extra = {k: row[k] for k in (COMPONENTS, PANEL) if k in row} if panel_row else None
    r = _Row(entity, _clean(entity, row), hospital, spec, mapping, terminology, extra)
    for field in REQUIRED[entity]:
        if field == ID_FIELDS[entity] and field not in spec["columns"]:
            continue  # content key
        if not r.cells[field]:
            raise RecordError("MISSING_FIELD", f"{r.column(field)} is empty")
    return [builder(r)]
