"""State shared by the segment mappings of one message: the hospital, keys and references so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import msgspec

from transforms.hl7v2.parse import Delimiters, Message, Segment
from transforms.ids import resource_id
from transforms.terminology import Terminology

# Mappings that memoise what a segment gives keep it packed: msgpack keeps dict order and JSON types
# exactly, and each message unpacks its own copy, so no two messages share a mutable dict. `pack` raises
# (OverflowError, TypeError, ValueError, UnicodeError) for what it cannot hold exactly (an integer beyond
# 64 bits, a lone surrogate): the caller then maps the segment itself.
pack = msgspec.msgpack.Encoder().encode
unpack = msgspec.msgpack.Decoder().decode
PACK_ERRORS = (OverflowError, TypeError, ValueError, UnicodeError)


def segment_parts(seg: Segment, varying: tuple[int, ...], build: Callable[[Segment, str, Terminology], dict],
                  ctx: Context) -> dict:
    """``build(seg, hospital, terminology)``, a fresh dict, memoised on the segment's fields other than
    `varying`.

    For segments whose clinical content repeats from message to message (the same tests, units,
    ranges, diagnoses) while a few fields (set id, value, time) do not: `build` must read only the
    other fields, and raise nothing (the caller raises, where the unmemoised mapping did).
    """
    fields = list(seg.fields)
    for n in varying:
        if n < len(fields):
            fields[n] = ""
    packed = _packed_parts(build, tuple(fields), seg.delimiters, ctx.hospital, _identity(ctx.terminology))
    return build(seg, ctx.hospital, ctx.terminology) if packed is None else unpack(packed)


# The keys are segment fields, i.e. PHI: bounded, in this process's memory only, never logged.
@lru_cache(maxsize=8192)
def _packed_parts(build: Callable[[Segment, str, Terminology], dict], fields: tuple[str, ...], d: Delimiters,
                  hospital: str, terminology: _Identity) -> bytes | None:
    try:
        return pack(build(Segment(fields[0], list(fields), d), hospital, terminology.obj))  # type: ignore[arg-type]  # the Terminology it stands for
    except PACK_ERRORS:
        return None


class _Identity:
    """A cache key for an object that is equal only to itself: a `Terminology` holds a dict, so it has
    no hash, and a run maps every record with one. The key keeps its object alive, so no other object
    can take its place (and its id) while a cache entry made with it remains."""

    __slots__ = ("obj",)

    def __init__(self, obj: object):
        self.obj = obj


_last_identity = _Identity(None)


def _identity(obj: object) -> _Identity:
    """The `_Identity` of `obj`: the same key for the same object as long as no other one is asked for."""
    global _last_identity
    key = _last_identity  # read once: another thread may set a new one, this key stays `obj`'s
    if key.obj is not obj:
        key = _last_identity = _Identity(obj)
    return key


@dataclass
class Context:
    message: Message
    hospital: str
    terminology: Terminology
    overrides: dict
    tz: str | None
    resources: list[dict] = field(default_factory=list)
    # Current patient / visit / report, reset by the PID, PV1 and OBR segments that start their groups.
    mrn: str | None = None
    patient_ref: str | None = None
    visit_key: str | None = None
    encounter_ref: str | None = None
    report: dict | None = None
    report_key: str | None = None
    report_status_given: bool = False
    request: dict | None = None  # the ServiceRequest of the current OBR group
    order: Segment | None = None  # the ORC segment of the current order group
    immunization: dict | None = None  # the RXA a following funding OBX belongs to
    medication: dict | None = None  # the RXE an RXR that follows gives the route of
    rx_order: Segment | None = None  # the RXO of the current pharmacy order
    document: dict | None = None  # the TXA the OBX of an MDM add content to
    last: dict | None = None  # the resource an NTE that follows attaches to
    _ids: set = field(default_factory=set)

    def rid(self, resource_type: str, local_key: str) -> str:
        return resource_id(self.hospital, resource_type, local_key)

    def add(self, resource: dict) -> dict:
        """Keep a resource. A second Patient with the same id in one message is the same person and
        is merged into the first; any other clash (two OBX with one set id under one order) gets a
        suffixed id, deterministic because segment order is."""
        key = (resource["resourceType"], resource["id"])
        if key in self._ids:
            if resource["resourceType"] == "Patient":
                for existing in self.resources:
                    if (existing["resourceType"], existing["id"]) == key:
                        for k, v in resource.items():
                            existing.setdefault(k, v)
                        return existing
            n = 2
            while (resource["resourceType"], f"{resource['id'][:28]}{n:04d}") in self._ids:
                n += 1
            resource["id"] = f"{resource['id'][:28]}{n:04d}"
            key = (resource["resourceType"], resource["id"])
        self._ids.add(key)
        self.resources.append(resource)
        return resource

    @property
    def context_key(self) -> str:
        """Key of what a clinical fact hangs off: the visit when there is one, else the patient."""
        if self.visit_key:
            return f"visit|{self.visit_key}"
        return f"patient|{self.mrn}"
