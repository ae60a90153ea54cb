"""ORC + OBR -> ServiceRequest (IG ORC[ServiceRequest], OBR[ServiceRequest]; ORM^O01, OML^O21, ORU's order)."""

from __future__ import annotations

from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Repetition, Segment

#: ORC-5 (table 0038) -> ServiceRequest.status (IG OrderStatus); codes without a target are left out.
ORDER_STATUS = {"CA": "revoked", "CM": "completed", "DC": "revoked", "HD": "on-hold", "RP": "revoked"}
#: ORC-1 (table 0119) -> ServiceRequest.status when ORC-5 is empty (IG OrderControlCode[ServiceRequest.status]).
ORDER_CONTROL_STATUS = {
    "AF": "active", "CA": "active", "CR": "revoked", "DC": "revoked", "DF": "revoked", "DR": "revoked",
    "HD": "active", "HR": "on-hold", "NW": "active", "OC": "revoked", "OD": "revoked", "OH": "on-hold",
    "OK": "active", "PR": "active", "PY": "active", "RL": "active", "RO": "active", "RQ": "active",
}
#: OBR-5 / TQ1-9 (table 0485) -> ServiceRequest.priority (IG ExtendedPriorityCodes).
PRIORITY = {"S": "stat", "A": "asap", "R": "routine"}


def _first(seg: Segment | None, n: int) -> Repetition | None:
    return None if seg is None else seg.field(n).first


def _order_identifier(rep: Repetition | None, type_code: str, hospital: str) -> dict | None:
    """EI -> Identifier typed PLAC / FILL / PGN (v2-0203), system from the EI's namespace or OID."""
    if rep is None or not rep.component(1).strip():
        return None
    ident: dict = {"value": rep.component(1).strip(),
                   "type": {"coding": [{"system": vocab.V2_0203, "code": type_code}]}}
    system = dt.ei_system(rep, hospital)
    if system:
        ident["system"] = system
    return ident


def order_identifiers(ctx: Context, orc: Segment | None, obr: Segment | None) -> list[dict]:
    """Placer (ORC-2, OBR-2) and filler (ORC-3, OBR-3) numbers; both segments' when they differ, as
    either may be what another system quotes. The IG maps both for DiagnosticReport, and prefers ORC's
    for ServiceRequest, which keeping both satisfies."""
    out: list[dict] = []
    for n, type_code in ((2, "PLAC"), (3, "FILL")):
        previous = ""
        for seg in (orc, obr):
            rep = _first(seg, n)
            if rep is None or rep.raw == previous:
                continue  # ORC and OBR mostly quote the same number: the same text is the same identifier
            previous = rep.raw
            ident = _order_identifier(rep, type_code, ctx.hospital)
            if ident and ident not in out:
                out.append(ident)
    return out


def order_status(orc: Segment | None) -> str:
    """ServiceRequest status of an order: ORC-5 order status, else ORC-1 order control; "unknown"."""
    if orc is None:
        return "unknown"
    status = ORDER_STATUS.get(orc.value(5).strip().upper())
    if status is None and not orc.value(5).strip():
        status = ORDER_CONTROL_STATUS.get(orc.value(1).strip().upper())
    return status or "unknown"


def map_service_request(ctx: Context, obr: Segment, key: str) -> dict:
    """The order an OBR (with the ORC before it) states, keyed like its DiagnosticReport."""
    orc = ctx.order
    request: dict = {
        "resourceType": "ServiceRequest",
        "id": ctx.rid("ServiceRequest", key),
        "status": order_status(orc),
        # OBR-11 G is a reflex test the lab added; A (add-on) has no R4 intent of its own.
        "intent": "reflex-order" if obr.value(11).strip().upper() == "G" else "order",
        "subject": {"reference": ctx.patient_ref},
    }
    identifiers = order_identifiers(ctx, orc, obr)
    # OBR-53 (else ORC-33) alternate placer order numbers (IG identifier[3]/[4], typed PLAC).
    alternates = obr.field(53).repetitions or (orc.field(33).repetitions if orc is not None else [])
    for rep in alternates:
        ident = dt.identifier(rep, ctx.hospital, type_code="PLAC")
        if ident and ident not in identifiers:
            identifiers.append(ident)
    if identifiers:
        request["identifier"] = identifiers
    group = _order_identifier(_first(orc, 4), "PGN", ctx.hospital)
    if group:
        request["requisition"] = group
    concept = dt.codeable_concept(_first(obr, 4), ctx.hospital, "lab", ctx.terminology)
    if concept:
        request["code"] = concept
    priority = PRIORITY.get(obr.value(5).strip().upper())
    if priority:
        request["priority"] = priority
    if ctx.encounter_ref:
        request["encounter"] = {"reference": ctx.encounter_ref}
    if orc is not None and orc.value(1).strip().upper() == "NW":
        authored = dt.fhir_datetime(orc.value(9), "ORC-9", ctx.tz)
        if authored:
            request["authoredOn"] = authored
    reasons = [c for c in (dt.codeable_concept(r, ctx.hospital, "reason") for r in obr.field(31).repetitions) if c]
    if reasons:
        request["reasonCode"] = reasons
    return ctx.add(request)
