"""SCH (+ TQ1, AIS) -> Appointment (SIU^S12-S26; IG SCH[Appointment], AIS[Appointment]).

SCH comes before PID in SIU, so the segment is held and the Appointment made once the message's
patients are known: every PID of the message takes part.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Segment

#: SCH-25 (table 0278) -> Appointment.status (IG FillerStatusCodes[Appointment]).
FILLER_STATUS = {"PENDING": "pending", "WAITLIST": "waitlist", "BOOKED": "booked", "STARTED": "checked-in",
                 "COMPLETE": "fulfilled", "CANCELLED": "cancelled", "DELETED": "entered-in-error",
                 "NOSHOW": "noshow"}
#: Without SCH-25 the trigger event says what happened to the booking.
EVENT_STATUS = {"S12": "booked", "S13": "booked", "S14": "booked", "S15": "cancelled", "S16": "cancelled",
                "S17": "entered-in-error", "S26": "noshow"}
#: Statuses an Appointment may have without start and end (R4 invariant app-3).
_UNTIMED = frozenset({"proposed", "cancelled", "waitlist"})


def _first(seg: Segment, n: int):
    return seg.field(n).first


def _minutes(amount: str, units: str) -> int | None:
    """SCH-9/10 (AIS-7/8) duration as whole minutes; units default to minutes (table ISO+ ``min``)."""
    n = dt.decimal(amount)
    if n is None or n <= 0:
        return None
    factor = {"": 1, "MIN": 1, "M": 1, "MINUTES": 1, "H": 60, "HR": 60, "HOURS": 60, "S": 1 / 60, "SEC": 1 / 60}.get(
        units.strip().upper())
    if factor is None:
        return None
    minutes = int(round(n * factor))
    return minutes if minutes > 0 else None


def _plus_minutes(start: str, minutes: int) -> str | None:
    if "T" not in start:
        return None  # a date alone (no zone known) gives no end instant
    end = datetime.fromisoformat(start) + timedelta(minutes=minutes)
    return end.isoformat()


def map_appointment(ctx: Context, sch: Segment, tq1: Segment | None, ais: Segment | None,
                    patients: list[str]) -> dict | None:
    """The booking SCH describes, for the patients of the message (IG SCH[Appointment])."""
    if not patients:
        return None
    filler = sch.field(2).component(1).strip()
    placer = sch.field(1).component(1).strip()
    key = f"fill|{filler}" if filler else (f"plac|{placer}" if placer else f"msg|{ctx.message.control_id}")
    trigger = ctx.message.type.partition("^")[2]
    status = FILLER_STATUS.get(sch.field(25).component(1).strip().upper()) or EVENT_STATUS.get(trigger, "proposed")
    appointment: dict = {
        "resourceType": "Appointment",
        "id": ctx.rid("Appointment", key),
        "status": status,
        # v2 does not say whether the patient accepted; R4 requires a participant status, and
        # needs-action claims nothing.
        "participant": [{"actor": {"reference": ref}, "status": "needs-action"} for ref in patients],
    }
    identifiers = [{"value": v, "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                      "code": t}]}}
                   for v, t in ((placer, "PLAC"), (filler, "FILL")) if v]
    if identifiers:
        appointment["identifier"] = identifiers
    reason = dt.codeable_concept(_first(sch, 7), ctx.hospital, "appointment-reason")
    if reason:
        appointment["reasonCode"] = [reason]
    kind = dt.codeable_concept(_first(sch, 8), ctx.hospital, "appointment-type")
    if kind:
        appointment["appointmentType"] = kind
    if ais is not None:
        service = dt.codeable_concept(_first(ais, 3), ctx.hospital, "service")
        if service:
            appointment["serviceType"] = [service]
    start, end, minutes = _timing(ctx, sch, tq1, ais)
    if minutes:
        appointment["minutesDuration"] = minutes
    if start and not end and minutes:
        end = _plus_minutes(start, minutes)
    if start and end and "T" in start and "T" in end:
        appointment["start"], appointment["end"] = start, end
    elif status not in _UNTIMED:
        raise RecordError("MISSING_FIELD",
                          "TQ1-7/TQ1-8 (or SCH-11) appointment start and end are missing or have no time zone")
    if ctx.encounter_ref:
        appointment["supportingInformation"] = [{"reference": ctx.encounter_ref}]
    return ctx.add(appointment)


def _timing(ctx: Context, sch: Segment, tq1: Segment | None, ais: Segment | None) -> tuple:
    """Start, end (FHIR dateTimes) and minutes: TQ1-7/8 (v2.5+), else SCH-11.4/11.5 (TQ), else AIS-4."""
    start = end = None
    if tq1 is not None:
        start = dt.fhir_datetime(tq1.field(7).component(1), "TQ1-7", ctx.tz)
        end = dt.fhir_datetime(tq1.field(8).component(1), "TQ1-8", ctx.tz)
    if not start:
        start = dt.fhir_datetime(sch.field(11).component(4, 1), "SCH-11", ctx.tz)
        end = end or dt.fhir_datetime(sch.field(11).component(5, 1), "SCH-11", ctx.tz)
    if not start and ais is not None:
        start = dt.fhir_datetime(ais.field(4).component(1), "AIS-4", ctx.tz)
    minutes = _minutes(sch.value(9), sch.field(10).component(1))
    if minutes is None and ais is not None:
        minutes = _minutes(ais.value(7), ais.field(8).component(1))
    return start, end, minutes
