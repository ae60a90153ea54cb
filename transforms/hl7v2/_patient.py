"""PID -> Patient and NK1 -> RelatedPerson (IG segment maps PID[Patient], NK1[RelatedPerson])."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import PACK_ERRORS, Context, pack, unpack
from transforms.hl7v2.parse import Delimiters, Repetition, Segment
from transforms.ids import resource_id
from transforms.systems import NATIONAL_ID_SYSTEM, mrn_system

#: CX.5 identifier types that carry the regional national id.
_NATIONAL_TYPES = frozenset({"NI"})


def _mrn_repetition(pid: Segment, field_name: str, want_type: str) -> tuple[Repetition | None, str]:
    """The repetition holding the MRN and the field it came from.

    Default: the PID-3 repetition typed MR, else the first PID-3 repetition with a value; senders of
    v2.2/2.3 that leave PID-3 empty and put the id in PID-2 are read from there. A hospital whose MRN
    is elsewhere says so with ``overrides={"mrn_field": "PID-2"}`` (or ``"mrn_type": "PI"``), which
    arrive here upper-cased as `field_name` and `want_type`.
    """
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
    overrides = ctx.overrides
    settings = (ctx.hospital, ctx.tz, str(overrides.get("mrn_field", "PID-3")).upper(),
                str(overrides.get("mrn_type", "MR")).upper(), overrides.get("missing_mrn") == "keep")
    mrn, pid_id, packed = _packed_patient(pid.fields, pid.delimiters, *settings)
    # A fresh dict each time: later segments (MRG, Z-segments) and other mappers change the Patient.
    patient = _patient(pid, *settings)[2] if packed is None else unpack(packed)
    ctx.mrn = mrn
    ctx.patient_ref = f"Patient/{pid_id}"
    ctx.visit_key = ctx.encounter_ref = ctx.report = ctx.report_key = None
    return ctx.add(patient)


# Memoised: a patient's messages (admission, results, discharge) repeat the same PID, and mapping it was
# a quarter of an HL7 message's cost. The result is kept packed (msgpack keeps the dict order and JSON
# types exactly), so no two messages share a mutable Patient. The keys are PID fields, i.e. PHI: the
# cache is bounded, lives in this process's memory only, and is never logged or written anywhere.
@lru_cache(maxsize=4096)
def _packed_patient(fields: tuple[str, ...], d: Delimiters, hospital: str, tz: str | None, field_name: str,
                    want_type: str, keep_missing: bool) -> tuple[str, str, bytes | None]:
    """(mrn, Patient id, the Patient packed) of a PID; the packed form is None when msgpack cannot hold
    it exactly (an integer beyond 64 bits), and the caller then maps the PID itself."""
    mrn, pid_id, patient = _patient(Segment("PID", list(fields), d), hospital, tz, field_name, want_type, keep_missing)
    try:
        return mrn, pid_id, pack(patient)
    except PACK_ERRORS:
        return mrn, pid_id, None


def _patient(pid: Segment, hospital: str, tz: str | None, field_name: str, want_type: str,
             keep_missing: bool) -> tuple[str, str, dict]:
    """(mrn, Patient id, Patient) of a PID: a function of the segment and the hospital's settings only."""
    mrn_rep, _ = _mrn_repetition(pid, field_name, want_type)
    if mrn_rep is not None:
        mrn = mrn_rep.component(1).strip()
        pid_id = resource_id(hospital, "Patient", mrn)
    elif keep_missing:
        # Public-health feeds send results for people without a hospital record: keep them as a
        # Patient keyed by what PID says, left to demographic linkage; the same PID gives the same id.
        mrn = "pid#" + hashlib.sha256(pid.raw.encode("utf-8")).hexdigest()[:24]
        pid_id = resource_id(hospital, "Patient", mrn)
    else:
        raise RecordError("MISSING_FIELD", "PID-3 patient identifier list has no identifier")

    identifiers: list[dict] = []
    seen: set[tuple] = set()

    def add(ident: dict | None) -> None:
        if ident and (key := (ident.get("system"), ident["value"])) not in seen:
            seen.add(key)
            identifiers.append(ident)

    if mrn_rep is not None:
        mrn_ident = dt.identifier(mrn_rep, hospital, system=mrn_system(hospital), type_code="MR")
        sent_type = dt.code(mrn_rep.component(5))
        if mrn_ident and sent_type and sent_type.upper() != "MR":
            # The key is carelake's MRN (typed MR for linkage); the type the sender gave is kept beside it.
            mrn_ident["type"]["coding"].append({"system": vocab.V2_0203, "code": sent_type})
        add(mrn_ident)
    for n in (3, 2, 4):
        for rep in pid.field(n).repetitions:
            if rep is mrn_rep:
                continue
            if rep.component(5).strip().upper() in _NATIONAL_TYPES:
                add(dt.identifier(rep, hospital, system=NATIONAL_ID_SYSTEM))
            else:
                add(dt.identifier(rep, hospital))
    ssn = pid.value(19).strip()
    if ssn:
        add({"value": ssn, "type": {"coding": [{"system": vocab.V2_0203, "code": "SS"}]}})

    patient: dict = {"resourceType": "Patient", "id": pid_id}
    if identifiers:
        patient["identifier"] = identifiers
    names = dt.human_names(pid.field(5).repetitions)
    if names:
        patient["name"] = names
    sex = pid.value(8).strip().upper()
    if sex:
        # Gender has a required binding; a code outside table 0001 can only be said as "unknown".
        patient["gender"] = vocab.ADMINISTRATIVE_SEX.get(sex, "unknown")
    birth = pid.value(7)
    birth_date = dt.fhir_date(birth, "PID-7")
    if birth_date:
        patient["birthDate"] = birth_date
        birth_time = dt.fhir_datetime(birth, "PID-7", tz)
        if birth_time and "T" in birth_time:
            patient["_birthDate"] = {"extension": [{"url": vocab.BIRTH_TIME_EXT, "valueDateTime": birth_time}]}
    addresses = [a for a in (dt.address(r, tz) for r in pid.field(11).repetitions) if a]
    if addresses:
        patient["address"] = addresses
    telecom = [t for n, use in ((13, "home"), (14, "work"), (40, None))
               for t in (dt.contact_point(r, use, tz) for r in pid.field(n).repetitions) if t]
    if telecom:
        patient["telecom"] = telecom
    marital = pid.value(16).strip().upper()
    if marital in vocab.MARITAL:
        m_code, m_display = vocab.MARITAL[marital]
        patient["maritalStatus"] = {"coding": [{"system": vocab.MARITAL_STATUS, "code": m_code, "display": m_display}]}
    death = dt.fhir_datetime(pid.value(29), "PID-29", tz)
    if death:
        patient["deceasedDateTime"] = death
    else:
        flag = pid.value(30).strip().upper()
        if flag in ("Y", "N"):
            patient["deceasedBoolean"] = flag == "Y"
    order = pid.value(25).strip()
    if order.isdigit():
        patient["multipleBirthInteger"] = int(order)
    elif pid.value(24).strip().upper() in ("Y", "N"):
        patient["multipleBirthBoolean"] = pid.value(24).strip().upper() == "Y"
    return mrn, pid_id, patient


def _relationship(ctx: Context, rep: Repetition) -> dict | None:
    """The sender's coding first (what was said), then the IG's standard coding for table 0063."""
    concept = dt.codeable_concept(rep, ctx.hospital, "relationship")
    mapped = vocab.RELATIONSHIP.get(rep.component(1).strip().upper())
    if mapped:
        coding = {"system": mapped[0], "code": mapped[1]}
        concept = concept or {}
        if coding not in concept.setdefault("coding", []):
            concept["coding"].append(coding)
    return concept


def map_related_person(ctx: Context, nk1: Segment, index: int) -> dict | None:
    """NK1 -> RelatedPerson (IG NK1[RelatedPerson]): the next of kin (NK1-2..16) and the contact
    person of NK1-30..33, who the IG folds into the same RelatedPerson as a second name."""
    names = dt.human_names(nk1.field(2).repetitions) + dt.human_names(nk1.field(30).repetitions)
    relationships = [c for c in (_relationship(ctx, r) for r in nk1.field(3).repetitions[:1]) if c]
    relationships += [c for c in (dt.codeable_concept(r, ctx.hospital, "contact-role")
                                  for r in nk1.field(7).repetitions[:1]) if c]
    addresses = [a for n in (4, 32) for a in (dt.address(r, ctx.tz) for r in nk1.field(n).repetitions) if a]
    telecom = [t for n, use in ((5, "home"), (6, "work"), (31, None), (40, None), (41, None))
               for t in (dt.contact_point(r, use, ctx.tz) for r in nk1.field(n).repetitions) if t]
    identifiers = [i for n in (12, 33) for i in (dt.identifier(r, ctx.hospital) for r in nk1.field(n).repetitions) if i]
    ssn = nk1.value(37).strip()
    if ssn:
        identifiers.append({"value": ssn, "type": {"coding": [{"system": vocab.V2_0203, "code": "SS"}]}})
    set_id = nk1.value(1).strip() or f"#{index}"
    person: dict = {
        "resourceType": "RelatedPerson",
        "id": ctx.rid("RelatedPerson", f"patient|{ctx.mrn}|{set_id}"),
        "patient": {"reference": ctx.patient_ref},
    }
    for key, value in (("identifier", identifiers), ("relationship", relationships), ("name", names),
                       ("telecom", telecom)):
        if value:
            person[key] = value
    sex = nk1.value(15).strip().upper()
    if sex:
        person["gender"] = vocab.ADMINISTRATIVE_SEX.get(sex, "unknown")
    birth = dt.fhir_date(nk1.value(16), "NK1-16")
    if birth:
        person["birthDate"] = birth
    if addresses:
        person["address"] = addresses
    start = dt.fhir_datetime(nk1.value(8), "NK1-8", ctx.tz)
    end = dt.fhir_datetime(nk1.value(9), "NK1-9", ctx.tz)
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        person["period"] = period
    language = dt.codeable_concept(nk1.field(20).first, ctx.hospital, "language")
    if language:
        person["communication"] = [{"language": language}]
    if person.keys() <= {"resourceType", "id", "patient"}:
        return None  # an NK1 naming only an organisation (NK1-13) is not a person
    return ctx.add(person)


def link_merged(ctx: Context, mrg: Segment) -> None:
    """MRG (A40 and the other merge events): the PID patient survives and ``replaces`` the MRG-1 one.

    The link points at the id the merged MRN's Patient has (same key rule as PID-3), so person linkage
    can fold the two; the merged Patient is not rewritten here, as its own messages may come later.
    """
    reps = [r for r in mrg.field(1).repetitions if r.component(1).strip()]
    want = str(ctx.overrides.get("mrn_type", "MR")).upper()
    prior = next((r for r in reps if r.component(5).strip().upper() == want), reps[0] if reps else None)
    if prior is None or ctx.patient_ref is None:
        return
    prior_mrn = prior.component(1).strip()
    if prior_mrn == ctx.mrn:
        return
    patient_id = ctx.patient_ref.partition("/")[2]
    patient = next(r for r in ctx.resources if r["resourceType"] == "Patient" and r["id"] == patient_id)
    link = {"other": {"reference": f"Patient/{ctx.rid('Patient', prior_mrn)}"}, "type": "replaces"}
    if link not in patient.setdefault("link", []):
        patient["link"].append(link)
