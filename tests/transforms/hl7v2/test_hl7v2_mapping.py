"""message_to_resources: Patient, Encounter, Condition, DiagnosticReport, Observation, others; quarantine codes."""

from __future__ import annotations

import pytest

from transforms.errors import RecordError
from transforms.fhir_validate import validate
from transforms.hl7v2 import message_to_resources
from transforms.ids import resource_id
from transforms.systems import ICD10, LOINC, NATIONAL_ID_SYSTEM, UCUM, mrn_system, visit_system

from hl7v2_messages import ADT_A01, ADT_A03, HOSPITAL, MSH_ADT_A01, ORU_R01, PID, PV1, convert, msg, pv1


def by_type(resources, resource_type):
    return [r for r in resources if r["resourceType"] == resource_type]


def segment(name: str, values: dict[int, str]) -> str:
    fields = [""] * (max(values) + 1)
    for n, v in values.items():
        fields[n] = v
    return name + "|" + "|".join(fields[1:])


def code_of(exc) -> str:
    return exc.value.code


def test_adt_a01_patient(terminology):
    [patient] = by_type(convert(ADT_A01, terminology), "Patient")
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "MRN123")
    assert patient["identifier"][0]["system"] == mrn_system(HOSPITAL)
    assert patient["identifier"][0]["value"] == "MRN123"
    assert {"system": NATIONAL_ID_SYSTEM, "value": "NAT987"}.items() <= patient["identifier"][1].items()
    assert patient["name"] == [{"family": "Wang", "given": ["Li"]}]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1980-02-15"
    assert patient["address"][0] == {"line": ["1 Long Street"], "city": "Springfield", "postalCode": "100001",
                                     "use": "home"}
    assert patient["telecom"] == [{"system": "phone", "value": "13800000000", "use": "home"}]


def test_adt_a01_encounter_and_condition(terminology):
    resources = convert(ADT_A01, terminology)
    [enc] = by_type(resources, "Encounter")
    patient_ref = f"Patient/{resource_id(HOSPITAL, 'Patient', 'MRN123')}"
    assert enc["id"] == resource_id(HOSPITAL, "Encounter", "V555")
    assert enc["status"] == "in-progress"
    assert enc["class"]["code"] == "IMP"
    assert enc["identifier"][0]["system"] == visit_system(HOSPITAL)
    assert enc["period"] == {"start": "2024-01-02T10:00:00+08:00"}
    assert enc["subject"]["reference"] == patient_ref
    [cond] = by_type(resources, "Condition")
    assert cond["code"]["coding"][0] == {"system": ICD10, "code": "E11.9",
                                         "display": "Type 2 diabetes mellitus without complications"}
    assert cond["encounter"]["reference"] == f"Encounter/{enc['id']}"
    assert cond["subject"]["reference"] == patient_ref


def test_adt_a03_finishes_the_same_encounter(terminology):
    a01 = by_type(convert(ADT_A01, terminology), "Encounter")[0]
    a03 = by_type(convert(ADT_A03, terminology), "Encounter")[0]
    assert a03["id"] == a01["id"]
    assert a03["status"] == "finished"
    assert a03["period"]["end"] == "2024-01-05T12:00:00+08:00"


@pytest.mark.parametrize("trigger,status", [("A04", "planned"), ("A08", "unknown"), ("A11", "cancelled"),
                                            ("A13", "in-progress"), ("A02", "in-progress")])
def test_encounter_status_from_trigger(terminology, trigger, status):
    text = msg(MSH_ADT_A01.replace("ADT^A01^ADT_A01", f"ADT^{trigger}"), PID, pv1())
    assert by_type(convert(text, terminology), "Encounter")[0]["status"] == status


@pytest.mark.parametrize("cls,code", [("I", "IMP"), ("O", "AMB"), ("E", "EMER"), ("P", "PRENC"), ("R", "R"),
                                      ("B", "B")])
def test_patient_class(terminology, cls, code):
    text = msg(MSH_ADT_A01, PID, pv1(cls))
    assert by_type(convert(text, terminology), "Encounter")[0]["class"]["code"] == code


def test_unknown_patient_class_is_quarantined(terminology):
    with pytest.raises(RecordError) as err:
        convert(msg(MSH_ADT_A01, PID, pv1("Z")), terminology)
    assert code_of(err) == "UNKNOWN_CODE" and err.value.reason == "PV1-2 patient class has no mapping"


def test_pv1_without_visit_number_is_an_encounter_of_that_message(terminology):
    # IG PV1[Encounter]: every PV1 is an Encounter; without PV1-19 or PV1-44 it is keyed by MSH-10 and
    # the segment, so a re-delivery gives the same id and another message another one.
    text = msg(MSH_ADT_A01, PID, pv1("I", visit="", admit=""))
    [enc] = by_type(convert(text, terminology), "Encounter")
    assert by_type(convert(text, terminology), "Encounter")[0]["id"] == enc["id"]
    other = by_type(convert(text.replace("CTRL0001", "CTRL0009"), terminology), "Encounter")[0]
    assert other["id"] != enc["id"] and enc["class"]["code"] == "IMP"


def test_placeholder_pv1_of_class_n_makes_no_encounter(terminology):
    text = msg(MSH_ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A31^ADT_A05"), PID, pv1("N", visit="", admit=""))
    assert by_type(convert(text, terminology), "Encounter") == []


def test_result_pv1_without_class_says_the_class_is_absent(terminology):
    text = ORU_R01.replace(PV1, "PV1|1||W1^R2")
    [enc] = by_type(convert(text, terminology), "Encounter")
    assert enc["class"]["extension"][0]["valueCode"] == "unknown" and enc["status"] == "unknown"


def test_adt_pv1_without_class_is_quarantined(terminology):
    with pytest.raises(RecordError) as err:
        convert(msg(MSH_ADT_A01, PID, pv1("", visit="")), terminology)
    assert code_of(err) == "MISSING_FIELD" and err.value.reason == "PV1-2 patient class is empty"


def test_orm_order_is_a_service_request(terminology):
    text = msg(
        "MSH|^~\\&|CPOE|HOSPA|LAKE|REGION|20240103080000+0800||ORM^O01^ORM_O01|CTRL0003|P|2.5.1",
        PID, PV1,
        "ORC|NW|PL777^CPOE|FL888^LIS|GRP1|||||20240103075500+0800",
        "OBR|1|PL777^CPOE||24323-8^Comprehensive metabolic panel^LN|S",
    )
    resources = convert(text, terminology)
    [request] = by_type(resources, "ServiceRequest")
    assert request["status"] == "active" and request["intent"] == "order" and request["priority"] == "stat"
    assert request["code"]["coding"][0]["code"] == "24323-8"
    assert request["authoredOn"] == "2024-01-03T07:55:00+08:00"
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in request["identifier"]] == [
        ("PLAC", "PL777"), ("FILL", "FL888")]
    assert request["requisition"]["value"] == "GRP1"
    assert request["encounter"]["reference"] == f"Encounter/{resource_id(HOSPITAL, 'Encounter', 'V555')}"
    assert by_type(resources, "DiagnosticReport") == []


def test_oru_report_is_based_on_the_service_request_of_its_obr(terminology):
    resources = convert(ORU_R01, terminology)
    [request] = by_type(resources, "ServiceRequest")
    [report] = by_type(resources, "DiagnosticReport")
    assert report["basedOn"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    assert request["status"] == "unknown"  # no ORC: nothing says the order's state


def test_impossible_birth_date_is_quarantined_without_the_value(terminology):
    with pytest.raises(RecordError) as err:
        convert(msg(MSH_ADT_A01, PID.replace("19800215", "19800231"), PV1), terminology)
    assert code_of(err) == "INVALID_DATE" and "PID-7" in err.value.reason and "19800231" not in str(err.value)


def test_partial_birth_dates_keep_their_precision(terminology):
    for value, expected in (("1980", "1980"), ("198002", "1980-02")):
        patient = by_type(convert(msg(MSH_ADT_A01, PID.replace("19800215", value), PV1), terminology), "Patient")[0]
        assert patient["birthDate"] == expected


def test_birth_time_extension_with_timezone(terminology):
    text = msg(MSH_ADT_A01, PID.replace("19800215", "198002150930"), PV1)
    patient = by_type(convert(text, terminology, timezone="+08:00"), "Patient")[0]
    assert patient["birthDate"] == "1980-02-15"
    assert patient["_birthDate"]["extension"][0]["valueDateTime"] == "1980-02-15T09:30:00+08:00"


def test_mrn_from_first_repetition_when_none_is_typed_mr(terminology):
    text = msg(MSH_ADT_A01, PID.replace("MRN123^^^HOSPA^MR~", "X1^^^HOSPA^PI~"), PV1)
    patient = by_type(convert(text, terminology), "Patient")[0]
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "X1")


def test_mrn_in_pid2_by_override(terminology):
    text = msg(MSH_ADT_A01, PID.replace("PID|1||", "PID|1|P2^^^HOSPA||"), PV1)
    patient = by_type(convert(text, terminology, mrn_field="PID-2"), "Patient")[0]
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "P2")


def test_missing_patient_identifier_is_quarantined(terminology):
    with pytest.raises(RecordError) as err:
        convert(msg(MSH_ADT_A01, "PID|1||||Doe^J", PV1), terminology)
    assert code_of(err) == "MISSING_FIELD"


def test_gender_vocabulary(terminology):
    for sex, gender in (("M", "male"), ("F", "female"), ("O", "other"), ("U", "unknown"), ("A", "other")):
        patient = by_type(convert(msg(MSH_ADT_A01, PID.replace("|F|", f"|{sex}|"), PV1), terminology), "Patient")[0]
        assert patient["gender"] == gender


def test_deceased(terminology):
    fields = PID.split("|") + [""] * 20
    fields[29], fields[30] = "20240101", "Y"
    patient = by_type(convert(msg(MSH_ADT_A01, "|".join(fields[:31]), PV1), terminology), "Patient")[0]
    assert patient["deceasedDateTime"] == "2024-01-01"
    fields[29] = ""
    patient = by_type(convert(msg(MSH_ADT_A01, "|".join(fields[:31]), PV1), terminology), "Patient")[0]
    assert patient["deceasedBoolean"] is True


def test_oru_report_and_observations(terminology):
    resources = convert(ORU_R01, terminology)
    [report] = by_type(resources, "DiagnosticReport")
    obs = by_type(resources, "Observation")
    assert report["id"] == resource_id(HOSPITAL, "DiagnosticReport", "fill|FL888")
    assert report["status"] == "final"
    assert report["code"]["coding"][0]["system"] == LOINC
    assert report["effectiveDateTime"] == "2024-01-03T07:30:00+08:00"
    assert [r["reference"] for r in report["result"]] == [f"Observation/{o['id']}" for o in obs]
    glucose = obs[0]
    assert glucose["id"] == resource_id(HOSPITAL, "Observation", "fill|FL888|1")
    assert glucose["code"]["coding"] == [{"system": LOINC, "code": "2345-7", "display": "Glucose"}]
    assert glucose["valueQuantity"] == {"value": 7.8, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["referenceRange"] == [{"text": "3.9-6.1"}]
    assert glucose["status"] == "final"
    assert glucose["effectiveDateTime"] == "2024-01-03T07:50:00+08:00"
    assert glucose["encounter"]["reference"] == report["encounter"]["reference"]


def test_local_lab_code_is_translated_and_kept(terminology):
    local = by_type(convert(ORU_R01, terminology), "Observation")[1]
    assert local["code"]["coding"] == [
        {"system": f"urn:carelake:{HOSPITAL}:lab", "code": "GLU-L", "display": "Glucose local"},
        {"system": LOINC, "code": "2345-7", "display": "Glucose"},
    ]
    unmapped = by_type(convert(ORU_R01, terminology), "Observation")[2]
    assert unmapped["code"]["coding"] == [{"system": f"urn:carelake:{HOSPITAL}:lab", "code": "COMMENT",
                                           "display": "Comment"}]
    assert unmapped["valueString"] == "hemolysed sample"


ORU_HEAD = ORU_R01.split("\rOBX")[0]


@pytest.mark.parametrize("obx,expected", [
    ("OBX|1|SN|X^x^L||<^5|mg/dL^^UCUM", {"valueQuantity": {"value": 5, "comparator": "<", "unit": "mg/dL",
                                                           "system": UCUM, "code": "mg/dL"}}),
    ("OBX|1|SN|X^x^L||^1^:^128", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}}),
    ("OBX|1|SN|X^x^L||^10^-^20", {"valueRange": {"low": {"value": 10}, "high": {"value": 20}}}),
    ("OBX|1|CWE|X^x^L||260373001^Detected^SCT", {"valueCodeableConcept": {"coding": [
        {"system": "http://snomed.info/sct", "code": "260373001", "display": "Detected"}]}}),
    ("OBX|1|DT|X^x^L||20240105", {"valueDateTime": "2024-01-05"}),
    ("OBX|1|TS|X^x^L||202401051230+0800", {"valueDateTime": "2024-01-05T12:30:00+08:00"}),
    ("OBX|1|TM|X^x^L||1230", {"valueTime": "12:30:00"}),
    ("OBX|1|TX|X^x^L||line one~line two", {"valueString": "line one\nline two"}),
    ("OBX|1|NM|X^x^L||>=200", {"valueQuantity": {"value": 200, "comparator": ">="}}),
    ("OBX|1|NM|X^x^L||positive", {"valueString": "positive"}),
])
def test_value_types(terminology, obx, expected):
    [obs] = by_type(convert(msg(ORU_HEAD, obx), terminology), "Observation")
    assert {k: v for k, v in obs.items() if k.startswith("value")} == expected


def test_observation_status_and_quarantine(terminology):
    [obs] = by_type(convert(msg(ORU_HEAD, "OBX|1|NM|X^x^L||1||||||P"), terminology), "Observation")
    assert obs["status"] == "preliminary"
    with pytest.raises(RecordError) as err:
        convert(msg(ORU_HEAD, "OBX|1|NM|X^x^L||1||||||Q"), terminology)
    assert code_of(err) == "UNKNOWN_CODE" and "OBX-11" in err.value.reason


def test_invalid_observation_date_is_quarantined(terminology):
    with pytest.raises(RecordError) as err:
        convert(msg(ORU_HEAD, "OBX|1|NM|X^x^L||1||||||F|||20241340"), terminology)
    assert code_of(err) == "INVALID_DATE" and err.value.reason.startswith("OBX-14")


def test_obx_without_code_keeps_value_with_data_absent_code(terminology):
    [obs] = by_type(convert(msg(ORU_HEAD, "OBX|1|NM|||5"), terminology), "Observation")
    assert obs["code"]["extension"][0]["valueCode"] == "unknown" and obs["valueQuantity"]["value"] == 5


def test_report_key_falls_back_to_placer_then_control_id(terminology):
    head = ORU_HEAD.replace("|PL777|FL888|", "|PL777||")
    assert by_type(convert(head, terminology), "DiagnosticReport")[0]["id"] == \
        resource_id(HOSPITAL, "DiagnosticReport", "fill|PL777")
    head = ORU_HEAD.replace("|PL777|FL888|", "|||")
    assert by_type(convert(head, terminology), "DiagnosticReport")[0]["id"] == \
        resource_id(HOSPITAL, "DiagnosticReport", "msg|CTRL0002|1")


def test_ids_are_deterministic(terminology):
    assert convert(ORU_R01, terminology) == convert(ORU_R01, terminology)


def test_adt_breadth_nk1_al1_pr1_in1(terminology):
    text = msg(
        MSH_ADT_A01, PID, pv1(),
        "NK1|1|Wang^Mei|SPO^Spouse^HL70063|2 Short St^^Springfield|13900000000",
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|hives",
        "PR1|1||0DTJ4ZZ^Appendectomy^I10P||20240103090000+0800",
        segment("IN1", {1: "1", 2: "PLAN1^Basic plan", 3: "INS01", 4: "Regional Health Insurance",
                        12: "20240101", 13: "20241231", 36: "POL123"}),
    )
    resources = convert(text, terminology)
    [person] = by_type(resources, "RelatedPerson")
    codings = person["relationship"][0]["coding"]
    assert codings[0]["code"] == "SPO"  # the sender's code first, then the IG's v3 RoleCode
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "SPS"} in codings
    [allergy] = by_type(resources, "AllergyIntolerance")
    assert allergy["category"] == ["medication"] and allergy["criticality"] == "high"
    [procedure] = by_type(resources, "Procedure")
    assert procedure["performedDateTime"] == "2024-01-03T09:00:00+08:00"
    [coverage] = by_type(resources, "Coverage")
    assert coverage["subscriberId"] == "POL123" and coverage["payor"][0]["display"] == "Regional Health Insurance"
    assert coverage["period"] == {"start": "2024-01-01", "end": "2024-12-31"}


def test_vxu_immunization(terminology):
    text = msg(
        "MSH|^~\\&|EHR|HOSPA|IIS|REGION|20240101||VXU^V04^VXU_V04|C3|P|2.5.1", PID,
        "ORC|RE||IZ-1", "RXA|0|1|20240101|20240101|08^HepB^CVX|0.5|mL^^UCUM||00||||||LOT1||||||CP|A",
        "OBX|1|CE|64994-7^Eligibility^LN|1|V02^VFC eligible^HL70064||||||F",
    )
    resources = convert(text, terminology)
    [imm] = by_type(resources, "Immunization")
    assert imm["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx"
    assert imm["status"] == "completed" and imm["occurrenceDateTime"] == "2024-01-01"
    assert imm["programEligibility"][0]["coding"][0]["code"] == "V02"
    assert imm["doseQuantity"]["value"] == 0.5 and imm["lotNumber"] == "LOT1"
    assert by_type(resources, "Observation") == []


@pytest.mark.parametrize("text,code", [
    ("MSH|^~\\&|A|B|C|D|20240101||ACK^A01|1|P|2.5\rMSA|AA|1", "UNSUPPORTED"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01", "MISSING_FIELD"),
    ("garbage", "PARSE"),
])
def test_quarantine_codes(terminology, text, code):
    with pytest.raises(RecordError) as err:
        convert(text, terminology)
    assert code_of(err) == code


def test_bad_timezone_override_is_a_configuration_error(terminology):
    with pytest.raises(ValueError, match="timezone"):
        message_to_resources(ADT_A01, hospital=HOSPITAL, terminology=terminology, overrides={"timezone": "CST"})


def test_a40_merge_links_surviving_patient_to_merged_mrn(terminology):
    text = msg(
        "MSH|^~\\&|HIS|HOSPA|LAKE|REGION|20240102103000+0800||ADT^A40^ADT_A39|M1|P|2.5.1",
        "EVN|A40|20240102103000+0800",
        PID,
        "MRG|OLD777^^^HOSPA^MR",
    )
    [patient] = message_to_resources(text, hospital=HOSPITAL, terminology=terminology)
    assert patient["link"] == [{"other": {"reference": f"Patient/{resource_id(HOSPITAL, 'Patient', 'OLD777')}"},
                                "type": "replaces"}]
    validate(patient)


@pytest.mark.parametrize("trigger", ["A01", "A02", "A03", "A04", "A08", "A13"])
def test_adt_cut_inside_pid_without_pv1_is_quarantined(terminology, trigger):
    # A delivery truncated inside PID: the structure (ADT_A01/A02/A03) requires PV1, so the message is
    # incomplete and is quarantined rather than counted as a patient with no visit.
    text = msg(MSH_ADT_A01.replace("ADT^A01^ADT_A01", f"ADT^{trigger}"), PID[:40])
    with pytest.raises(RecordError) as err:
        convert(text, terminology)
    assert code_of(err) == "PARSE"
    assert err.value.reason == f"PV1 segment is missing (required by the ADT^{trigger} structure)"
    assert "MRN123" not in str(err.value)


def test_adt_a28_needs_no_pv1(terminology):
    text = msg(MSH_ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A28^ADT_A05"), PID)
    assert len(by_type(convert(text, terminology), "Patient")) == 1


Z_RULES = [
    {"field": "ZPI-3", "target": "identifier", "system": "urn:oid:2.16.840.1.113883.2.4.6.3", "type": "PI"},
    {"field": "ZPI-5.2", "target": "extension", "url": "https://hosp-b.example/fhir/StructureDefinition/tribe"},
]


def test_z_segment_fields_are_mapped_by_configuration(terminology):
    text = msg(MSH_ADT_A01, PID, "ZPI|1||BSN-1~BSN-2||x^Kayan", PV1)
    patient = by_type(convert(text, terminology, z_segments=Z_RULES), "Patient")[0]
    z_ids = [i for i in patient["identifier"] if i.get("system") == "urn:oid:2.16.840.1.113883.2.4.6.3"]
    assert [i["value"] for i in z_ids] == ["BSN-1", "BSN-2"]
    assert z_ids[0]["type"]["coding"][0]["code"] == "PI"
    assert patient["extension"] == [
        {"url": "https://hosp-b.example/fhir/StructureDefinition/tribe", "valueString": "Kayan"}]
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "MRN123")  # the key stays the MRN
    # Without the configuration the same Z-segment maps to nothing (it stays in bronze only).
    plain = by_type(convert(text, terminology), "Patient")[0]
    assert "extension" not in plain and all(i.get("system") != z_ids[0]["system"] for i in plain["identifier"])


@pytest.mark.parametrize("rule,message", [
    ({"field": "PID-3", "target": "identifier", "system": "urn:oid:1.2"}, "'field' must name a Z-segment field"),
    ({"field": "ZPI-3", "target": "name", "system": "urn:oid:1.2"}, "'target' must be one of"),
    ({"field": "ZPI-3", "target": "extension", "url": "tribe"}, "'url' must be an absolute URI"),
])
def test_bad_z_segment_configuration_is_refused_with_its_place(rule, message):
    from transforms.hl7v2 import check_overrides

    with pytest.raises(ValueError, match=message) as err:
        check_overrides({"z_segments": [rule]})
    assert "hl7v2.z_segments[1]" in str(err.value)


def test_a_patient_mapped_again_from_the_memo_is_a_fresh_equal_dict(terminology):
    # The PID of a patient's messages is mapped once and kept packed: every message gets its own copy,
    # so what one message adds (MRG link, Z-segment identifiers) never reaches another.
    first = by_type(convert(ADT_A01, terminology), "Patient")[0]
    merged = msg(MSH_ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A40^ADT_A39"), PID, "MRG|OLD777^^^HOSPA^MR")
    [linked] = message_to_resources(merged, hospital=HOSPITAL, terminology=terminology)
    again = by_type(convert(ADT_A03, terminology), "Patient")[0]
    assert "link" in linked and "link" not in first and "link" not in again
    assert again == first and again is not first
    assert again["identifier"] is not first["identifier"]


def test_a_patient_msgpack_cannot_hold_is_mapped_without_the_memo(terminology):
    # PID-25 birth order beyond 64 bits: msgpack has no form for it, so that PID is mapped each time
    # (and FHIR validation then refuses the integer, as it would have without the memo).
    pid = PID + "|" * 12 + "9" * 30
    for _ in range(2):
        resources = message_to_resources(msg(MSH_ADT_A01, pid, PV1), hospital=HOSPITAL, terminology=terminology)
        assert by_type(resources, "Patient")[0]["multipleBirthInteger"] == int("9" * 30)
