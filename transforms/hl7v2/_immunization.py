"""RXA -> Immunization (IG RXA[Immunization] map; VXU^V04)."""

from __future__ import annotations

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Segment


def map_immunization(ctx: Context, rxa: Segment, index: int, order_key: str) -> dict | None:
    reps = rxa.field(5).repetitions
    vaccine = dt.codeable_concept(reps[0] if reps else None, ctx.hospital, "vaccine", ctx.terminology)
    if vaccine is None:
        raise RecordError("MISSING_FIELD", "RXA-5 administered code is empty")
    occurrence = dt.fhir_datetime(rxa.value(3), "RXA-3", ctx.tz)
    if occurrence is None:
        raise RecordError("MISSING_FIELD", "RXA-3 date/time start of administration is empty")
    status = vocab.COMPLETION_STATUS.get(rxa.value(20).strip().upper(), "completed")
    if rxa.value(21).strip().upper() == "D":
        status = "entered-in-error"
    key = order_key or f"{vaccine.get('coding', [{}])[0].get('code', '')}|{rxa.value(3).strip()}|{index}"
    imm: dict = {
        "resourceType": "Immunization",
        "id": ctx.rid("Immunization", f"patient|{ctx.mrn}|{key}"),
        "status": status,
        "vaccineCode": vaccine,
        "patient": {"reference": ctx.patient_ref},
        "occurrenceDateTime": occurrence,
    }
    if ctx.encounter_ref:
        imm["encounter"] = {"reference": ctx.encounter_ref}
    amount = dt.decimal(rxa.value(6))
    if amount is not None and amount != 999:  # 999 is the CDC convention for "amount unknown"
        quantity: dict = {"value": amount, **dt.quantity_unit(rxa.field(7).first)}
        imm["doseQuantity"] = quantity
    lot = rxa.value(15).strip()
    if lot:
        imm["lotNumber"] = lot
    expiry = dt.fhir_date(rxa.value(16), "RXA-16")
    if expiry and len(expiry) == 10:
        imm["expirationDate"] = expiry
    if rxa.value(9).strip() in ("00", "01"):
        # NIP001: 00 = new record (administered here), 01 = historical record from another source.
        imm["primarySource"] = rxa.value(9).strip() == "00"
    imm = ctx.add(imm)
    ctx.immunization = imm
    return imm


#: VXU OBX that the IG maps into the Immunization rather than to Observations (LOINC -> element).
IMMUNIZATION_OBX = {"64994-7": "programEligibility", "30963-3": "fundingSource"}


def attach_obx(ctx: Context, immunization: dict, obx: Segment) -> bool:
    """Put a funding OBX (eligibility, funding source) into the Immunization; False when it is not one."""
    element = IMMUNIZATION_OBX.get(obx.field(3).component(1).strip())
    reps = obx.field(5).repetitions
    if element is None or not reps:
        return False
    concept = dt.codeable_concept(reps[0], ctx.hospital, "immunization-funding")
    if concept is None:
        return False
    if element == "programEligibility":
        immunization.setdefault(element, []).append(concept)
    else:
        immunization[element] = concept
    return True
