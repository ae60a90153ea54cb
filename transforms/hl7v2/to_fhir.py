"""One HL7 v2 message -> FHIR R4 resources, following the HL7 v2-to-FHIR IG.

The message is walked segment by segment rather than through per-structure grammars: PID starts a
patient, PV1 its visit, OBR a result group, and the clinical segments after them hang off the latest
of each. That covers ADT (A01-A60), ORU/OUL, VXU and the orders and scheduling messages with one code
path, and tolerates the segment orders real interfaces send. SIU's SCH comes before PID: it is held
and becomes an Appointment of the message's patients at the end.

Ids are deterministic (`transforms.ids.resource_id`) from hospital-local keys:

=================  ==========================================================================
Patient            MRN (PID-3 typed MR, else first PID-3; ``overrides["mrn_field"]``)
Encounter          PV1-19 visit number (else MRN + PV1-44 admit time; else MRN + MSH-10 + PV1)
DiagnosticReport   OBR-3 filler order, else OBR-2 placer order, else MSH-10 + OBR-1
Observation        report key + OBX-1 (or position); outside a report: visit/patient + code + time
Condition          visit (else patient) + DG1-1 (else DG1-3 code, else position)
Procedure          visit (else patient) + PR1-1 (else code); AllergyIntolerance: patient + AL1-3
RelatedPerson      patient + NK1-1; Coverage: patient + IN1-3 + IN1-36 + IN1-1
Immunization       patient + ORC-3 filler order (else vaccine code + RXA-3)
Specimen           report key + "obr" (IG OBR[Specimen]); report key + SPM-2 (SPM)
ServiceRequest     the report key of its OBR (ORC + OBR, in orders and results)
MedicationRequest  patient + ORC-2 placer order (else ORC-3; else MSH-10 + RXE position)
Appointment        SCH-2 filler appointment id, else SCH-1 placer, else MSH-10
DocumentReference  TXA-12 unique document number, else MSH-10 + TXA-1
=================  ==========================================================================
"""

from __future__ import annotations

import re

from transforms.errors import RecordError
from transforms.hl7v2 import (
    _documents, _encounter, _immunization, _medications, _patient, _results, _scheduling, _zsegments,
)
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Message, Segment, parse_message
from transforms.terminology import Terminology

__all__ = ["message_to_resources", "message_type", "check_overrides", "SUPPORTED_MESSAGE_CODES"]

#: Message codes whose patient-level content is mapped. Others raise UNSUPPORTED.
SUPPORTED_MESSAGE_CODES = frozenset({
    "ADT", "ORU", "OUL", "VXU", "ORM", "OML", "OMG", "SIU", "MDM", "DFT", "BAR", "RDE", "RDS", "REF",
    "PPR", "RRI", "OMB", "OMP", "RAS", "RGV", "PEX",
})
#: Messages whose OBR/OBX are results (DiagnosticReport + Observations).
_RESULT_CODES = frozenset({"ORU", "OUL"})
#: Order messages: their ORC/OBR groups are ServiceRequests (IG ORM_O01, OML_O21).
_ORDER_CODES = frozenset({"ORM", "OML", "OMG", "OMB", "OMP"})
#: Messages whose OBX carry document content (DocumentReference content), not observations.
_DOCUMENT_CODES = frozenset({"MDM"})

#: ADT events whose message structure requires PV1 (ADT_A01, ADT_A02, ADT_A03): without it the message
#: is not whole (typically a delivery cut short inside PID), so it is a PARSE error, not a patient
#: without a visit; mapping the readable part would count a person from half a message.
_PV1_REQUIRED_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A08", "A13"})

_TZ = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")


def message_type(text_or_message: str | Message) -> str:
    """``ADT^A01``-style type of a message (raises `RecordError` PARSE when it is not one)."""
    msg = text_or_message if isinstance(text_or_message, Message) else parse_message(text_or_message)
    return msg.type


def check_overrides(overrides: dict | None) -> None:
    """Raise ValueError naming the first bad per-hospital override (for checking conf at load time)."""
    overrides = overrides or {}
    _timezone(overrides)
    _zsegments.z_rules(overrides)


def _timezone(overrides: dict) -> str | None:
    tz = overrides.get("timezone")
    if tz is None:
        return None
    if not isinstance(tz, str) or not _TZ.match(tz):
        raise ValueError(f"hl7v2.timezone must be an offset like '+08:00', got {tz!r}")
    return tz


def message_to_resources(
    text: str, *, hospital: str, terminology: Terminology, overrides: dict | None = None,
) -> list[dict]:
    """FHIR R4 resources (dicts with deterministic ids) for one HL7 v2 message.

    ``overrides`` (per hospital, from conf): ``timezone`` ("+08:00", for times sent without an offset),
    ``mrn_field`` ("PID-2" when the MRN is not in PID-3), ``mrn_type`` (CX.5 of the MRN, default MR),
    ``missing_mrn`` ("keep"), ``z_segments`` (Z-segment fields -> Patient identifiers/extensions, see
    `transforms.hl7v2._zsegments`); `check_overrides` checks them without a message.
    Raises `RecordError` for anything that cannot be mapped; the reason never holds field values.
    """
    overrides = overrides or {}
    msg = parse_message(text)
    code = msg.type.partition("^")[0]
    if code not in SUPPORTED_MESSAGE_CODES:
        raise RecordError("UNSUPPORTED", f"message type {_safe(code)} is not mapped")
    ctx = Context(msg, hospital, terminology, overrides, _timezone(overrides))
    z_rules = _zsegments.z_rules(overrides)
    results = code in _RESULT_CODES
    documents = code in _DOCUMENT_CODES
    counters: dict[str, int] = {}
    obx_set_ids: set = set()
    obx_statuses: list[str] = []
    order_key = ""

    def count(name: str) -> int:
        counters[name] = counters.get(name, 0) + 1
        return counters[name]

    schedule: dict[str, Segment] = {}  # SIU: the SCH (before PID) and its first TQ1 and AIS

    for seg in msg.all_segments:
        name = seg.name
        if code == "SIU" and name in ("SCH", "TQ1", "AIS"):
            schedule.setdefault(name, seg)
            continue
        if name == "PID":
            _results.finish_report(ctx, obx_statuses)
            _patient.map_patient(ctx, seg)
            obx_set_ids, obx_statuses, order_key = set(), [], ""
            ctx.last = ctx.immunization = ctx.order = ctx.request = None
            continue
        if name == "MSH" or ctx.patient_ref is None:
            continue  # segments before the first PID (EVN, SCH, ...) describe the event, not a person
        if name == "PV1":
            _encounter.map_encounter(ctx, seg, count("PV1"))
        elif name == "MRG":
            _patient.link_merged(ctx, seg)
        elif name == "NK1":
            _patient.map_related_person(ctx, seg, count("NK1"))
        elif name == "DG1":
            _encounter.map_condition(ctx, seg, count("DG1"))
        elif name == "PR1":
            _encounter.map_procedure(ctx, seg, count("PR1"))
        elif name == "AL1":
            _encounter.map_allergy(ctx, seg, count("AL1"))
        elif name == "IN1":
            _encounter.map_coverage(ctx, seg, count("IN1"))
        elif name == "ORC":
            order_key = seg.value(3).strip() or seg.value(2).strip()
            ctx.immunization = ctx.medication = ctx.rx_order = None
            ctx.order = seg
        elif name == "OBR":
            _results.finish_report(ctx, obx_statuses)
            obx_set_ids, obx_statuses = set(), []
            _results.map_report(ctx, seg, count("OBR"), as_report=results,
                                as_request=code in _ORDER_CODES or results, with_specimen=code == "OML")
        elif name == "OBX" and ctx.immunization is not None and _immunization.attach_obx(ctx, ctx.immunization, seg):
            continue
        elif name == "OBX" and documents:
            _documents.attach_obx(ctx, seg)
        elif name == "OBX":
            obs = _results.map_observation(ctx, seg, count("OBX"), obx_set_ids)
            obx_statuses.append(obs["status"])
        elif name == "TXA" and documents:
            _documents.finish_document(ctx)
            _documents.map_document(ctx, seg, count("TXA"))
        elif name == "NTE":
            _results.attach_note(ctx, seg)
        elif name == "SPM" and (results or code == "OML"):
            _results.map_specimen(ctx, seg, count("SPM"))
        elif name == "RXA":
            _immunization.map_immunization(ctx, seg, count("RXA"), order_key)
        elif name in z_rules:
            _zsegments.apply(ctx, seg, z_rules[name])
        elif name == "RXO" and code == "RDE":
            ctx.rx_order = seg
        elif name == "RXE" and code == "RDE":
            _medications.map_medication_request(ctx, seg, count("RXE"), ctx.rx_order)
        elif name == "RXR" and code == "RDE":
            _medications.attach_route(ctx, seg)
    _results.finish_report(ctx, obx_statuses)
    _documents.finish_document(ctx)
    if "SCH" in schedule:
        patients = [f"Patient/{r['id']}" for r in ctx.resources if r["resourceType"] == "Patient"]
        _scheduling.map_appointment(ctx, schedule["SCH"], schedule.get("TQ1"), schedule.get("AIS"), patients)
    if ctx.patient_ref is None:
        raise RecordError("MISSING_FIELD", "PID segment is missing")
    trigger = msg.type.partition("^")[2].partition("^")[0]
    if code == "ADT" and trigger in _PV1_REQUIRED_EVENTS and "PV1" not in counters:
        raise RecordError("PARSE", f"PV1 segment is missing (required by the ADT^{trigger} structure)")
    return ctx.resources


def _safe(code: str) -> str:
    # The message code is structural, but keep the reason short and printable whatever was sent.
    return code if code.isascii() and code.isalnum() and len(code) <= 4 else "(unreadable)"
