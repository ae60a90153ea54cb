"""ORC + RXE (RXO, RXR) -> MedicationRequest (RDE^O11 / RDE^O25; IG RXO[MedicationRequest], RXR[MedicationRequest]).

The IG maps RXO (the order as placed); RDE carries RXE (the order as the pharmacy encoded it), whose
fields 2-5, 10-12 mirror RXO-1..4, 11..13. The pharmacy's encoding is what is dispensed, so RXE is read
first and RXO fills what RXE leaves empty.
"""

from __future__ import annotations

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2._context import Context
from transforms.hl7v2._orders import order_identifiers, order_status
from transforms.hl7v2.parse import Repetition, Segment

#: ServiceRequest-style order statuses (IG OrderStatus / OrderControlCode) in MedicationRequest's value set.
_MEDICATION_STATUS = {"revoked": "cancelled", "active": "active", "on-hold": "on-hold", "completed": "completed"}

#: (RXE field, RXO field) pairs of the same meaning.
_GIVE_CODE, _MIN, _MAX, _UNITS, _DISPENSE, _DISPENSE_UNITS, _REFILLS = (
    (2, 1), (3, 2), (4, 3), (5, 4), (10, 11), (11, 12), (12, 13))


def _pick(rxe: Segment, rxo: Segment | None, fields: tuple[int, int]) -> Repetition | None:
    for seg, n in ((rxe, fields[0]), (rxo, fields[1])):
        if seg is not None and seg.field(n).repetitions and seg.value(n).strip():
            return seg.field(n).repetitions[0]
    return None


def _text(rep: Repetition | None) -> str:
    return rep.component(1).strip() if rep is not None else ""


def _dose(rxe: Segment, rxo: Segment | None) -> dict | None:
    """RXE-3/4 (RXO-2/3) give amount min/max with units RXE-5 (RXO-4) -> doseAndRate (IG: type ordered)."""
    unit = dt.quantity_unit(_pick(rxe, rxo, _UNITS))
    low, high = dt.decimal(_text(_pick(rxe, rxo, _MIN))), dt.decimal(_text(_pick(rxe, rxo, _MAX)))
    if low is None:
        return None
    ordered = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type", "code": "ordered"}]}
    if high is None or high == low:
        return {"type": ordered, "doseQuantity": {"value": low, **unit}}
    return {"type": ordered, "doseRange": {"low": {"value": low, **unit}, "high": {"value": high, **unit}}}


def map_medication_request(ctx: Context, rxe: Segment, index: int, rxo: Segment | None) -> dict:
    """One RXE (with the ORC and RXO of its order) -> MedicationRequest; RXR segments that follow add the route."""
    medication = dt.codeable_concept(_pick(rxe, rxo, _GIVE_CODE), ctx.hospital, "medication", ctx.terminology)
    if medication is None:
        raise RecordError("MISSING_FIELD", "RXE-2 give code is empty")
    orc = ctx.order
    order_key = ""
    if orc is not None:
        order_key = orc.field(2).component(1).strip() or orc.field(3).component(1).strip()
    key = f"order|{order_key}" if order_key else f"msg|{ctx.message.control_id}|{index}"
    request: dict = {
        "resourceType": "MedicationRequest",
        "id": ctx.rid("MedicationRequest", f"patient|{ctx.mrn}|{key}"),
        "status": _MEDICATION_STATUS.get(order_status(orc), "unknown"),
        "intent": "original-order",  # IG RXO[MedicationRequest]: the order as placed
        "medicationCodeableConcept": medication,
        "subject": {"reference": ctx.patient_ref},
    }
    if ctx.encounter_ref:
        request["encounter"] = {"reference": ctx.encounter_ref}
    if orc is not None:
        identifiers = order_identifiers(ctx, orc, None)
        if identifiers:
            request["identifier"] = identifiers
        authored = dt.fhir_datetime(orc.value(9), "ORC-9", ctx.tz)
        if authored:
            request["authoredOn"] = authored
    dosage: dict = {}
    instructions = " ".join(r.text().strip() for r in rxe.field(7).repetitions if r.text().strip())
    if instructions:
        dosage["text"] = instructions
    dose = _dose(rxe, rxo)
    if dose:
        dosage["doseAndRate"] = [dose]
    if dosage:
        request["dosageInstruction"] = [dosage]
    dispense: dict = {}
    amount = dt.decimal(_text(_pick(rxe, rxo, _DISPENSE)))
    if amount is not None:
        dispense["quantity"] = {"value": amount, **dt.quantity_unit(_pick(rxe, rxo, _DISPENSE_UNITS))}
    refills = _text(_pick(rxe, rxo, _REFILLS))
    if refills.isdigit():
        dispense["numberOfRepeatsAllowed"] = int(refills)
    if dispense:
        request["dispenseRequest"] = dispense
    request = ctx.add(request)
    ctx.medication = request
    ctx.last = request
    return request


def attach_route(ctx: Context, rxr: Segment) -> None:
    """RXR-1 route (and RXR-2 site) of the MedicationRequest before it (IG RXR[MedicationRequest])."""
    request = ctx.medication
    if request is None:
        return
    route = dt.codeable_concept(rxr.field(1).first, ctx.hospital, "route")
    site = dt.codeable_concept(rxr.field(2).first, ctx.hospital, "body-site")
    if not (route or site):
        return
    dosage = request.setdefault("dosageInstruction", [{}])[0]
    if route and "route" not in dosage:
        dosage["route"] = route
    if site and "site" not in dosage:
        dosage["site"] = site
