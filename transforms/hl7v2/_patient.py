"""PID -> Patient and NK1 -> RelatedPerson (IG segment maps PID[Patient], NK1[RelatedPerson])."""

from __future__ import annotations

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Repetition, Segment
from transforms.systems import NATIONAL_ID_SYSTEM, mrn_system

#: CX.5 identifier types that carry the regional national id.
_NATIONAL_TYPES = frozenset({"NI"})


def _mrn_repetition(pid: Segment, overrides: dict) -> tuple[Repetition | None, str]:
    """The repetition holding the MRN and the field it came from.

    Default: the PID-3 repetition typed MR, else the first PID-3 repetition with a value; senders of
    v2.2/2.3 that leave PID-3 empty and put the id in PID-2 are read from there. A hospital whose MRN
    is elsewhere says so with ``overrides={"mrn_field": "PID-2"}`` (or ``"mrn_type": "PI"``).
    """
    field_name = str(overrides.get("mrn_field", "PID-3")).upper()
    want_type = str(overrides.get("mrn_type", "MR")).upper()
    order = (2, 3) if field_name == "PID-2" else (3, 2)
    valued = {n: [r for r in pid.field(n).repetitions if r.component(1).strip()] for n in order}
    for n in order:
        typed = [r for r in valued[n] if r.component(5).strip().upper() == want_type]
        if typed:
            return typed[0], f"PID-{n}"
        if valued[n] and n == order[0]:
            return valued[n][0], f"PID-{n}"
    fallback = order[1]
    return (valued[fallback][0], f"PID-{fallback}") if valued[fallback] else (None, "")


def map_patient(ctx: Context, pid: Segment) -> dict:
    mrn_rep, _ = _mrn_repetition(pid, ctx.overrides)
    if mrn_rep is None:
        raise RecordError("MISSING_FIELD", "PID-3 patient identifier list has no identifier")
    mrn = mrn_rep.component(1).strip()
    ctx.mrn = mrn
    pid_id = ctx.rid("Patient", mrn)
    ctx.patient_ref = f"Patient/{pid_id}"
    ctx.visit_key = ctx.encounter_ref = ctx.report = ctx.report_key = None

    identifiers: list[dict] = []
    seen: set[tuple] = set()

    def add(ident: dict | None) -> None:
        if ident and (key := (ident.get("system"), ident["value"])) not in seen:
            seen.add(key)
            identifiers.append(ident)

    add(dt.identifier(mrn_rep, ctx.hospital, system=mrn_system(ctx.hospital), type_code="MR"))
    for n in (3, 2, 4):
        for rep in pid.field(n).repetitions:
            if rep is mrn_rep:
                continue
            if rep.component(5).strip().upper() in _NATIONAL_TYPES:
                add(dt.identifier(rep, ctx.hospital, system=NATIONAL_ID_SYSTEM))
            else:
                add(dt.identifier(rep, ctx.hospital))
    ssn = pid.field(19).value.strip()
    if ssn:
        add({"value": ssn, "type": {"coding": [{"system": vocab.V2_0203, "code": "SS"}]}})

    patient: dict = {"resourceType": "Patient", "id": pid_id, "identifier": identifiers}
    names = dt.human_names(pid.field(5).repetitions)
    if names:
        patient["name"] = names
    sex = pid.field(8).value.strip().upper()
    if sex:
        # Gender has a required binding; a code outside table 0001 can only be said as "unknown".
        patient["gender"] = vocab.ADMINISTRATIVE_SEX.get(sex, "unknown")
    birth = pid.field(7).value
    birth_date = dt.fhir_date(birth, "PID-7")
    if birth_date:
        patient["birthDate"] = birth_date
        birth_time = dt.fhir_datetime(birth, "PID-7", ctx.tz)
        if birth_time and "T" in birth_time:
            patient["_birthDate"] = {"extension": [{"url": vocab.BIRTH_TIME_EXT, "valueDateTime": birth_time}]}
    addresses = [a for a in (dt.address(r) for r in pid.field(11).repetitions) if a]
    if addresses:
        patient["address"] = addresses
    telecom = [t for t in (dt.contact_point(r, "home") for r in pid.field(13).repetitions) if t]
    telecom += [t for t in (dt.contact_point(r, "work") for r in pid.field(14).repetitions) if t]
    telecom += [t for t in (dt.contact_point(r) for r in pid.field(40).repetitions) if t]
    if telecom:
        patient["telecom"] = telecom
    marital = pid.field(16).value.strip().upper()
    if marital in vocab.MARITAL:
        m_code, m_display = vocab.MARITAL[marital]
        patient["maritalStatus"] = {"coding": [{"system": vocab.MARITAL_STATUS, "code": m_code, "display": m_display}]}
    death = dt.fhir_datetime(pid.field(29).value, "PID-29", ctx.tz)
    if death:
        patient["deceasedDateTime"] = death
    else:
        flag = pid.field(30).value.strip().upper()
        if flag in ("Y", "N"):
            patient["deceasedBoolean"] = flag == "Y"
    order = pid.field(25).value.strip()
    if order.isdigit():
        patient["multipleBirthInteger"] = int(order)
    elif pid.field(24).value.strip().upper() in ("Y", "N"):
        patient["multipleBirthBoolean"] = pid.field(24).value.strip().upper() == "Y"
    return ctx.add(patient)


def map_related_person(ctx: Context, nk1: Segment, index: int) -> dict | None:
    names = dt.human_names(nk1.field(2).repetitions)
    if not names and not nk1.field(3):
        return None  # NK1 describing an organisation contact only (NK1-13) is not a person
    set_id = nk1.field(1).value.strip() or f"#{index}"
    person: dict = {
        "resourceType": "RelatedPerson",
        "id": ctx.rid("RelatedPerson", f"patient|{ctx.mrn}|{set_id}"),
        "patient": {"reference": ctx.patient_ref},
    }
    if names:
        person["name"] = names
    rel = nk1.field(3).repetitions
    if rel:
        relationship = vocab.RELATIONSHIP.get(rel[0].component(1).strip().upper())
        if relationship:
            person["relationship"] = [{"coding": [{"system": relationship[0], "code": relationship[1]}]}]
        else:
            concept = dt.codeable_concept(rel[0], ctx.hospital, "relationship")
            if concept:
                person["relationship"] = [concept]
    addresses = [a for a in (dt.address(r) for r in nk1.field(4).repetitions) if a]
    if addresses:
        person["address"] = addresses
    telecom = [t for t in (dt.contact_point(r, "home") for r in nk1.field(5).repetitions) if t]
    telecom += [t for t in (dt.contact_point(r, "work") for r in nk1.field(6).repetitions) if t]
    if telecom:
        person["telecom"] = telecom
    return ctx.add(person)
