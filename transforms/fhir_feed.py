"""FHIR R4 NDJSON (bulk export) lines -> FHIR R4 resources with carelake's deterministic ids.

Id rule, the same for every resource type and stateless per line:

    new id = resource_id(hospital, resourceType, original id)
    "Type/<original id>" references -> "Type/" + resource_id(hospital, Type, original id)

Why not take a Patient's id from its MRN identifier: an Observation line only carries
``Patient/<original id>``, so deriving the Patient's id from anything else would need a lookup across
lines (and files) to rewrite the reference. The stateless rule always keeps references consistent within
a hospital's export. It lines up with the CSV and HL7 v2 feeds of the same hospital exactly when the export
uses the MRN as ``Patient.id`` and the visit number as ``Encounter.id``, which is what `carelake.synth`
writes. Exports with server-assigned ids (UUIDs) get their own hospital-namespaced ids; records of the
same patient from other feeds then meet through person linkage (MRN and national id identifiers), not
through equal resource ids.

References left as they are: absolute URLs (another server), contained (``#...``), and conditional
references (``Patient?identifier=...``), which need a lookup this line-by-line mapper does not do.

Codes: local codings of Observation.code and Condition.code get the standard coding from the terminology
map added next to them (the local coding stays); unmapped local codes are kept as they are.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache

from transforms import fastjson
from transforms.errors import RecordError
from transforms.fast_validate import common_datetime
from transforms.ids import resource_id
from transforms.terminology import Terminology

__all__ = ["fhir_json_to_resources", "add_standard_codings", "SUPPORTED_TYPES"]

#: Resource types this feed maps (the silver tables of the design).
SUPPORTED_TYPES = frozenset({
    "Patient", "Encounter", "Observation", "Condition", "Procedure", "MedicationRequest", "Immunization",
    "AllergyIntolerance", "DiagnosticReport",
})
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
_RELATIVE_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Elements of date, dateTime or instant type in the supported resources (including Period.start/end).
_DATE_ELEMENTS = frozenset({
    "birthDate", "deceasedDateTime", "start", "end", "effectiveDateTime", "effectiveInstant", "issued",
    "onsetDateTime", "abatementDateTime", "recordedDate", "authoredOn", "occurrenceDateTime",
    "performedDateTime", "lastOccurrence", "date", "recorded", "expirationDate", "valueDateTime",
})
_WATCHED_KEYS = _DATE_ELEMENTS | {"reference"}
_DATE_SHAPE = re.compile(
    r"(?P<date>\d{4}(-\d{2}(-\d{2})?)?)"
    r"(T(?P<time>\d{2}:\d{2}:\d{2}(\.\d+)?)(?P<tz>Z|[+-]\d{2}:\d{2}))?"
)
_CODED_ELEMENTS = {"Observation": ("code",), "Condition": ("code",)}


def add_standard_codings(concept: dict, terminology: Terminology) -> dict:
    """`concept` (a CodeableConcept) with the standard coding of each mapped local coding appended.

    Returns a new dict; codings already present are not repeated, unmapped codings stay as they are.
    """
    codings = list(concept.get("coding") or [])
    present = {(c.get("system"), c.get("code")) for c in codings}
    for coding in list(codings):
        target = terminology.translate(coding.get("system"), coding.get("code"))
        if target is not None and (target.system, target.code) not in present:
            codings.append(target.coding())
            present.add((target.system, target.code))
    return {**concept, "coding": codings}


def _parse(text: str) -> dict:
    try:
        resource = fastjson.loads(text)
    except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        raise RecordError("PARSE", "line is not valid JSON") from None
    if not isinstance(resource, dict):
        raise RecordError("PARSE", "line is not a JSON object")
    if not isinstance(resource.get("resourceType"), str):
        raise RecordError("PARSE", "line has no resourceType")
    return resource


def _check_type(resource_type: str) -> None:
    if resource_type not in SUPPORTED_TYPES:
        # A type name is schema, not data, but only echo it when it looks like one.
        shown = resource_type if _TYPE_NAME.fullmatch(resource_type) else "(malformed)"
        raise RecordError("UNSUPPORTED", f"resourceType {shown} is not mapped by the FHIR feed")


@lru_cache(maxsize=16_384)  # a patient's resources all point at the same Patient and Encounter
def _rewrite_reference(reference: str, hospital: str) -> str:
    match = _RELATIVE_REFERENCE.fullmatch(reference)
    if match is None:
        return reference
    target_type, target_id = match.group(1), match.group(2)
    return f"{target_type}/{resource_id(hospital, target_type, target_id)}"


class _BadDate(Exception):
    """An impossible date element; `keys` is its path from the innermost key outwards."""

    def __init__(self, key: str):
        super().__init__(key)
        self.keys = [key]


def _convert(node, hospital: str):
    """A copy of `node` (parsed JSON) with every relative ``reference`` rewritten to carelake ids.

    Also checks the date elements on the same walk (one pass over the tree instead of two): raises
    `_BadDate` at the first impossible one in document order, before anything is returned.
    """
    if type(node) is dict:
        out = {}
        for key, value in node.items():
            kind = type(value)
            if kind is str:
                if key in _DATE_ELEMENTS and not _valid_date(value):
                    raise _BadDate(key)
                out[key] = _rewrite_reference(value, hospital) if key == "reference" else value
            elif kind is dict or kind is list:
                try:
                    out[key] = _convert(value, hospital)
                except _BadDate as bad:
                    bad.keys.append(key)
                    raise
            else:
                out[key] = value
        return out
    return [_convert(item, hospital) if type(item) is dict or type(item) is list else item for item in node]


def _convert_in_place(resource: dict, hospital: str) -> dict:
    """`_convert`'s work done on a freshly parsed resource, which nobody else holds, so no copy: every
    relative ``reference`` rewritten, every date element checked. Iterative, so nesting that the parser
    took cannot overflow the stack here. It cannot name the path of an impossible date, so it gives up
    (`_BadDate`, the tree half rewritten) and the caller parses again and takes the `_convert` path.
    """
    stack: list = [resource]  # of any JSON value
    pop, extend = stack.pop, stack.extend
    rewrite, disjoint = _rewrite_reference, _WATCHED_KEYS.isdisjoint
    while stack:
        node = pop()
        if type(node) is dict:
            if not disjoint(node):  # one test for the many dicts (codings, quantities) with nothing to do
                reference = node.get("reference")
                if type(reference) is str:
                    node["reference"] = rewrite(reference, hospital)
                for key in _DATE_ELEMENTS.intersection(node):
                    value = node[key]
                    if type(value) is str and not _valid_date(value):
                        raise _BadDate(key)
            extend(node.values())
        elif type(node) is list:
            extend(node)
    return resource


def _valid_date(text: str) -> bool:
    if common_datetime(text):  # a subset of what the checks below accept, found without parsing
        return True
    match = _DATE_SHAPE.fullmatch(text)
    if match is None:
        return False
    day = match.group("date")
    try:
        if len(day) == 10:
            date.fromisoformat(day)
        elif len(day) == 7 and not 1 <= int(day[5:]) <= 12:
            return False
        if match.group("time"):
            datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def fhir_json_to_resources(text: str, *, hospital: str, terminology: Terminology) -> list[dict]:
    """Map one NDJSON line (one resource) to the resources to store: today always exactly one.

    Raises `RecordError`: PARSE (not JSON, not an object, no resourceType), UNSUPPORTED (resource type),
    MISSING_FIELD (no usable id), INVALID_DATE. Validation against FHIR is the caller's separate step.
    The input is never modified.
    """
    try:
        converted = _convert_in_place(_parse(text), hospital)  # rewritten and date-checked
    except _BadDate:
        converted = None  # the path below names the element (and checks type and id first)
    resource = converted if converted is not None else _parse(text)
    resource_type = resource["resourceType"]
    _check_type(resource_type)
    original_id = resource.get("id")
    if not isinstance(original_id, str) or not _FHIR_ID.fullmatch(original_id):
        raise RecordError("MISSING_FIELD", f"{resource_type}.id is missing or not a FHIR id")
    if converted is not None:
        out = converted
    else:
        try:
            out = _convert(resource, hospital)
        except _BadDate as bad:
            path = ".".join([resource_type, *reversed(bad.keys)])
            raise RecordError("INVALID_DATE", f"{path} is not a valid FHIR date/dateTime") from None
    out["id"] = resource_id(hospital, resource_type, original_id)
    for element in _CODED_ELEMENTS.get(resource_type, ()):
        if isinstance(out.get(element), dict):
            out[element] = add_standard_codings(out[element], terminology)
    return [out]
