"""Per-hospital Z-segment fields -> Patient identifiers or extensions, declared in conf, not coded.

A hospital's ``hl7v2:`` block in ``conf/hospitals/<id>.yaml`` lists the fields it wants kept::

    hl7v2:
      z_segments:
        - {field: ZPI-3, target: identifier, system: "urn:oid:2.16.840.1.113883.2.4.6.3", type: PI}
        - {field: ZPI-5.2, target: extension, url: "https://hosp-b.example/fhir/StructureDefinition/tribe"}

Each repetition of the field (component 1, or the component after the dot) becomes one identifier
(``system``, optional v2-0203 ``type``) or one ``valueString`` extension (``url``) of the Patient of the
PID before the Z-segment. A Z-segment is never mapped otherwise; it stays whole in bronze either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Segment

_FIELD = re.compile(r"^(Z[A-Z0-9]{2})-([1-9][0-9]{0,2})(?:\.([1-9][0-9]?))?$")
_TARGETS = ("identifier", "extension")
_URI = re.compile(r"^(https?://|urn:)\S+$")


@dataclass(frozen=True)
class ZRule:
    segment: str
    field: int
    component: int
    target: str
    uri: str  # identifier system or extension url
    type_code: str | None = None


def z_rules(overrides: dict) -> dict[str, list[ZRule]]:
    """``overrides["z_segments"]`` checked and grouped by segment name; ValueError names what is wrong."""
    entries = overrides.get("z_segments") or []
    if not isinstance(entries, list):
        raise ValueError("hl7v2.z_segments must be a list of {field, target, system|url[, type]}")
    rules: dict[str, list[ZRule]] = {}
    for n, entry in enumerate(entries, 1):
        where = f"hl7v2.z_segments[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping")
        match = _FIELD.match(str(entry.get("field", "")).strip().upper())
        if not match:
            raise ValueError(f"{where}: 'field' must name a Z-segment field like ZPI-3 or ZPI-3.2")
        target = entry.get("target")
        if target not in _TARGETS:
            raise ValueError(f"{where}: 'target' must be one of {', '.join(_TARGETS)}")
        key = "system" if target == "identifier" else "url"
        uri = entry.get(key)
        if not isinstance(uri, str) or not _URI.match(uri):
            raise ValueError(f"{where}: '{key}' must be an absolute URI (http(s):// or urn:)")
        type_code = entry.get("type")
        if type_code is not None and (target != "identifier" or not str(type_code).isalnum()):
            raise ValueError(f"{where}: 'type' is a v2-0203 code and only for target identifier")
        segment, field, component = match.group(1), int(match.group(2)), int(match.group(3) or 1)
        rules.setdefault(segment, []).append(ZRule(segment, field, component, target, uri, type_code))
    return rules


def apply(ctx: Context, seg: Segment, rules: list[ZRule]) -> None:
    """Add the configured fields of one Z-segment to the current Patient."""
    patient_id = ctx.patient_ref.partition("/")[2] if ctx.patient_ref else None
    patient = next((r for r in ctx.resources if r["resourceType"] == "Patient" and r["id"] == patient_id), None)
    if patient is None:
        return
    for rule in rules:
        for rep in seg.field(rule.field).repetitions:
            value = rep.component(rule.component).strip()
            if not value:
                continue
            if rule.target == "identifier":
                ident: dict = {"system": rule.uri, "value": value}
                if rule.type_code:
                    ident["type"] = {"coding": [{"system": vocab.V2_0203, "code": str(rule.type_code)}]}
                if ident not in patient.setdefault("identifier", []):
                    patient["identifier"].append(ident)
            else:
                extension = {"url": rule.uri, "valueString": value}
                if extension not in patient.setdefault("extension", []):
                    patient["extension"].append(extension)
