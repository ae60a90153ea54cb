"""RDE -> MedicationRequest, SIU -> Appointment, MDM -> DocumentReference (and the document text stays in it)."""

from __future__ import annotations

import base64

import pytest

from transforms.errors import RecordError
from transforms.ids import resource_id

from hl7v2_messages import HOSPITAL, PID, PV1, convert, msg


def one(resources, resource_type):
    found = [r for r in resources if r["resourceType"] == resource_type]
    assert len(found) == 1, [r["resourceType"] for r in resources]
    return found[0]


def msh(message_type: str, control: str = "CTRL0100") -> str:
    return f"MSH|^~\\&|APP|HOSPA|LAKE|REGION|20240103080000+0800||{message_type}|{control}|P|2.5.1"


RDE = msg(
    msh("RDE^O11^RDE_O11"), PID, PV1,
    "ORC|NW|RX100^CPOE|||||||20240103075500+0800",
    "RXO|00047040230^Ampicillin 250 mg caps^NDC|2||caps^capsule",
    "RXE||00047040230^Ampicillin 250 mg caps^NDC|250|500|mg^milligram^UCUM||Take with food|||20|caps^capsule|3",
    "RXR|PO^Oral^HL70162",
)


def test_rde_is_a_medication_request(terminology):
    request = one(convert(RDE, terminology), "MedicationRequest")
    assert request["status"] == "active" and request["intent"] == "original-order"
    assert request["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/ndc", "code": "00047040230", "display": "Ampicillin 250 mg caps"}
    assert request["authoredOn"] == "2024-01-03T07:55:00+08:00"
    dosage = request["dosageInstruction"][0]
    assert dosage["text"] == "Take with food"
    assert dosage["doseAndRate"][0]["doseRange"] == {
        "low": {"value": 250, "unit": "milligram", "system": "http://unitsofmeasure.org", "code": "mg"},
        "high": {"value": 500, "unit": "milligram", "system": "http://unitsofmeasure.org", "code": "mg"}}
    assert dosage["route"]["coding"][0]["code"] == "PO"
    assert request["dispenseRequest"] == {"quantity": {"value": 20, "unit": "capsule"}, "numberOfRepeatsAllowed": 3}
    assert request["encounter"]["reference"] == f"Encounter/{resource_id(HOSPITAL, 'Encounter', 'V555')}"
    # The id is the order's (ORC-2), so a later RDE of the same order updates the same row.
    assert request["id"] == resource_id(HOSPITAL, "MedicationRequest", "patient|MRN123|order|RX100")


def test_rde_without_a_drug_code_is_quarantined(terminology):
    drug = "00047040230^Ampicillin 250 mg caps^NDC"
    text = RDE.replace(f"RXE||{drug}|", "RXE|||").replace(f"RXO|{drug}|", "RXO||")
    with pytest.raises(RecordError) as err:
        convert(text, terminology)
    assert err.value.code == "MISSING_FIELD" and err.value.reason == "RXE-2 give code is empty"


SIU = msg(
    msh("SIU^S12^SIU_S12"),
    "SCH|P100|F200||||CHECKUP^Routine checkup^HL70276|NORMAL^Routine^HL70277|30|min||||||||||||||Booked",
    "TQ1|||||||20240110093000+0800|20240110100000+0800",
    PID, PV1,
    "RGS|1",
    "AIS|1||76164006^Biopsy of colon^SCT|20240110093000+0800|||30|min",
)


def test_siu_is_an_appointment_for_the_patient(terminology):
    appointment = one(convert(SIU, terminology), "Appointment")
    assert appointment["status"] == "booked"
    assert appointment["start"] == "2024-01-10T09:30:00+08:00" and appointment["end"] == "2024-01-10T10:00:00+08:00"
    assert appointment["minutesDuration"] == 30
    patient_ref = f"Patient/{resource_id(HOSPITAL, 'Patient', 'MRN123')}"
    assert appointment["participant"] == [{"actor": {"reference": patient_ref}, "status": "needs-action"}]
    assert [i["value"] for i in appointment["identifier"]] == ["P100", "F200"]
    assert appointment["serviceType"][0]["coding"][0]["code"] == "76164006"
    assert appointment["id"] == resource_id(HOSPITAL, "Appointment", "fill|F200")


@pytest.mark.parametrize("trigger,status", [("S15", "cancelled"), ("S26", "noshow"), ("S17", "entered-in-error")])
def test_appointment_status_from_the_trigger_without_sch_25(terminology, trigger, status):
    text = SIU.replace("SIU^S12^SIU_S12", f"SIU^{trigger}^SIU_S12").replace("|||Booked", "|||")
    assert one(convert(text, terminology), "Appointment")["status"] == status


def test_booked_appointment_without_times_is_quarantined(terminology):
    text = SIU.replace("TQ1|||||||20240110093000+0800|20240110100000+0800", "TQ1|1").replace(
        "|20240110093000+0800|||30|min", "||||")
    with pytest.raises(RecordError) as err:
        convert(text, terminology)
    assert err.value.code == "MISSING_FIELD" and "appointment start and end" in err.value.reason


MDM = msg(
    msh("MDM^T02^MDM_T02"), "EVN|T02|20240103080000+0800", PID, PV1,
    "TXA|1|DS|TX|20240103075000+0800||20240103075500+0800||||||DOC-77^NOTES||||note.rtf|AU||AV||||||Discharge summary",
    "OBX|1|TX|DS^Discharge summary^L||Patient Wang Li recovered well.||||||F",
    "OBX|2|FT|DS^Discharge summary^L||Follow up\\.br\\in two weeks.||||||F",
)


def test_mdm_is_a_document_reference_holding_the_note(terminology):
    resources = convert(MDM, terminology)
    assert not [r for r in resources if r["resourceType"] == "Observation"]  # document content, not results
    document = one(resources, "DocumentReference")
    assert document["status"] == "current" and document["docStatus"] == "final"
    assert document["type"]["coding"][0] == {"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": "DS"}
    assert document["masterIdentifier"]["value"] == "DOC-77"
    assert document["date"] == "2024-01-03T07:55:00+08:00"
    assert document["description"] == "Discharge summary"
    texts = [base64.b64decode(c["attachment"]["data"]).decode("utf-8") for c in document["content"]]
    assert texts == ["Patient Wang Li recovered well.", "Follow up\nin two weeks."]
    assert document["context"]["encounter"][0]["reference"] == f"Encounter/{resource_id(HOSPITAL, 'Encounter', 'V555')}"


def test_document_notification_without_content_says_it_is_absent(terminology):
    text = MDM.replace("MDM^T02", "MDM^T01").split("\rOBX")[0]
    document = one(convert(text, terminology), "DocumentReference")
    assert document["content"][0]["attachment"]["extension"][0]["valueCode"] == "unknown"
