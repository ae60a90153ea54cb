"""Small HL7 v2 messages in the shape of the synthetic generator (v2.5.1), and helpers.

A module of its own rather than conftest.py: `from conftest import ...` resolves to whichever
rootless conftest was imported first (tests/reliability has one too) when both folders are collected.
"""

from __future__ import annotations

from pathlib import Path

from transforms.fhir_validate import validate
from transforms.hl7v2 import message_to_resources

ROOT = Path(__file__).resolve().parents[3]
EXTDATA = (ROOT.parent / "shared" / "extdata").resolve()
HOSPITAL = "HOSPA"


def msg(*segments: str) -> str:
    return "\r".join(segments)


MSH_ADT_A01 = "MSH|^~\\&|HIS|HOSPA|LAKE|REGION|20240102103000+0800||ADT^A01^ADT_A01|CTRL0001|P|2.5.1"
PID = (
    "PID|1||MRN123^^^HOSPA^MR~NAT987^^^REGION^NI||Wang^Li||19800215|F|||"
    "1 Long Street^^Springfield^^100001^^H||13800000000"
)


def pv1(patient_class: str = "I", visit: str = "V555", admit: str = "20240102100000+0800", discharge: str = "") -> str:
    fields = [""] * 46
    fields[1], fields[2], fields[19], fields[44], fields[45] = "1", patient_class, visit, admit, discharge
    return "PV1|" + "|".join(fields[1:])


PV1 = pv1()
DG1 = "DG1|1||E11.9^Type 2 diabetes mellitus without complications^I10"

ADT_A01 = msg(MSH_ADT_A01, "EVN|A01|20240102103000+0800", PID, PV1, DG1)
ADT_A03 = msg(
    MSH_ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A03^ADT_A03"), PID, pv1(discharge="20240105120000+0800"), DG1
)

ORU_R01 = msg(
    "MSH|^~\\&|LIS|HOSPA|LAKE|REGION|20240103080000+0800||ORU^R01^ORU_R01|CTRL0002|P|2.5.1",
    PID,
    PV1,
    "OBR|1|PL777|FL888|24323-8^Comprehensive metabolic panel^LN|||20240103073000+0800",
    "OBX|1|NM|2345-7^Glucose^LN||7.8|mmol/L^^UCUM|3.9-6.1|H|||F|||20240103075000+0800",
    "OBX|2|NM|GLU-L^Glucose local^L||140|mg/dL^^UCUM|70-110|H|||F|||20240103075000+0800",
    "OBX|3|ST|COMMENT^Comment^L||hemolysed sample||||||F",
)


def convert(text, terminology, **overrides):
    """The message's resources, each checked with fhir.resources-level validation."""
    resources = message_to_resources(text, hospital=HOSPITAL, terminology=terminology, overrides=overrides or None)
    for r in resources:
        validate(r)
    return resources
