"""HL7 v2 data types -> FHIR data types (IG datatype maps DTM, CWE, CX, XPN, XAD, XTN, NM).

Each function takes a `Repetition` (or a string) and returns a FHIR dict or None when the source is
empty. Reasons of the `RecordError`s raised here name the field (``PID-7``), never the value.

Date-times: FHIR requires a time zone on any value with a time. A DTM with an offset keeps its full
precision (minutes-only times get ``:00`` seconds, as FHIR requires seconds); a DTM without an offset
uses the hospital's configured offset (overrides ``{"timezone": "+08:00"}``) when there is one, and is
otherwise truncated to its date, since inventing a zone would shift the instant by hours.
"""

from __future__ import annotations

import calendar
import re
import typing
from functools import lru_cache
from urllib.parse import quote

from transforms.errors import RecordError
from transforms.hl7v2 import vocab
from transforms.hl7v2.parse import Repetition
from transforms.systems import local_code_system
from transforms.terminology import Terminology

__all__ = [
    "fhir_datetime", "fhir_date", "fhir_instant", "fhir_time", "decimal", "code",
    "system_uri", "codeable_concept", "identifier", "ei_system", "authority_system", "human_name", "human_names",
    "address",
    "contact_point", "quantity_unit",
]

_DIGITS = frozenset("0123456789")
_DECIMAL_CHARS = _DIGITS | {"."}  # an OID's characters


def _invalid(field: str) -> RecordError:
    return RecordError("INVALID_DATE", f"{field} is not a valid HL7 date/time")


#: Last day (DD) of each month (MM) in a common year; February of a leap year has a 29th.
_LAST_DAY = {f"{m:02d}": f"{d:02d}" for m, d in enumerate((31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), 1)}


# YYYY[MM[DD[HH[MM[SS]]]]][.S+][+/-ZZZZ] in ASCII digits ([0-9]: other scripts' digits are no DTM), each
# part its own group. Timestamps are nearly all distinct, so this runs for most values: one C-level match
# instead of a dozen string operations. The ranges, and the rule that a fraction needs all six parts, are
# checked after it.
_DTM_SHAPE = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2}))?)?)?)?)?"
    r"(?:\.([0-9]+))?(?:([+-])([0-9]{2})([0-9]{2}))?"
)


def _read_dtm(value: str) -> tuple[tuple[str, ...], str, str | None] | None:
    """-> ((YYYY, MM, DD, hh, mm, ss) present parts, fraction, offset '+hh:mm' or None); None when
    `value` is not a valid DTM (the caller raises, naming its field)."""
    match = _DTM_SHAPE.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, tz_hh, tz_mm = match.groups()
    # Every part is ASCII digits of a fixed width, so comparing the text compares the numbers.
    if fraction is not None and second is None:
        return None
    if sign is not None and (tz_hh > "14" or tz_mm > "59" or (tz_hh == "14" and tz_mm != "00")):
        return None
    if year == "0000":
        return None
    if month is None:
        return (year,), "", None if sign is None else f"{sign}{tz_hh}:{tz_mm}"
    if not "01" <= month <= "12":
        return None
    if day is not None:
        last_day = "29" if month == "02" and calendar.isleap(int(year)) else _LAST_DAY[month]
        if not "01" <= day <= last_day or (hour is not None and hour > "23") \
                or (minute is not None and minute > "59") or (second is not None and second > "59"):
            return None
    parts: tuple = (year, month, day, hour, minute, second)
    if second is None:
        parts = parts[:parts.index(None)]
    return parts, fraction or "", None if sign is None else f"{sign}{tz_hh}:{tz_mm}"


# Memoised: a patient's dates (birth, admission) recur across messages. The keys are date strings, which
# may be PHI (a birth date): the cache is bounded, lives in this process's memory only, and is never
# logged or written anywhere.
_dtm = lru_cache(maxsize=8192)(_read_dtm)


def _parse_dtm(value: str, field: str) -> tuple[tuple[str, ...], str, str | None]:
    """-> ((YYYY, MM, DD, hh, mm, ss) present parts, fraction, offset '+hh:mm' or None)."""
    parsed = _dtm(value)
    if parsed is None:
        raise _invalid(field)
    return parsed


def _date_part(parts: tuple[str, ...]) -> str:
    return "-".join(parts[:3])


def _format_datetime(parsed: tuple[tuple[str, ...], str, str | None], tz: str | None) -> str:
    parts, fraction, offset = parsed
    if len(parts) <= 3:
        return _date_part(parts)
    offset = offset or tz
    if offset is None:
        return _date_part(parts)
    hh, mm, ss = (parts + ("00", "00"))[3:6]
    frac = f".{fraction}" if fraction else ""
    return f"{_date_part(parts)}T{hh}:{mm}:{ss}{frac}{offset}"


#: `_datetime`'s answer for a value that is not a DTM (the caller raises, naming its field).
_INVALID = object()


# Memoised: one message repeats its timestamps (MSH-7, EVN-2, OBR-7, PV1-44 of each PV1). Same keys as
# `_dtm` (plus the hospital's offset): bounded, memory only, PHI-safe.
@lru_cache(maxsize=8192)
def _datetime(value: str, tz: str | None) -> str | object:
    parsed = _read_dtm(value)  # not `_dtm`: a value new here is nearly always new there too
    return _INVALID if parsed is None else _format_datetime(parsed, tz)


def fhir_datetime(value: str, field: str, tz: str | None = None) -> str | None:
    """A v2 DTM/TS value as a FHIR dateTime with the same precision (see the module docstring)."""
    if not value or not value.strip():
        return None
    if tz is None or type(tz) is str:
        out = _datetime(value, tz)
        if out is _INVALID:
            raise _invalid(field)
        return typing.cast("str | None", out)
    return _format_datetime(_parse_dtm(value, field), tz)  # an offset that is not text: not memoised


def fhir_date(value: str, field: str) -> str | None:
    """A v2 DTM as a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD); any time part is dropped."""
    if not value or not value.strip():
        return None
    parts, _, _ = _parse_dtm(value, field)
    return _date_part(parts)


def fhir_instant(value: str, field: str, tz: str | None = None) -> str | None:
    """A FHIR instant when the value is precise to the second and has a zone, else None."""
    if not value or not value.strip():
        return None
    parts, _, offset = _parse_dtm(value, field)
    # Hour or minute precision is padded with zero seconds, as for dateTime; a date is no instant.
    if len(parts) < 4 or not (offset or tz):
        return None
    return fhir_datetime(value, field, tz)


def fhir_time(value: str, field: str) -> str | None:
    """A v2 TM (HH[MM[SS[.S]]][+ZZZZ]) as a FHIR time hh:mm:ss; the offset is dropped (FHIR time has none)."""
    v = value.strip()
    if not v:
        return None
    cut = max(v.rfind("+"), v.rfind("-"))
    if cut > 0:
        v = v[:cut]
    frac = ""
    if "." in v:
        v, frac = v.split(".", 1)
        if not frac or not set(frac) <= _DIGITS:
            raise _invalid(field)
    if len(v) not in (2, 4, 6) or not set(v) <= _DIGITS:
        raise _invalid(field)
    hh, mm, ss = (v[0:2], v[2:4] or "00", v[4:6] or "00")
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        raise _invalid(field)
    return f"{hh}:{mm}:{ss}" + (f".{frac}" if frac else "")


#: A plain decimal in ASCII digits, an optional "+" dropped: [+][-]digits[.digits] or [+][-].digits.
_DECIMAL = re.compile(r"\+?(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+))")


def decimal(text: str) -> int | float | None:
    """An NM value as a JSON number, or None when it is not a plain decimal (``<5``, ``pos``)."""
    match = _DECIMAL.fullmatch(text.strip())  # one C-level match: this runs for every numeric OBX
    if match is None:
        return None
    t = match.group(1)
    return float(t) if "." in t else int(t)


def code(text: str) -> str | None:
    """A FHIR code: trimmed, inner white space collapsed (codes may not carry double spaces)."""
    out = " ".join(text.split())
    return out or None


# Memoised: a feed names a handful of coding systems, each on every CWE it sends. Keys are what the
# sender put in CWE.3 (structural, but free text from an unknown sender): bounded, memory only.
@lru_cache(maxsize=2048)
def system_uri(name: str, hospital: str, kind: str) -> str:
    """FHIR system of a CWE coding-system name; local and unknown names become hospital-local systems."""
    name = name.strip()
    if not name or vocab.is_local_system(name):
        return local_code_system(hospital, kind)
    known = vocab.CODE_SYSTEMS.get(name.upper()) or vocab.hl7_table_system(name)
    if known:
        return known
    if set(name) <= _DECIMAL_CHARS and "." in name:
        return f"urn:oid:{name}"
    if name.startswith(("http://", "https://", "urn:")) and not any(c.isspace() for c in name):
        return name
    return local_code_system(hospital, f"{kind}:{quote(name, safe='')}")


def _coding(code_text: str, display: str, system_name: str, version: str, hospital: str, kind: str) -> dict | None:
    c = code(code_text)
    if not c:
        return None
    out: dict = {"system": system_uri(system_name, hospital, kind), "code": c}
    if display.strip():
        out["display"] = display.strip()
    if version.strip():
        out["version"] = version.strip()
    return out


def codeable_concept(
    rep: Repetition | None, hospital: str, kind: str, terminology: Terminology | None = None,
) -> dict | None:
    """CWE/CE/CNE -> CodeableConcept: up to three codings and the original text (CWE.9).

    A coding in a hospital-local system is looked up in the terminology map; the standard coding it
    maps to is added after it, and an unmapped local code is kept as it is.
    """
    if rep is None or not rep:
        return None
    comps = rep.padded(13)
    codings = []
    for c, d, s, v in _CWE_TRIPLETS:
        # An empty code makes no coding (`_coding` says None): most CWEs send only the first triplet.
        if comps[c] and (coding := _coding(comps[c], comps[d], comps[s], comps[v], hospital, kind)) \
                and coding not in codings:
            codings.append(coding)
    if terminology is not None:
        local_prefix = f"urn:carelake:{hospital}:"
        for coding in list(codings):
            if coding["system"].startswith(local_prefix):
                concept = terminology.translate(coding["system"], coding["code"])
                if concept is not None:
                    mapped = concept.coding()
                    if not any(x["system"] == mapped["system"] and x["code"] == mapped["code"] for x in codings):
                        codings.append(mapped)
    out: dict = {}
    if codings:
        out["coding"] = codings
    text = comps[8].strip() or ("" if codings else comps[1].strip())
    if text:
        out["text"] = text
    return out or None


#: CWE components (0-based) of each coding: identifier, text, coding system, system version.
_CWE_TRIPLETS = ((0, 1, 2, 6), (3, 4, 5, 7), (9, 10, 11, 12))


def authority_system(rep: Repetition, comp: int, hospital: str) -> str | None:
    """System URI from an HD assigning authority: OID/UUID/URI when given, else the namespace id."""
    namespace = rep.component(comp, 1).strip()
    universal = rep.component(comp, 2).strip()
    kind = rep.component(comp, 3).strip().upper()
    if universal and not any(ch.isspace() for ch in universal):
        if kind == "ISO" or (set(universal) <= _DECIMAL_CHARS and "." in universal):
            return f"urn:oid:{universal}"
        if kind == "UUID":
            return f"urn:uuid:{universal.lower()}"
        if kind in ("URI", "URL", "DNS") and ":" in universal:
            return universal
    if namespace:
        return local_code_system(hospital, "id:" + quote(namespace, safe=""))
    if universal:
        return local_code_system(hospital, "id:" + quote(universal, safe=""))
    return None


def ei_system(rep: Repetition, hospital: str) -> str | None:
    """System URI of an EI: an ISO OID (EI.3/EI.4), else the hospital-local namespace (EI.2)."""
    # EI carries its authority as components 2-4 (namespace, universal id, type), not as an HD.
    return _ei_system(rep.component(2), rep.component(3), rep.component(4), hospital)


# Memoised: every order number of a feed names the same assigning authority (ORC-2/3, OBR-2/3, twice
# per order for the ServiceRequest and the DiagnosticReport). Keys are authority names: structural,
# bounded, memory only.
@lru_cache(maxsize=1024)
def _ei_system(namespace: str, universal: str, kind: str, hospital: str) -> str | None:
    namespace, universal, kind = namespace.strip(), universal.strip(), kind.strip().upper()
    if universal and kind == "ISO" and set(universal) <= _DECIMAL_CHARS:
        return f"urn:oid:{universal}"
    if namespace:
        return local_code_system(hospital, "id:" + quote(namespace, safe=""))
    return None


def identifier(rep: Repetition, hospital: str, *, system: str | None = None, type_code: str | None = None) -> dict | None:
    """CX -> Identifier (value, system from the assigning authority unless given, type from CX.5)."""
    value = rep.component(1).strip()
    if not value:
        return None
    out: dict = {"value": value}
    sys_uri = system or authority_system(rep, 4, hospital)
    if sys_uri:
        out["system"] = sys_uri
    t = code(type_code if type_code is not None else rep.component(5))
    if t:
        out["type"] = {"coding": [{"system": vocab.V2_0203, "code": t}]}
    return out


def human_names(reps: list[Repetition]) -> list[dict]:
    """XPN repetitions -> HumanNames; XPN.15 "called by" becomes a separate nickname (IG XPN map)."""
    out = []
    for rep in reps:
        name = human_name(rep)
        if name:
            out.append(name)
        called_by = rep.component(15).strip()
        if called_by:
            out.append({"use": "nickname", "given": [called_by]})
    return out


def human_name(rep: Repetition) -> dict | None:
    """XPN -> HumanName (family from FN.1, given from XPN.2/3, prefix, suffixes, use)."""
    out: dict = {}
    comps = rep.padded(7)
    family = comps[0].strip()  # FN.1: sub-component 1 of component 1
    if family:
        out["family"] = family
    given = [g for g in (comps[1].strip(), comps[2].strip()) if g]
    if given:
        out["given"] = given
    prefix = comps[4].strip()
    if prefix:
        out["prefix"] = [prefix]
    suffix = [s for s in (comps[3].strip(), comps[5].strip()) if s]
    if suffix:
        out["suffix"] = suffix
    if not out:
        return None
    use = vocab.NAME_USE.get(comps[6].strip().upper())
    if use:
        out["use"] = use
    return out


#: XAD components (0-based) -> Address elements, in the order they are written.
_XAD_PARTS = ((2, "city"), (8, "district"), (3, "state"), (4, "postalCode"), (5, "country"))


def address(rep: Repetition, tz: str | None = None) -> dict | None:
    """XAD -> Address (IG XAD[Address]): lines are the street (SAD.1-3), other designation (XAD.2)
    and addressee (XAD.19); the validity period is XAD.13/14, else the v2.5 range XAD.12."""
    out: dict = {}
    comps = rep.padded(19)
    street = [rep.component(1, i).strip() for i in (1, 2, 3)]
    lines = [x for x in (*street, comps[1].strip(), comps[18].strip()) if x]
    if lines:
        out["line"] = lines
    for comp, key in _XAD_PARTS:
        value = comps[comp].strip()
        if value:
            out[key] = value
    if not out:
        return None
    kind = comps[6].strip().upper()
    if kind in vocab.ADDRESS_USE:
        out["use"] = vocab.ADDRESS_USE[kind]
    if kind in vocab.ADDRESS_TYPE:
        out["type"] = vocab.ADDRESS_TYPE[kind]
    try:
        start = fhir_datetime(comps[12], "XAD-13", tz) or fhir_datetime(rep.component(12, 1), "XAD-12", tz)
        end = fhir_datetime(comps[13], "XAD-14", tz) or fhir_datetime(rep.component(12, 2), "XAD-12", tz)
    except RecordError:
        start = end = None  # a bad validity date of an address is not worth losing the message for
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        out["period"] = period
    return out


def _xtn_value(comps: list[str], equipment: str) -> str:
    """ContactPoint.value per IG XTN[ContactPoint]: XTN.4 for Internet/X.400; otherwise XTN.12, else
    the number composed of XTN.5-8 (``+country area local Xext``), else XTN.1.
    ``comps``: the XTN's components (`Repetition.padded`), 0-based."""
    if equipment in ("INTERNET", "X.400"):
        return comps[3].strip()
    unformatted = comps[11].strip()
    if unformatted:
        return unformatted
    local = comps[6].strip()
    if local:
        # The IG composes only when XTN.6 is valued; a local number alone is still the number to dial.
        area, country, ext = comps[5].strip(), comps[4].strip(), comps[7].strip()
        value = " ".join(x for x in (f"+{country}" if country and area else "", area, local) if x)
        return value + (f" X{ext}" if ext else "")
    return comps[0].strip()


#: XTN.5-8 -> the standard ContactPoint extensions (IG XTN[ContactPoint] extension[1..4]).
_XTN_PARTS = ((5, "country"), (6, "area"), (7, "local"), (8, "extension"))


def contact_point(rep: Repetition, default_use: str | None = None, tz: str | None = None) -> dict | None:
    """XTN -> ContactPoint (IG XTN[ContactPoint]).

    Without XTN.3 a value with ``@`` is an email and any other value a phone; with neither XTN.3 nor a
    value the system is said absent (the IG's data-absent-reason), so that a contact point sent only as
    an area code, a preference order or a use is kept rather than lost. None when XTN says nothing.
    """
    comps = rep.padded(18)
    equipment = comps[2].strip().upper()
    value = _xtn_value(comps, equipment)
    if not value and not equipment and comps[3].strip():
        value, equipment = comps[3].strip(), "INTERNET"
    out: dict = {}
    parts = () if equipment in ("INTERNET", "X.400") else _XTN_PARTS  # an e-mail has no phone parts
    extensions = [{"url": f"http://hl7.org/fhir/StructureDefinition/contactpoint-{name}",
                   "valueString": comps[comp - 1].strip()} for comp, name in parts if comps[comp - 1].strip()]
    if extensions:
        out["extension"] = extensions
    if value:
        out["system"] = vocab.TELECOM_SYSTEM.get(equipment) or ("email" if "@" in value else "phone")
        out["value"] = value
    elif equipment in vocab.TELECOM_SYSTEM:
        out["system"] = vocab.TELECOM_SYSTEM[equipment]
    use_code = comps[1].strip().upper()
    use = vocab.TELECOM_USE.get(use_code) or ("mobile" if equipment == "CP" else None)
    if use:
        out["use"] = use
    try:
        start = fhir_datetime(comps[12], "XTN-13", tz)
        end = fhir_datetime(comps[13], "XTN-14", tz)
    except RecordError:
        start = end = None  # a bad validity date of a phone number is not worth losing the message for
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        out["period"] = period
    rank = comps[17].strip()
    if rank.isdigit() and int(rank) > 0:  # rank is a positiveInt: 0 or a negative order says nothing valid
        out["rank"] = int(rank)
    if not out:
        return None
    if "system" not in out:
        out["_system"] = {"extension": [{"url": vocab.DATA_ABSENT_EXT, "valueCode": "unknown"}]}
    if use is None and not use_code and default_use:
        out["use"] = default_use
    return out


def quantity_unit(rep: Repetition | None) -> dict:
    """OBX-6 (CWE units) -> the unit/system/code part of a Quantity; UCUM only when the sender says so."""
    if rep is None or not rep:
        return {}
    unit_code = code(rep.component(1))
    text = rep.component(2).strip()
    system = rep.component(3).strip().upper()
    out: dict = {}
    if text or unit_code:
        out["unit"] = text or unit_code
    if unit_code and system in ("UCUM", "ANS+"):
        out["system"] = vocab.UCUM
        out["code"] = unit_code
    return out
