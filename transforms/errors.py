"""Errors that send a record to quarantine.

A `RecordError` carries a stable code and a readable reason. Reasons name the element or field that
failed (``PID-7``, ``Patient.birthDate``), never its value: quarantine reasons are shown outside the phi
zone in summaries and reports, so they must not carry identifiers.
"""

from __future__ import annotations

__all__ = ["RecordError", "CODES", "MARKER_PREFIX", "marker_payload", "marker_error"]

#: Stable error codes; never reuse one for a different meaning.
CODES = {
    "PARSE": "the record could not be parsed (truncated, malformed, wrong encoding)",
    "UNSUPPORTED": "the record is of a kind this feed does not map (message type, entity, resource type)",
    "MISSING_FIELD": "a field the mapping requires is empty",
    "INVALID_DATE": "a date or time is impossible or badly formed",
    "UNKNOWN_CODE": "a code has no mapping where the target element requires one",
    "FHIR_INVALID": "the mapped resource does not validate against FHIR R4",
    "TOO_LARGE": "the record exceeds the configured size limit",
    "MAPPING_BUG": "the mapping failed unexpectedly (a carelake bug); the record waits for a retry after the fix",
}


class RecordError(ValueError):
    """A record that cannot be normalized: `code` is one of `CODES`, `reason` is free of PHI."""

    def __init__(self, code: str, reason: str):
        if code not in CODES:
            raise ValueError(f"unknown quarantine code {code!r}; known: {', '.join(CODES)}")
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


#: Bronze keeps a marker instead of the payload of a record it could not keep whole (too large, or the
#: rest of a file that could not be split): the record is still counted, and normalize quarantines it
#: with the marker's code, so ``bronze = normalized + quarantined`` holds for it too.
MARKER_PREFIX = "#carelake-marker "


def marker_payload(code: str, reason: str) -> str:
    """The bronze payload standing for a record that was not kept (`code` in `CODES`, PHI-free `reason`)."""
    if code not in CODES:
        raise ValueError(f"unknown quarantine code {code!r}")
    return f"{MARKER_PREFIX}{code} {reason}"


def marker_error(payload) -> RecordError | None:
    """The quarantine verdict a marker payload carries, or None for an ordinary payload."""
    if not isinstance(payload, str) or not payload.startswith(MARKER_PREFIX):
        return None
    code, _, reason = payload[len(MARKER_PREFIX):].partition(" ")
    return RecordError(code if code in CODES else "PARSE", reason or "the record was not kept by ingest")
