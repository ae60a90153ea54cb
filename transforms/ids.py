"""Deterministic identifiers shared by every stage.

Ids are content hashes so that a rerun on the same input produces the same keys (idempotent MERGE),
and so that a reference written by one mapping (Encounter.subject -> Patient/<id>) meets the id another
mapping gave the resource. They live in the phi zone only: curated tables get keyed pseudonyms instead.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

__all__ = ["record_id", "resource_id"]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def record_id(hospital: str, feed: str, payload: str | bytes) -> str:
    """Content hash of one source record within a hospital's feed (64 hex chars)."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="surrogateescape")
    return _digest(hospital, feed, payload)


# Memoised: every resource of a patient references the same Patient and Encounter ids, and records of
# one patient sit together in a delivery, so most calls repeat a recent one (a hit costs a tenth of a hash).
@lru_cache(maxsize=16_384)
def resource_id(hospital: str, resource_type: str, local_id: str) -> str:
    """FHIR id (32 hex chars, valid per the id datatype) for a resource with a hospital-local key."""
    return _digest(hospital, resource_type, local_id)[:32]
