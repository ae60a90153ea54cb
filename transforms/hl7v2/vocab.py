"""HL7 v2 tables and the IG's vocabulary maps, as constants built at import.

Values come from the HL7 v2-to-FHIR IG concept maps (``mappings/codesystems/*.csv``): these are
standard HL7 tables, not hospital data, so they live in code next to the mapping that uses them;
hospital-specific code maps belong in ``conf/terminology/``. Where the IG leaves a code of an HL7
table without a target, the choice made here is noted next to it.
"""

from __future__ import annotations

from transforms.systems import ICD10, LOINC, SNOMED, UCUM

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier type
V2_0004 = "http://terminology.hl7.org/CodeSystem/v2-0004"  # patient class
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
OBS_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
CVX = "http://hl7.org/fhir/sid/cvx"
DATA_ABSENT_EXT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
#: A required CodeableConcept the sender left empty: said as data-absent rather than invented.
UNKNOWN_CONCEPT = {"extension": [{"url": DATA_ABSENT_EXT, "valueCode": "unknown"}]}
BIRTH_TIME_EXT = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"

#: PID-8 (table 0001) -> Patient.gender (IG AdministrativeSex).
ADMINISTRATIVE_SEX = {"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "other"}

#: PV1-2 (table 0004) -> Encounter.class (IG PatientClass[EncounterClass]).
PATIENT_CLASS = {
    "E": ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "EMER", "emergency"),
    "I": ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter"),
    "O": ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", "ambulatory"),
    "P": ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PRENC", "pre-admission"),
    "R": (V2_0004, "R", "Recurring patient"),
    "B": (V2_0004, "B", "Obstetrics"),
    "C": (V2_0004, "C", "Commercial Account"),
    "N": (V2_0004, "N", "Not Applicable"),
    "U": (V2_0004, "U", "Unknown"),
}

#: PV1-2 -> Encounter.status when neither the trigger event nor PV1-45 says (IG PatientClass[EncounterStatus]).
PATIENT_CLASS_STATUS = {"P": "planned", "U": "unknown"}  # every other class: in-progress

#: Trigger event -> Encounter.status (IG Event[EncounterStatus]).
EVENT_ENCOUNTER_STATUS = {
    "A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "planned", "A05": "planned",
    "A08": "unknown", "A11": "cancelled", "A13": "in-progress",
}

#: OBX-8 (table 0078) codes the IG maps one to one onto v3 ObservationInterpretation.
INTERPRETATION = {
    "<": "Off scale low", ">": "Off scale high", "A": "Abnormal", "AA": "Critical abnormal", "B": "Better",
    "CAR": "Carrier", "D": "Significant change down", "DET": "Detected", "E": "Equivocal",
    "EX": "outside threshold", "EXP": "Expected", "H": "High", "HH": "Critical high",
    "HU": "Significantly high", "I": "Intermediate", "IE": "Insufficient evidence",
    "IND": "Indeterminate", "L": "Low", "LL": "Critical low", "LU": "Significantly low",
    "MS": "moderately susceptible", "N": "Normal", "NCL": "No CLSI defined breakpoint",
    "ND": "Not detected", "NEG": "Negative", "NR": "Non-reactive", "NS": "Non-susceptible",
    "POS": "Positive", "R": "Resistant", "RR": "Reactive", "S": "Susceptible",
    "SDD": "Susceptible-dose dependent", "SYN-R": "Synergy - resistant", "SYN-S": "Synergy - susceptible",
    "U": "Significant change up", "VS": "very susceptible", "UNE": "Unexpected", "W": "Worse",
    "WR": "Weakly reactive",
}

#: OBX-11 (table 0085) -> Observation.status. The IG maps A C D F P W X; for the rest of the table
#: the nearest FHIR status is chosen here (results pending -> registered, unverified -> preliminary,
#: verified/upgraded to final -> final, appended -> amended, not asked -> cancelled).
OBSERVATION_STATUS = {
    "A": "amended", "C": "corrected", "D": "entered-in-error", "F": "final", "P": "preliminary",
    "W": "entered-in-error", "X": "cancelled",
    "I": "registered", "O": "registered", "R": "preliminary", "S": "preliminary", "U": "final",
    "V": "final", "B": "amended", "N": "cancelled",
}

#: OBR-25 (table 0123) -> DiagnosticReport.status. IG where given; A and N (partial results) ->
#: partial, M (corrected, not final) -> corrected. Y and Z have no mapping on purpose (IG: error).
#: OBR-25 codes of table 0123 that say the result cannot be placed (no order, no patient): quarantined.
REPORT_STATUS_ERRORS = frozenset({"Y", "Z"})
REPORT_STATUS = {
    "O": "registered", "I": "registered", "S": "registered", "P": "preliminary", "C": "corrected",
    "R": "partial", "F": "final", "X": "cancelled", "A": "partial", "N": "partial", "M": "corrected",
}

#: XPN.7 (table 0200) -> HumanName.use.
NAME_USE = {
    "BAD": "old", "D": "usual", "L": "official", "M": "maiden", "MSK": "anonymous", "N": "nickname",
    "NAV": "temp", "R": "official", "TEMP": "temp",
}

#: XTN.2 (table 0201) -> ContactPoint.use.
TELECOM_USE = {"PRN": "home", "WPN": "work", "PRS": "mobile"}

#: XTN.3 (table 0202) -> ContactPoint.system (CP is a phone whose use is mobile).
TELECOM_SYSTEM = {
    "PH": "phone", "FX": "fax", "MD": "other", "CP": "phone", "SAT": "other", "BP": "pager",
    "INTERNET": "email", "X.400": "email", "TDD": "other", "TTY": "other",
}

#: XAD.7 (table 0190) -> Address.use / Address.type.
ADDRESS_USE = {"BA": "old", "BI": "billing", "C": "temp", "B": "work", "H": "home", "O": "work"}
ADDRESS_TYPE = {"M": "postal", "SH": "postal"}

#: PID-16 (table 0002) -> v3 MaritalStatus.
MARITAL = {
    "A": ("L", "Legally Separated"), "D": ("D", "Divorced"), "M": ("M", "Married"), "S": ("S", "Never Married"),
    "W": ("W", "Widowed"), "C": ("C", "Common Law"), "G": ("T", "Domestic partner"),
    "P": ("T", "Domestic partner"), "R": ("T", "Domestic partner"), "E": ("L", "Legally Separated"),
    "U": ("UNK", "unknown"),
}

#: AL1-2 (table 0127) -> AllergyIntolerance.category.
ALLERGEN_CATEGORY = {
    "DA": "medication", "FA": "food", "EA": "environment", "AA": "biologic", "PA": "environment",
    "LA": "environment",
}
#: AL1-4 (table 0128) -> AllergyIntolerance.criticality.
ALLERGY_CRITICALITY = {"SV": "high", "MI": "low"}

#: RXA-20 (table 0322) -> Immunization.status.
COMPLETION_STATUS = {"CP": "completed", "RE": "not-done", "NA": "not-done", "PA": "completed"}

#: NK1-3 (table 0063) -> RelatedPerson.relationship (system, code).
_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_V2_0063 = "http://terminology.hl7.org/CodeSystem/v2-0063"
_V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"
RELATIONSHIP = {
    "SEL": (_ROLE, "ONESELF"), "SPO": (_ROLE, "SPS"), "DOM": (_ROLE, "SIGOTHR"), "CHD": (_ROLE, "CHILD"),
    "GCH": (_ROLE, "GRNDCHILD"), "NCH": (_ROLE, "NCHILD"), "SCH": (_ROLE, "STPCHLD"),
    "FCH": (_ROLE, "CHLDFOST"), "DEP": (_V2_0063, "DEP"), "WRD": (_V2_0063, "WRD"), "PAR": (_ROLE, "PRN"),
    "MTH": (_ROLE, "MTH"), "FTH": (_ROLE, "FTH"), "CGV": (_V2_0063, "CGV"), "GRD": (_V2_0063, "GRD"),
    "GRP": (_ROLE, "GRPRN"), "EXF": (_ROLE, "EXT"), "SIB": (_ROLE, "SIB"), "BRO": (_ROLE, "BRO"),
    "SIS": (_ROLE, "SIS"), "FND": (_ROLE, "FRND"), "OAD": (_V2_0063, "OAD"), "EME": (_V2_0063, "EME"),
    "EMR": (_V2_0131, "E"), "ASC": (_V2_0063, "ASC"), "EMC": (_V2_0131, "C"), "OWN": (_V2_0063, "OWN"),
    "TRA": (_V2_0063, "TRA"), "MGR": (_V2_0063, "MGR"), "NON": (_V2_0063, "NON"), "UNK": (_V2_0131, "U"),
    "OTH": (_V2_0131, "O"),
}

#: Coding-system names of CWE.3 / CWE.6 (table 0396) -> FHIR system URI. Upper-cased keys.
_ICD10_NAMES = ("I10", "I10C", "ICD10", "ICD-10", "ICD10CM", "ICD-10-CM", "I10CM", "ICD10CN", "ICD-10-CN", "I10GB")
CODE_SYSTEMS = {
    **{name: ICD10 for name in _ICD10_NAMES},
    "LN": LOINC, "LOINC": LOINC,
    "SCT": SNOMED, "SNM": SNOMED, "SNOMED": SNOMED, "SNOMEDCT": SNOMED, "SNOMED-CT": SNOMED, "SCT2": SNOMED,
    "UCUM": UCUM, "ANS+": UCUM,
    "I9": ICD9CM, "I9C": ICD9CM, "ICD9": ICD9CM, "ICD9CM": ICD9CM,
    "CVX": CVX, "NDC": "http://hl7.org/fhir/sid/ndc", "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm", "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt", "MVX": "http://hl7.org/fhir/sid/mvx",
    "ISO+": "urn:iso:std:iso:11073:10101", "NUCC": "http://nucc.org/provider-taxonomy",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238", "ISO3166": "urn:iso:std:iso:3166",
    "ISO639": "urn:ietf:bcp:47", "HCPCS": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "I10P": "http://www.cms.gov/Medicare/Coding/ICD10", "ICD10PCS": "http://www.cms.gov/Medicare/Coding/ICD10",
}

#: Names that mean "this sender's own codes": mapped to the hospital's local code system.
LOCAL_SYSTEM_NAMES = frozenset({"L", "LOCAL", "LC", "99LOCAL", "LN-L"})


def is_local_system(name: str) -> bool:
    """True for the HL7 local-code markers: L, LOCAL, and the 99zzz user-defined names."""
    upper = name.upper()
    return upper in LOCAL_SYSTEM_NAMES or upper.startswith("99")


def hl7_table_system(name: str) -> str | None:
    """``HL70078`` -> ``http://terminology.hl7.org/CodeSystem/v2-0078``."""
    upper = name.upper()
    if upper.startswith("HL7") and upper[3:].isdigit() and 1 <= len(upper) - 3 <= 4:
        return f"http://terminology.hl7.org/CodeSystem/v2-{int(upper[3:]):04d}"
    return None
