"""TXA + OBX -> DocumentReference (MDM^T01-T11; IG TXA[DocumentReference], OBX[DocumentReference]).

The note text travels in the DocumentReference's attachment: it is PHI and lives only in silver (the
phi zone); conf/deid.yaml has no view of it, so curate publishes nothing of it.
"""

from __future__ import annotations

import base64

from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import vocab
from transforms.hl7v2._context import Context
from transforms.hl7v2.parse import Segment

#: TXA-17 (table 0271, document completion status) -> DocumentReference.docStatus.
DOC_STATUS = {"AU": "final", "LA": "final", "DI": "preliminary", "DO": "preliminary", "IN": "preliminary",
              "IP": "preliminary", "PA": "preliminary"}
#: TXA-19 (table 0273, availability) -> DocumentReference.status (required). The IG maps AV -> current and
#: keeps CA/OB/UN in an extension; R4 still needs a status, so the nearest is chosen: obsolete ->
#: superseded, cancelled -> entered-in-error, unavailable (e.g. under review) -> current.
AVAILABILITY_STATUS = {"AV": "current", "OB": "superseded", "CA": "entered-in-error", "UN": "current"}
#: TXA-18 (table 0272) -> v3 Confidentiality (IG DocumentConfidentialityStatus).
CONFIDENTIALITY = {"V": "V", "R": "R", "U": "U"}
_CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_V2_0270 = "http://terminology.hl7.org/CodeSystem/v2-0270"


def map_document(ctx: Context, txa: Segment, index: int) -> dict:
    """TXA -> DocumentReference, keyed by TXA-12 unique document number (else MSH-10 + TXA-1)."""
    number = txa.field(12).component(1).strip()
    key = f"doc|{number}" if number else f"msg|{ctx.message.control_id}|{txa.value(1).strip() or index}"
    document: dict = {
        "resourceType": "DocumentReference",
        "id": ctx.rid("DocumentReference", key),
        "status": AVAILABILITY_STATUS.get(txa.value(19).strip().upper(), "current"),
        "subject": {"reference": ctx.patient_ref},
        "content": [],
    }
    if number:
        master = {"value": number}
        system = dt.ei_system(txa.field(12).repetitions[0], ctx.hospital)
        if system:
            master["system"] = system
        document["masterIdentifier"] = master
    file_name = txa.field(16).component(1).strip()
    if file_name:
        document["identifier"] = [{"value": file_name}]
    doc_status = DOC_STATUS.get(txa.value(17).strip().upper())
    if doc_status:
        document["docStatus"] = doc_status
    doc_type = txa.field(2).first
    if doc_type is not None:
        concept = dt.codeable_concept(doc_type, ctx.hospital, "document-type")
        if concept and not doc_type.component(3).strip():
            concept["coding"][0]["system"] = _V2_0270  # TXA-2 without a coding system is table 0270
        if concept:
            document["type"] = concept
    created = (dt.fhir_instant(txa.value(6), "TXA-6", ctx.tz)
               or dt.fhir_instant(txa.value(4), "TXA-4", ctx.tz))
    if created:
        document["date"] = created
    title = txa.field(25).text().strip()
    if title:
        document["description"] = title
    label = CONFIDENTIALITY.get(txa.value(18).strip().upper())
    if label:
        document["securityLabel"] = [{"coding": [{"system": _CONFIDENTIALITY_SYSTEM, "code": label}]}]
    if ctx.encounter_ref:
        document["context"] = {"encounter": [{"reference": ctx.encounter_ref}]}
    document = ctx.add(document)
    ctx.document = document
    return document


def _attachment(obx: Segment) -> dict | None:
    """OBX-5 as an Attachment (IG OBX[DocumentReference]): text types as UTF-8 data, ED as its payload,
    RP as a URL. Text is stored unescaped (``\\.br\\`` as a line break), hence text/plain, not text/hl7v2."""
    value_type = obx.value(2).strip().upper()
    reps = obx.field(5).repetitions
    if not reps:
        return None
    if value_type == "ED":
        rep = reps[0]
        data = rep.component(5).strip()
        subtype = rep.component(3).strip().lower()
        kind = rep.component(2).strip().lower()
        if not data or rep.component(4).strip().upper() != "BASE64":
            return None
        content_type = {"pdf": "application/pdf", "rtf": "application/rtf", "jpeg": "image/jpeg",
                        "png": "image/png", "html": "text/html", "xml": "text/xml"}.get(subtype)
        out = {"data": data}
        if content_type or kind:
            out["contentType"] = content_type or "application/octet-stream"
        return out
    if value_type == "RP":
        url = reps[0].component(1).strip()
        return {"url": url} if url else None
    text = "\n".join(r.text() for r in reps).strip()
    if not text:
        return None
    return {"contentType": "text/plain; charset=utf-8", "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}


def attach_obx(ctx: Context, obx: Segment) -> None:
    """An OBX of an MDM: one more piece of the current document's content."""
    document = ctx.document
    if document is None:
        return
    attachment = _attachment(obx)
    if attachment is not None:
        document["content"].append({"attachment": attachment})


def finish_document(ctx: Context) -> None:
    """content is 1..*: a document notification without content (MDM^T01) says its content is absent."""
    document = ctx.document
    if document is not None and not document["content"]:
        document["content"].append({"attachment": {"extension": [
            {"url": vocab.DATA_ABSENT_EXT, "valueCode": "unknown"}]}})
    ctx.document = None
