"""Deterministic identifiers shared by every stage.

Ids are content hashes so that a rerun on the same input produces the same keys (idempotent MERGE),
and so that a reference written by one mapping (Encounter.subject -> Patient/<id>) meets the id another
mapping gave the resource. They live in the phi zone only: curated tables get keyed pseudonyms instead.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable

__all__ = ["record_id", "record_ids", "resource_id"]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def record_id(hospital: str, feed: str, payload: str | bytes) -> str:
    """Content hash of one source record within a hospital's feed (64 hex chars)."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="surrogateescape")
    return _digest(hospital, feed, payload)


def record_ids(hospital: str, feed: str) -> Callable[[str | bytes], str]:
    """`record_id` of `hospital`'s `feed` for text payloads, for a caller hashing many records of one file."""
    if type(hospital) is not str or type(feed) is not str:  # let `record_id` raise for what it refuses
        return lambda payload: record_id(hospital, feed, payload)
    # The shared part of the hash input joined once: the join and two calls were a third of the hashing.
    prefix = f"{hospital}\x1f{feed}\x1f"
    sha256 = hashlib.sha256
    return lambda payload: (sha256((prefix + payload).encode("utf-8")).hexdigest() if type(payload) is str
                            else record_id(hospital, feed, payload))


# Memoised: every resource of a patient references the same Patient and Encounter ids, and records of
# one patient sit together in a delivery, so most calls repeat a recent one (a hit costs a tenth of a hash).
@lru_cache(maxsize=16_384)
def resource_id(hospital: str, resource_type: str, local_id: str) -> str:
    """FHIR id (32 hex chars, valid per the id datatype) for a resource with a hospital-local key."""
    return _digest(hospital, resource_type, local_id)[:32]
