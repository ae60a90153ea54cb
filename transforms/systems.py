"""Identifier and code system URIs that every mapping agrees on."""

from __future__ import annotations

__all__ = [
    "NATIONAL_ID_SYSTEM", "LOINC", "ICD10", "SNOMED", "UCUM", "ACT_CODE",
    "mrn_system", "local_code_system", "visit_system",
]

#: Regional person identifier (national health card number); the strongest key for person linkage.
NATIONAL_ID_SYSTEM = "urn:carelake:national-id"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
#: Encounter.class codes (v3 ActCode: IMP, AMB, EMER, ...).
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def mrn_system(hospital: str) -> str:
    """Identifier system of a hospital's medical record numbers."""
    return f"urn:carelake:{hospital}:mrn"


def visit_system(hospital: str) -> str:
    """Identifier system of a hospital's visit / encounter numbers."""
    return f"urn:carelake:{hospital}:visit"


def local_code_system(hospital: str, kind: str) -> str:
    """Code system of a hospital's local codes of one kind (``lab``, ``dx``, ...)."""
    return f"urn:carelake:{hospital}:{kind}"
