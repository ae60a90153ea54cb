"""What the evaluator knows of the FHIR type system without loading StructureDefinitions.

Resources arrive as parsed JSON, so a value's FHIR type is mostly unknown. Two sources recover it:
the suffix of a choice element (``valueQuantity`` is a Quantity, ``deceasedBoolean`` a boolean), which
the compiler uses to turn ``value.ofType(Quantity)`` into a direct key lookup, and the JSON shape of a
primitive (str, int, float, bool), which is enough for the string/number/boolean checks that views make.
"""

from __future__ import annotations

import calendar
import re
from decimal import Decimal

__all__ = [
    "PRIMITIVE_TYPES", "COMPLEX_TYPES", "choice_keys", "type_key_suffix", "normalize_type",
    "matches_type", "date_kind", "low_boundary", "high_boundary", "compare_temporal",
]

#: FHIR primitive types (lower-case in FHIRPath, capitalized as a choice suffix).
PRIMITIVE_TYPES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "integer64", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url",
    "uuid", "xhtml",
})

#: FHIR complex data types that can appear as the type of a choice element ([x]).
COMPLEX_TYPES = frozenset({
    "Address", "Age", "Annotation", "Attachment", "Availability", "CodeableConcept", "CodeableReference",
    "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance",
    "Dosage", "Duration", "Expression", "ExtendedContactDetail", "HumanName", "Identifier", "Meta",
    "Money", "MonetaryComponent", "ParameterDefinition", "Period", "Quantity", "Range", "Ratio",
    "RatioRange", "Reference", "RelatedArtifact", "SampledData", "Signature", "Timing",
    "TriggerDefinition", "UsageContext", "VirtualServiceDetail",
})

_STRING_TYPES = frozenset({
    "string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary", "xhtml",
    "date", "dateTime", "instant", "time",
})
_SYSTEM_TYPES = {
    "String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal",
    "Date": "date", "DateTime": "dateTime", "Time": "time", "Quantity": "Quantity",
}


def type_key_suffix(type_name: str) -> str:
    """The suffix a choice element takes for this type: ``dateTime`` -> ``DateTime``."""
    return type_name[:1].upper() + type_name[1:]


_SUFFIXES = frozenset(type_key_suffix(t) for t in PRIMITIVE_TYPES | COMPLEX_TYPES)


def choice_keys(name: str) -> frozenset[str]:
    """Every JSON key a choice element named `name` may appear under (``value`` -> ``valueString``, ...)."""
    return frozenset(name + s for s in _SUFFIXES)


def normalize_type(type_name: str) -> str:
    """Strip a ``FHIR.`` / ``System.`` namespace and map System types to their FHIR spelling."""
    if type_name.startswith("FHIR."):
        return type_name[5:]
    if type_name.startswith("System."):
        return _SYSTEM_TYPES.get(type_name[7:], type_name[7:])
    return type_name


def matches_type(value, type_name: str) -> bool:
    """Whether a JSON value of unknown declared type can be of FHIR type `type_name`."""
    t = type(value)
    if t is bool:
        return type_name in ("boolean", "Boolean")
    if t is int:
        return type_name in ("integer", "positiveInt", "unsignedInt", "integer64", "decimal", "Integer", "Decimal")
    if t is float or t is Decimal:
        return type_name in ("decimal", "Decimal")
    if t is str:
        if type_name in ("String", "Date", "DateTime", "Time"):
            type_name = _SYSTEM_TYPES[type_name]
        if type_name in ("date", "dateTime", "instant", "time"):
            kind = date_kind(value)
            return kind == type_name or (kind == "date" and type_name == "dateTime") or (
                kind == "dateTime" and type_name == "instant")
        return type_name in _STRING_TYPES
    if t is dict:
        rtype = value.get("resourceType")
        if rtype is not None:
            return type_name in (rtype, "Resource", "DomainResource")
        # An element of unknown complex type: accept any complex type name rather than drop data.
        return type_name[:1].isupper() and type_name not in _SYSTEM_TYPES
    return False


# -- dates, times and their boundaries ----------------------------------------------------------------
_DATE_RX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME_RX = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?T(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?(Z|[+-]\d{2}:\d{2})?$")
_TIME_RX = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def date_kind(value: str) -> str | None:
    """``date``, ``dateTime`` or ``time`` for text shaped like one, else None."""
    if _DATE_RX.match(value):
        return "date"
    if "T" in value and _DATETIME_RX.match(value):
        return "dateTime"
    if ":" in value and _TIME_RX.match(value):
        return "time"
    return None


def _decimal_places(value) -> int:
    text = repr(value) if isinstance(value, float) else str(value)
    if "e" in text or "E" in text:
        return max(0, -Decimal(text).as_tuple().exponent)
    return len(text.split(".")[1]) if "." in text else 0


def _decimal_boundary(value, sign: int, precision: int | None):
    places = _decimal_places(value)
    d = Decimal(repr(value) if isinstance(value, float) else str(value))
    result = d + sign * Decimal(5) * Decimal(10) ** -(places + 1)
    if precision is not None:
        result = result.quantize(Decimal(10) ** -precision)
    return float(result)


def _date_parts(value: str):
    m = _DATE_RX.match(value)
    return m.groups() if m else None


def _date_boundary(value: str, high: bool) -> str | None:
    parts = _date_parts(value)
    if parts is None:
        return None
    year, month, day = parts
    if month is None:
        month = "12" if high else "01"
    if day is None:
        day = f"{calendar.monthrange(int(year), int(month))[1]:02d}" if high else "01"
    return f"{year}-{month}-{day}"


def _time_boundary(hh, mm, ss, frac, high: bool) -> str:
    mm = mm or ("59" if high else "00")
    ss = ss or ("59" if high else "00")
    if frac is None:
        frac = "999" if high else "000"
    else:
        frac = (frac + ("9" if high else "0") * 3)[:3] if len(frac) < 3 else frac
    return f"{hh}:{mm}:{ss}.{frac}"


def _datetime_boundary(value: str, high: bool) -> str | None:
    m = _DATETIME_RX.match(value) if "T" in value else None
    if m is None:
        date = _date_boundary(value, high)
        if date is None:
            return None
        hh, mm, ss, frac, tz = None, None, None, None, None
    else:
        y, mo, d, hh, mm, ss, frac, tz = m.groups()
        date = _date_boundary("-".join(p for p in (y, mo, d) if p), high)
    if hh is None:
        hh = "23" if high else "00"
    # An unknown offset could be anywhere from +14:00 to -12:00; the boundary takes the extreme.
    tz = tz or ("-12:00" if high else "+14:00")
    return f"{date}T{_time_boundary(hh, mm, ss, frac, high)}{tz}"


def _boundary(value, type_hint: str | None, precision: int | None, high: bool):
    sign = 1 if high else -1
    t = type(value)
    if t is bool:
        return None
    if t is int:
        if type_hint in ("integer", "positiveInt", "unsignedInt", "integer64"):
            return value
        return _decimal_boundary(value, sign, precision)
    if t is float or t is Decimal:
        return _decimal_boundary(value, sign, precision)
    if t is str:
        kind = type_hint if type_hint in ("date", "dateTime", "instant", "time") else date_kind(value)
        if kind == "date":
            return _date_boundary(value, high)
        if kind in ("dateTime", "instant"):
            return _datetime_boundary(value, high)
        if kind == "time":
            m = _TIME_RX.match(value)
            return _time_boundary(*m.groups(), high) if m else None
        return None
    if t is dict:
        if "start" in value or "end" in value:  # Period
            bound = value.get("end" if high else "start")
            return _datetime_boundary(bound, high) if isinstance(bound, str) else None
        if "value" in value:  # Quantity: the boundary of its value, keeping the unit
            inner = _boundary(value["value"], "decimal", precision, high)
            return None if inner is None else {**value, "value": inner}
    return None


def low_boundary(value, type_hint: str | None = None, precision: int | None = None):
    """The least value `value` may stand for given its precision (FHIRPath ``lowBoundary()``)."""
    return _boundary(value, type_hint, precision, high=False)


def high_boundary(value, type_hint: str | None = None, precision: int | None = None):
    """The greatest value `value` may stand for given its precision (FHIRPath ``highBoundary()``)."""
    return _boundary(value, type_hint, precision, high=True)


def _temporal_key(value: str):
    """(kind, components, tz minutes or None) for date/dateTime/time text, else None."""
    m = _DATE_RX.match(value)
    if m:
        return "dt", [int(p) for p in m.groups() if p is not None], None
    m = _DATETIME_RX.match(value) if "T" in value else None
    if m:
        y, mo, d, hh, mm, ss, frac, tz = m.groups()
        parts = [int(p) for p in (y, mo, d, hh, mm) if p is not None]
        if ss is not None:
            parts.append(float(f"{ss}.{frac or 0}"))
        offset = None
        if tz:
            offset = 0 if tz == "Z" else (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 60 + int(tz[4:6]))
        return "dt", parts, offset
    m = _TIME_RX.match(value) if ":" in value else None
    if m:
        hh, mm, ss, frac = m.groups()
        parts = [int(hh)] + ([int(mm)] if mm else [])
        if ss is not None:
            parts.append(float(f"{ss}.{frac or 0}"))
        return "t", parts, None
    return None


def _to_utc(parts: list, offset: int) -> list:
    import datetime as _dt
    if len(parts) < 5:
        return parts
    base = _dt.datetime(parts[0], parts[1], parts[2], parts[3], parts[4]) - _dt.timedelta(minutes=offset)
    return [base.year, base.month, base.day, base.hour, base.minute] + parts[5:]


def compare_temporal(a: str, b: str):
    """-1, 0 or 1 comparing two date/time texts; None when precision makes the answer unknown.

    Returns NotImplemented when either text is not a date, dateTime or time, so that the caller falls
    back to plain string comparison.
    """
    ka, kb = _temporal_key(a), _temporal_key(b)
    if ka is None or kb is None or ka[0] != kb[0]:
        return NotImplemented
    pa, pb = ka[1], kb[1]
    if ka[2] is not None and kb[2] is not None:
        pa, pb = _to_utc(pa, ka[2]), _to_utc(pb, kb[2])
    for x, y in zip(pa, pb):
        if x != y:
            return -1 if x < y else 1
    if len(pa) != len(pb):
        # Seconds with and without a fraction are the same precision in FHIRPath.
        return None
    return 0
