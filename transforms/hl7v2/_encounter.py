"""PV1 -> Encounter; DG1 -> Condition, PR1 -> Procedure, AL1 -> AllergyIntolerance, IN1 -> Coverage."""

from __future__ import annotations

import hashlib

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context, segment_parts
from transforms.hl7v2.parse import Segment
from transforms.systems import local_code_system, visit_system
from transforms.terminology import Terminology


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


#: Trigger events whose PV1 is the visit the event is about: its patient class is required there.
_VISIT_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13"})


def _encounter_key(ctx: Context, pv1: Segment, index: int, visit: str, admit: str, patient_class: str) -> str:
    """PV1-19 visit number; else patient + PV1-44 admit time; else the message and the PV1's content.
    (``visit``, ``admit``, ``patient_class``: PV1-19, PV1-44 and PV1-2 as `map_encounter` read them.)

    The last is a visit known only from this message (ELR and order messages often send PV1 without a
    number): the IG still maps it to an Encounter, and keying it by MSH-10 and the segment keeps the id
    the same when the message is delivered again, while two different messages never merge their PV1s.
    """
    if visit:
        return visit
    if admit and patient_class:
        return f"{ctx.mrn}|admit|{admit}"
    digest = hashlib.sha256(pv1.raw.encode("utf-8")).hexdigest()[:16]
    return f"{ctx.mrn}|msg|{ctx.message.control_id}|{index}|{digest}"


def _encounter_class(ctx: Context, patient_class: str, keyed: bool) -> dict:
    """PV1-2 -> Encounter.class (IG PatientClass[EncounterClass]).

    For a visit with its own key (PV1-19) or the visit an ADT event is about, an empty or unknown class
    is quarantined: the visit would be counted wrongly. A PV1 that is only context of an order or result
    (no visit number) does not cost the message: an empty class is said absent, an unknown one is kept
    as the sender's code in the hospital's local system (Encounter.class is 1..1, extensible binding).
    """
    trigger = ctx.message.type.partition("^")[2]
    strict = keyed or (ctx.message.type.startswith("ADT") and trigger in _VISIT_EVENTS)
    if not patient_class:
        if strict:
            raise RecordError("MISSING_FIELD", "PV1-2 patient class is empty")
        return {"extension": [{"url": vocab.DATA_ABSENT_EXT, "valueCode": "unknown"}]}
    cls = vocab.PATIENT_CLASS.get(patient_class)
    if cls is None:
        if strict:
            raise RecordError("UNKNOWN_CODE", "PV1-2 patient class has no mapping")
        return {"system": local_code_system(ctx.hospital, "patient-class"), "code": dt.code(patient_class)}
    return {"system": cls[0], "code": cls[1], "display": cls[2]}


def map_encounter(ctx: Context, pv1: Segment, index: int = 1) -> dict | None:
    """PV1 -> Encounter (IG PV1[Encounter]), keyed by `_encounter_key`.

    A PV1 of class N ("not applicable") with neither visit number nor admit time is the placeholder
    A28/A31 and other person-level messages send: the sender says there is no visit, so none is made.
    """
    visit = pv1.value(19).strip()
    admit = pv1.value(44).strip()
    patient_class = pv1.value(2).strip().upper()
    if patient_class == "N" and not visit and not admit:
        return None
    key = _encounter_key(ctx, pv1, index, visit, admit, patient_class)
    encounter_class = _encounter_class(ctx, patient_class, bool(visit))
    start = dt.fhir_datetime(admit, "PV1-44", ctx.tz)
    end = dt.fhir_datetime(pv1.value(45), "PV1-45", ctx.tz)
    trigger = ctx.message.type.partition("^")[2]
    enc_id = ctx.rid("Encounter", key)
    encounter: dict = {
        "resourceType": "Encounter",
        "id": enc_id,
        "status": (_encounter_status(trigger, patient_class, bool(end)) if patient_class in vocab.PATIENT_CLASS
                   else "unknown"),
        "class": encounter_class,
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
    service = dt.codeable_concept(pv1.field(10).first, ctx.hospital, "service")
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
    return seg.field(n).first


def _fact_key(ctx: Context, seg: Segment, index: int, code_field: int) -> str:
    local = seg.value(1).strip() or seg.value(code_field).strip() or f"#{index}"
    return f"{ctx.context_key}|{local}"


#: DG1 fields that change from one diagnosis to the next: set id, onset and recorded times. The others
#: (code, description, type) repeat across a hospital's messages.
_VARYING_DG1_FIELDS = (1, 5, 19)


def _condition_parts(dg1: Segment, hospital: str, terminology: Terminology) -> dict:
    """What a Condition takes from the DG1 fields other than `_VARYING_DG1_FIELDS`."""
    concept = dt.codeable_concept(_first(dg1, 3), hospital, "dx", terminology)
    description = dg1.field(4).text().strip()
    if concept is None and description:
        concept = {"text": description}
    elif concept is not None and description and "text" not in concept:
        concept["text"] = description
    return {"code": concept, "entered_in_error": dg1.value(21).strip().upper() == "D"}


def map_condition(ctx: Context, dg1: Segment, index: int) -> dict | None:
    parts = segment_parts(dg1, _VARYING_DG1_FIELDS, _condition_parts, ctx)
    concept = parts["code"]
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
    onset = dt.fhir_datetime(dg1.value(5), "DG1-5", ctx.tz)
    if onset:
        condition["onsetDateTime"] = onset
    recorded = dt.fhir_datetime(dg1.value(19), "DG1-19", ctx.tz)
    if recorded:
        condition["recordedDate"] = recorded
    if parts["entered_in_error"]:
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
    performed = dt.fhir_datetime(pr1.value(5), "PR1-5", ctx.tz)
    if performed:
        procedure["performedDateTime"] = performed
    return ctx.add(procedure)


def map_allergy(ctx: Context, al1: Segment, index: int) -> dict | None:
    concept = dt.codeable_concept(_first(al1, 3), ctx.hospital, "allergen", ctx.terminology)
    if concept is None:
        return None
    allergy: dict = {
        "resourceType": "AllergyIntolerance",
        "id": ctx.rid("AllergyIntolerance", f"patient|{ctx.mrn}|{al1.value(3).strip() or index}"),
        # An allergy an ADT feed lists is one the patient has now (ait-1 needs a clinical status).
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "code": concept,
        "patient": {"reference": ctx.patient_ref},
    }
    category = vocab.ALLERGEN_CATEGORY.get(al1.value(2).strip().upper())
    if category:
        allergy["category"] = [category]
    criticality = vocab.ALLERGY_CRITICALITY.get(al1.value(4).strip().upper())
    if criticality:
        allergy["criticality"] = criticality
    reactions = [r.text().strip() for r in al1.field(5).repetitions if r.text().strip()]
    if reactions:
        allergy["reaction"] = [{"manifestation": [{"text": r} for r in reactions]}]
    onset = dt.fhir_datetime(al1.value(6), "AL1-6", ctx.tz)
    if onset:
        allergy["onsetDateTime"] = onset
    return ctx.add(allergy)


def map_coverage(ctx: Context, in1: Segment, index: int) -> dict | None:
    plan = in1.value(2).strip()
    company_id = in1.value(3).strip()
    company_name = in1.field(4).component(1).strip()
    policy = in1.value(36).strip()
    if not (plan or company_id or company_name or policy):
        return None
    set_id = in1.value(1).strip() or f"#{index}"
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
    start = dt.fhir_datetime(in1.value(12), "IN1-12", ctx.tz)
    end = dt.fhir_datetime(in1.value(13), "IN1-13", ctx.tz)
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
    relation = in1.value(17).strip().upper()
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
    birth = dt.fhir_date(in1.value(18), "IN1-18")
    if birth:
        person["birthDate"] = birth
    addresses = [a for a in (dt.address(r, ctx.tz) for r in in1.field(19).repetitions) if a]
    if addresses:
        person["address"] = addresses
    person = ctx.add(person)
    return f"RelatedPerson/{person['id']}"
