"""PV1 -> Encounter; DG1 -> Condition, PR1 -> Procedure, AL1 -> AllergyIntolerance, IN1 -> Coverage."""

from __future__ import annotations

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Segment
from transforms.systems import visit_system


def _encounter_status(trigger: str, patient_class: str, discharged: bool) -> str:
    # The IG maps status from the trigger event (Event[EncounterStatus]); PV1-45 valued means the
    # visit ended; otherwise the patient class decides (PatientClass[EncounterStatus]).
    if trigger in ("A11", "A03"):
        return vocab.EVENT_ENCOUNTER_STATUS[trigger]
    if discharged:
        return "finished"
    if trigger in vocab.EVENT_ENCOUNTER_STATUS:
        return vocab.EVENT_ENCOUNTER_STATUS[trigger]
    return vocab.PATIENT_CLASS_STATUS.get(patient_class, "in-progress")


def map_encounter(ctx: Context, pv1: Segment) -> dict | None:
    """Encounter keyed by PV1-19; without a visit number, by patient + admit time; else none.

    A PV1 with neither is a placeholder (common in A28/A31 and in results) and carries no visit.
    """
    visit = pv1.field(19).value.strip()
    admit = pv1.field(44).value.strip()
    patient_class = pv1.field(2).value.strip().upper()
    if visit:
        key = visit
    elif admit and patient_class:
        key = f"{ctx.mrn}|admit|{admit}"
    else:
        return None
    if not patient_class:
        raise RecordError("MISSING_FIELD", "PV1-2 patient class is empty")
    cls = vocab.PATIENT_CLASS.get(patient_class)
    if cls is None:
        raise RecordError("UNKNOWN_CODE", "PV1-2 patient class has no mapping")
    start = dt.fhir_datetime(admit, "PV1-44", ctx.tz)
    end = dt.fhir_datetime(pv1.field(45).value, "PV1-45", ctx.tz)
    trigger = ctx.message.type.partition("^")[2]
    enc_id = ctx.rid("Encounter", key)
    encounter: dict = {
        "resourceType": "Encounter",
        "id": enc_id,
        "status": _encounter_status(trigger, patient_class, bool(end)),
        "class": {"system": cls[0], "code": cls[1], "display": cls[2]},
        "subject": {"reference": ctx.patient_ref},
    }
    identifiers = []
    if visit:
        identifiers.append({
            "system": visit_system(ctx.hospital), "value": visit,
            "type": {"coding": [{"system": vocab.V2_0203, "code": "VN"}]},
        })
    # PV1-50 alternate visit ids (IG identifier[2]): other systems' numbers for the same visit.
    identifiers += [i for i in (dt.identifier(r, ctx.hospital) for r in pv1.field(50).repetitions) if i]
    if identifiers:
        encounter["identifier"] = identifiers
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        encounter["period"] = period
    service = dt.codeable_concept(pv1.field(10).repetitions[0] if pv1.field(10) else None, ctx.hospital, "service")
    if service:
        encounter["serviceType"] = service
    disposition = pv1.field(36).repetitions
    if disposition:
        concept = dt.codeable_concept(disposition[0], ctx.hospital, "discharge-disposition")
        if concept:
            encounter["hospitalization"] = {"dischargeDisposition": concept}
    ctx.visit_key = key
    ctx.encounter_ref = f"Encounter/{enc_id}"
    return ctx.add(encounter)


def _first(seg: Segment, n: int):
    reps = seg.field(n).repetitions
    return reps[0] if reps else None


def _fact_key(ctx: Context, seg: Segment, index: int, code_field: int) -> str:
    set_id = seg.field(1).value.strip()
    code = seg.field(code_field).value.strip()
    return f"{ctx.context_key}|{set_id or code or f'#{index}'}"


def map_condition(ctx: Context, dg1: Segment, index: int) -> dict | None:
    concept = dt.codeable_concept(_first(dg1, 3), ctx.hospital, "dx", ctx.terminology)
    description = dg1.field(4).text().strip()
    if concept is None and description:
        concept = {"text": description}
    elif concept is not None and description and "text" not in concept:
        concept["text"] = description
    if concept is None:
        return None  # a DG1 with neither code nor description states nothing
    condition: dict = {
        "resourceType": "Condition",
        "id": ctx.rid("Condition", _fact_key(ctx, dg1, index, 3)),
        "category": [{"coding": [{"system": vocab.CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}],
        "code": concept,
        "subject": {"reference": ctx.patient_ref},
    }
    if ctx.encounter_ref:
        condition["encounter"] = {"reference": ctx.encounter_ref}
    onset = dt.fhir_datetime(dg1.field(5).value, "DG1-5", ctx.tz)
    if onset:
        condition["onsetDateTime"] = onset
    recorded = dt.fhir_datetime(dg1.field(19).value, "DG1-19", ctx.tz)
    if recorded:
        condition["recordedDate"] = recorded
    if dg1.field(21).value.strip().upper() == "D":
        condition["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}
    return ctx.add(condition)


def map_procedure(ctx: Context, pr1: Segment, index: int) -> dict | None:
    concept = dt.codeable_concept(_first(pr1, 3), ctx.hospital, "px", ctx.terminology)
    description = pr1.field(4).text().strip()
    if concept is None and description:
        concept = {"text": description}
    if concept is None:
        return None
    procedure: dict = {
        "resourceType": "Procedure",
        "id": ctx.rid("Procedure", _fact_key(ctx, pr1, index, 3)),
        "status": "completed",
        "code": concept,
        "subject": {"reference": ctx.patient_ref},
    }
    if ctx.encounter_ref:
        procedure["encounter"] = {"reference": ctx.encounter_ref}
    performed = dt.fhir_datetime(pr1.field(5).value, "PR1-5", ctx.tz)
    if performed:
        procedure["performedDateTime"] = performed
    return ctx.add(procedure)


def map_allergy(ctx: Context, al1: Segment, index: int) -> dict | None:
    concept = dt.codeable_concept(_first(al1, 3), ctx.hospital, "allergen", ctx.terminology)
    if concept is None:
        return None
    allergy: dict = {
        "resourceType": "AllergyIntolerance",
        "id": ctx.rid("AllergyIntolerance", f"patient|{ctx.mrn}|{al1.field(3).value.strip() or index}"),
        # An allergy an ADT feed lists is one the patient has now (ait-1 needs a clinical status).
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "code": concept,
        "patient": {"reference": ctx.patient_ref},
    }
    category = vocab.ALLERGEN_CATEGORY.get(al1.field(2).value.strip().upper())
    if category:
        allergy["category"] = [category]
    criticality = vocab.ALLERGY_CRITICALITY.get(al1.field(4).value.strip().upper())
    if criticality:
        allergy["criticality"] = criticality
    reactions = [r.text().strip() for r in al1.field(5).repetitions if r.text().strip()]
    if reactions:
        allergy["reaction"] = [{"manifestation": [{"text": r} for r in reactions]}]
    onset = dt.fhir_datetime(al1.field(6).value, "AL1-6", ctx.tz)
    if onset:
        allergy["onsetDateTime"] = onset
    return ctx.add(allergy)


def map_coverage(ctx: Context, in1: Segment, index: int) -> dict | None:
    plan = in1.field(2).value.strip()
    company_id = in1.field(3).value.strip()
    company_name = in1.field(4).component(1).strip()
    policy = in1.field(36).value.strip()
    if not (plan or company_id or company_name or policy):
        return None
    set_id = in1.field(1).value.strip() or f"#{index}"
    payor: dict = {}
    if company_name:
        payor["display"] = company_name
    if company_id:
        ident = dt.identifier(in1.field(3).repetitions[0], ctx.hospital)
        if ident:
            payor["identifier"] = ident
    coverage: dict = {
        "resourceType": "Coverage",
        "id": ctx.rid("Coverage", f"patient|{ctx.mrn}|{company_id}|{policy}|{set_id}"),
        "status": "active",
        "beneficiary": {"reference": ctx.patient_ref},
        "payor": [payor or {"display": "unknown payor"}],
    }
    if policy:
        coverage["subscriberId"] = policy
    start = dt.fhir_datetime(in1.field(12).value, "IN1-12", ctx.tz)
    end = dt.fhir_datetime(in1.field(13).value, "IN1-13", ctx.tz)
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        coverage["period"] = period
    plan_rep = in1.field(2).repetitions
    if plan_rep and plan_rep[0].component(1).strip():
        # IG IN1-2 -> identifier (CWE[Identifier]): the plan id as the payer knows it.
        coverage["identifier"] = [{"value": plan_rep[0].component(1).strip()}]
    plan_type = dt.codeable_concept(_first(in1, 15), ctx.hospital, "insurance-plan-type")
    if plan_type:
        coverage["type"] = plan_type
    relationship = _first(in1, 17)
    if relationship is not None:
        concept = dt.codeable_concept(relationship, ctx.hospital, "relationship")
        if concept:
            coverage["relationship"] = concept
    subscriber = _subscriber(ctx, in1, set_id)
    if subscriber:
        coverage["subscriber"] = {"reference": subscriber}
    return ctx.add(coverage)


def _subscriber(ctx: Context, in1: Segment, set_id: str) -> str | None:
    """IN1-16 insured: the patient when IN1-17 says SEL, else a RelatedPerson (IG IN1[Coverage])."""
    relation = in1.field(17).value.strip().upper()
    if relation == "SEL":
        return ctx.patient_ref
    names = dt.human_names(in1.field(16).repetitions)
    if not names:
        return None
    person: dict = {
        "resourceType": "RelatedPerson",
        "id": ctx.rid("RelatedPerson", f"patient|{ctx.mrn}|insured|{set_id}"),
        "patient": {"reference": ctx.patient_ref},
        "name": names,
    }
    relationship = _first(in1, 17)
    concept = dt.codeable_concept(relationship, ctx.hospital, "relationship") if relationship is not None else None
    if concept:
        person["relationship"] = [concept]
    birth = dt.fhir_date(in1.field(18).value, "IN1-18")
    if birth:
        person["birthDate"] = birth
    addresses = [a for a in (dt.address(r, ctx.tz) for r in in1.field(19).repetitions) if a]
    if addresses:
        person["address"] = addresses
    person = ctx.add(person)
    return f"RelatedPerson/{person['id']}"
