"""Synthetic hospitals: a regional population and the feeds its hospitals deliver.

`generate` writes, for each hospital, the three feeds carelake ingests (HL7 v2.5.1 messages, a CSV export
of the hospital information system, a FHIR R4 NDJSON bulk export) into ``landing/<hospital>/``, plus a
ground truth (who is who across hospitals, which records are deliberately bad) into ``truth_dir``.

Design choices that other stages rely on:

- Deterministic for a seed: one `random.Random` per purpose, seeded from the seed and the hospital id,
  and a fixed reference date (`REFERENCE_DATE`) instead of the clock. Same seed, same bytes.
- Each encounter is delivered by exactly one feed, chosen by the year it started (`feed_for_year`), and
  the patient's demographics are repeated in every feed that carries one of their encounters.
- Ids line up across feeds of one hospital: the CSV ``patient_id``, the HL7 PID-3 MR identifier and the
  FHIR ``Patient.id`` are all the MRN; the CSV ``encounter_id``, PV1-19 and ``Encounter.id`` are all the
  visit number. So ``resource_id(hospital, type, local id)`` gives one id whatever the feed.
- Bad records are added next to good ones (never replacing them), so every good record still maps and
  the ground truth stays complete; each is listed in ``bad_records.csv`` with its expected error code.
- Files are written through streaming handles, one person at a time: memory grows with the population
  (a few hundred bytes per person), not with the number of records.
- Realistic noise for person linkage (`NOISE`): each hospital's information system holds its own copy of a
  person's demographics, with a typo in a name, no national id, an old address or day and month swapped in
  the birth date for a share of persons. The noise is per (person, hospital), the same in all three feeds
  of that hospital (they come from one system), and drawn from its own random stream, so the clinical
  data stays what it was. ``persons.csv`` keeps the true values; ``noise.csv`` lists what was changed.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo

from transforms.systems import (
    ACT_CODE, ICD10, LOINC, NATIONAL_ID_SYSTEM, UCUM, local_code_system, mrn_system, visit_system,
)

__all__ = [
    "generate", "SynthResult", "BadRecord", "terminology_rows", "csv_mapping_for", "hospital_ids",
    "feed_for_year", "uses_local_lab_codes", "hl7_escape", "REFERENCE_DATE", "FEEDS", "CSV_LAYOUTS",
]

#: "Today" for the synthetic region; nothing reads the clock.
REFERENCE_DATE = date(2026, 6, 30)
FIRST_DATE = date(2019, 1, 1)
#: Feed names as they appear in ``landing/<hospital>/<feed>/``.
FEEDS = ("hl7v2", "csv", "fhir")
#: Share of persons who are patients of more than one hospital.
MULTI_HOSPITAL_SHARE = 0.30
#: Per (person, hospital): probability of each kind of demographic noise (see the module docstring).
NOISE = {"name_typo": 0.04, "no_national_id": 0.10, "moved": 0.08, "swapped_birth_day_month": 0.02}

_TZ = ZoneInfo("Europe/Berlin")
_END_OF_REFERENCE = datetime(2026, 6, 30, 23, 59, 59, tzinfo=_TZ)
_IMPOSSIBLE_BIRTH = (2023, 2, 30)
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


# ---------------------------------------------------------------------------------------------------
# Catalogs


@dataclass(frozen=True)
class _LabTest:
    loinc: str
    display: str
    local_code: str
    local_display: str
    unit: str
    low: float | None
    high: float | None
    mean: float
    sd: float
    decimals: int
    category: str = "laboratory"


_LABS = (
    _LabTest("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "GLU", "Glucose", "mg/dL", 70, 99, 102, 25, 0),
    _LabTest("718-7", "Hemoglobin [Mass/volume] in Blood", "HGB", "Haemoglobin", "g/dL", 12.0, 17.5, 14.2, 1.8, 1),
    _LabTest("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "CREA", "Creatinine", "mg/dL", 0.6, 1.3, 1.0, 0.3, 2),
    _LabTest("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "HBA1C", "HbA1c", "%", 4.0, 5.6, 5.8, 1.0, 1),
    _LabTest("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "CHOL", "Cholesterol", "mg/dL", 125, 200, 195, 38, 0),
    _LabTest("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "TRIG", "Triglycerides", "mg/dL", 35, 150, 140, 60, 0),
    _LabTest("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "WBC", "White cells", "10*3/uL", 4.0, 11.0, 7.6, 2.5, 1),
    _LabTest("777-3", "Platelets [#/volume] in Blood by Automated count", "PLT", "Platelets", "10*3/uL", 150, 400, 260, 70, 0),
    _LabTest("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "NA", "Sodium", "mmol/L", 135, 145, 140, 3, 0),
    _LabTest("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "K", "Potassium", "mmol/L", 3.5, 5.1, 4.3, 0.5, 1),
    _LabTest("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "ALT", "ALT", "U/L", 7, 56, 30, 16, 0),
    # Local codes below are deliberately missing from the terminology map: kept local, not quarantined.
    _LabTest("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "CRP-Q", "CRP quantitative", "mg/L", 0, 5, 6, 10, 1),
    _LabTest("1989-3", "25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma", "VITD25", "Vitamin D 25-OH", "ng/mL", 30, 100, 28, 12, 0),
    _LabTest("8480-6", "Systolic blood pressure", "SBP", "BP systolic", "mm[Hg]", 90, 139, 128, 17, 0, "vital-signs"),
    _LabTest("8462-4", "Diastolic blood pressure", "DBP", "BP diastolic", "mm[Hg]", 60, 89, 80, 10, 0, "vital-signs"),
    _LabTest("29463-7", "Body weight", "WT", "Weight", "kg", None, None, 0, 0, 1, "vital-signs"),
)
_UNMAPPED_LOCAL = frozenset({"CRP-Q", "VITD25"})

# WHO ICD-10 (the system URI is the WHO edition, so no ICD-10-CM-only codes such as J45.909).
_CHRONIC = (
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J45.9", "Asthma, unspecified"),
    ("E78.0", "Pure hypercholesterolaemia"),
    ("I25.1", "Atherosclerotic heart disease"),
    ("I48.9", "Atrial fibrillation and atrial flutter, unspecified"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"),
    ("F32.9", "Depressive episode, unspecified"),
    ("E66.9", "Obesity, unspecified"),
    ("F41.1", "Generalized anxiety disorder"),
    ("E03.9", "Hypothyroidism, unspecified"),
    ("K21.9", "Gastro-oesophageal reflux disease without oesophagitis"),
)
_ACUTE = (
    ("J18.9", "Pneumonia, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("M54.5", "Low back pain"),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("A09.9", "Gastroenteritis and colitis of unspecified origin"),
    ("S52.5", "Fracture of lower end of radius"),
    ("R07.4", "Chest pain, unspecified"),
    ("R51", "Headache"),
    ("G43.9", "Migraine, unspecified"),
    ("K35.8", "Acute appendicitis, other and unspecified"),
    ("U07.1", "COVID-19, virus identified"),
    ("I63.9", "Cerebral infarction, unspecified"),
    ("I21.9", "Acute myocardial infarction, unspecified"),
    ("D50.9", "Iron deficiency anaemia, unspecified"),
)

# (weight, family names, male given names, female given names)
_CULTURES = (
    (45, ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
          "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
          "Braun", "Krüger", "Hartmann", "Lange", "Weiß", "Jäger", "Groß", "Böhm", "Fuchs", "von der Heide"),
     ("Lukas", "Jonas", "Leon", "Felix", "Maximilian", "Paul", "Jürgen", "Klaus", "Stefan", "Michael", "Thomas",
      "Andreas", "Matthias", "Günter", "Jörg", "Hans-Peter", "Karl-Heinz"),
     ("Anna", "Lena", "Marie", "Sophie", "Hannah", "Ursula", "Monika", "Petra", "Sabine", "Brigitte", "Jana",
      "Käthe", "Renate", "Julia", "Katharina", "Anna-Lena")),
    (10, ("Smith", "Johnson", "Williams", "Brown", "Jones", "Taylor", "Wilson", "Davies", "Evans", "O'Brien",
          "O'Connor", "Walker", "Robinson", "Wright", "Thompson", "Hughes", "Edwards", "Green"),
     ("James", "John", "Robert", "Oliver", "George", "Harry", "Jack", "William", "Daniel", "Samuel", "Liam", "Noah"),
     ("Olivia", "Emily", "Amelia", "Isla", "Ava", "Jessica", "Sarah", "Emma", "Grace", "Chloe", "Mary", "Lucy")),
    (10, ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez",
          "Jiménez", "Ruiz", "Hernández", "Díaz", "Muñoz", "Álvarez", "Romero", "Navarro", "Domínguez"),
     ("José", "Antonio", "Manuel", "Francisco", "Juan", "David", "Javier", "Jesús", "Carlos", "Álvaro", "Íñigo",
      "Juan Carlos"),
     ("María", "Carmen", "Ana", "Isabel", "Laura", "Lucía", "Cristina", "Marta", "Pilar", "Sofía", "Inés",
      "María José")),
    (10, ("Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Yıldırım", "Öztürk", "Aydın", "Özdemir",
          "Arslan", "Doğan", "Kılıç", "Aslan", "Çetin"),
     ("Mehmet", "Mustafa", "Ahmet", "Ali", "Hüseyin", "Hasan", "İbrahim", "Yusuf", "Emre", "Murat"),
     ("Ayşe", "Fatma", "Emine", "Hatice", "Zeynep", "Elif", "Meryem", "Şerife", "Zehra", "Büşra")),
    (8, ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński",
         "Szymański", "Woźniak", "Dąbrowski", "Kozłowski"),
     ("Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Michał", "Marcin", "Łukasz", "Jakub", "Grzegorz"),
     ("Anna", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa", "Magdalena", "Joanna", "Zofia")),
    (7, ("Martin", "Bernard", "Dubois", "Durand", "Leroy", "Moreau", "Lefèvre", "Girard", "Bonnet", "François",
         "Mercier", "Petit"),
     ("Jean", "Pierre", "Michel", "André", "Philippe", "Louis", "René", "Gabriel", "Théo", "Raphaël", "Jérôme"),
     ("Marie", "Jeanne", "Françoise", "Monique", "Catherine", "Nathalie", "Chloé", "Léa", "Camille", "Hélène")),
    (5, ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙"),
     ("伟", "强", "磊", "洋", "勇", "军", "杰", "涛", "明", "俊杰", "浩然", "建华"),
     ("芳", "娜", "敏", "静", "丽", "艳", "娟", "秀英", "婷婷", "欣怡", "雨桐", "淑珍")),
    (5, ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun"),
     ("Wei", "Qiang", "Lei", "Yong", "Jun", "Jie", "Tao", "Ming", "Chao", "Haoran", "Zixuan"),
     ("Fang", "Na", "Min", "Jing", "Yan", "Juan", "Xia", "Xiuying", "Tingting", "Xinyi", "Yutong")),
)
_POLISH = 4  # index in _CULTURES: surnames in -ski/-cki take the feminine -ska/-cka

_STREETS = (
    "Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Goethestraße", "Lindenallee", "Am Markt",
    "Kirchplatz", "Mühlenweg", "Rosenstraße", "Birkenweg", "Bergstraße", "Waldstraße", "Ringstraße",
    "Friedrich-Ebert-Straße", "Am Anger", "Römerweg", "Schulstraße", "Wiesenweg", "Rue de l'Église",
)
_CITIES = (
    "Neustadt", "Altdorf", "Bergheim", "Rosenthal", "Lindau am See", "Waldkirchen", "Mühlhausen", "Steinfeld",
    "Grünwald", "Kirchberg", "Sonnenberg", "Eichstätt", "Hohenfels", "Bad Tölz", "Friedberg",
)
_AREA_CODES = ("30", "40", "89", "221", "351", "511", "170", "151", "160", "176")

# Encounter classes: canonical name -> (HL7 PV1-2, ActCode, weight)
_CLASSES = {
    "inpatient": ("I", "IMP", 15, "inpatient encounter"),
    "outpatient": ("O", "AMB", 60, "ambulatory"),
    "emergency": ("E", "EMER", 25, "emergency"),
}


# ---------------------------------------------------------------------------------------------------
# CSV layouts: the hospital's export format. conf/csv_mappings/<name>.yaml describes the same layout
# from carelake's side (the tests check they agree).


@dataclass(frozen=True)
class _CsvLayout:
    name: str
    columns: dict[str, tuple[tuple[str, str], ...]]  # entity -> ((canonical field, column), ...)
    date_format: str
    datetime_format: str | None  # None: ISO 8601 with offset (datetime.isoformat)
    naive_local_times: bool  # datetimes written without offset, in the hospital's time zone
    classes: dict[str, str]
    sexes: dict[str, str]
    code_systems: tuple[str, str]  # (LOINC, local)


def _cols(*pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(p.split("=")) for p in pairs)  # type: ignore[misc]


CSV_LAYOUTS: dict[str, _CsvLayout] = {
    "his-a": _CsvLayout(
        "his-a",
        {
            "patients": _cols("patient_id=PATIENT_ID", "national_id=NATIONAL_ID", "family=LAST_NAME",
                              "given=FIRST_NAME", "birth_date=BIRTHDATE", "sex=SEX", "phone=PHONE",
                              "street=ADDRESS", "city=CITY", "postal_code=ZIP"),
            "encounters": _cols("encounter_id=ENCOUNTER_ID", "patient_id=PATIENT_ID", "class=CLASS",
                                "start=START_TIME", "end=END_TIME"),
            "observations": _cols("observation_id=OBS_ID", "patient_id=PATIENT_ID", "encounter_id=ENCOUNTER_ID",
                                  "code=CODE", "code_system=CODE_SYSTEM", "value=VALUE", "unit=UNIT",
                                  "flag=FLAG", "effective=OBS_TIME"),
            "conditions": _cols("condition_id=DX_ID", "patient_id=PATIENT_ID", "encounter_id=ENCOUNTER_ID",
                                "code=ICD10", "onset=ONSET"),
        },
        "%Y-%m-%d", None, False,
        {"inpatient": "inpatient", "outpatient": "outpatient", "emergency": "emergency"},
        {"male": "M", "female": "F", "other": "O", "unknown": "U"},
        ("LOINC", "LOCAL"),
    ),
    "his-b": _CsvLayout(
        "his-b",
        {
            "patients": _cols("patient_id=pat_no", "national_id=health_card", "family=surname", "given=forename",
                              "birth_date=dob", "sex=gender", "phone=tel", "street=street", "city=town",
                              "postal_code=postcode"),
            "encounters": _cols("encounter_id=visit_no", "patient_id=pat_no", "class=visit_type",
                                "start=admitted", "end=discharged"),
            "observations": _cols("observation_id=result_id", "patient_id=pat_no", "encounter_id=visit_no",
                                  "code=test_code", "code_system=code_type", "value=result", "unit=units",
                                  "flag=abn_flag", "effective=collected"),
            "conditions": _cols("condition_id=diag_id", "patient_id=pat_no", "encounter_id=visit_no",
                                "code=icd_code", "onset=diag_date"),
        },
        "%d/%m/%Y", "%d/%m/%Y %H:%M", True,
        {"inpatient": "I", "outpatient": "O", "emergency": "E"},
        {"male": "male", "female": "female", "other": "other", "unknown": "unknown"},
        ("LN", "L"),
    ),
    "his-c": _CsvLayout(
        "his-c",
        {
            "patients": _cols("patient_id=PatientNumber", "national_id=NationalId", "family=FamilyName",
                              "given=GivenName", "birth_date=DateOfBirth", "sex=Gender", "phone=Phone",
                              "street=StreetAddress", "city=City", "postal_code=PostalCode"),
            "encounters": _cols("encounter_id=EncounterNumber", "patient_id=PatientNumber",
                                "class=EncounterClass", "start=StartDateTime", "end=EndDateTime"),
            "observations": _cols("observation_id=ResultNumber", "patient_id=PatientNumber",
                                  "encounter_id=EncounterNumber", "code=TestCode", "code_system=TestCodeSystem",
                                  "value=ResultValue", "unit=ResultUnit", "flag=AbnormalFlag",
                                  "effective=CollectedAt"),
            "conditions": _cols("condition_id=DiagnosisNumber", "patient_id=PatientNumber",
                                "encounter_id=EncounterNumber", "code=DiagnosisCode", "onset=DiagnosedAt"),
        },
        "%Y%m%d", "%Y%m%d%H%M%S%z", False,
        {"inpatient": "IMP", "outpatient": "AMB", "emergency": "EMER"},
        {"male": "m", "female": "w", "other": "d", "unknown": "x"},  # German HIS: männlich/weiblich/divers
        ("LN", "L"),
    ),
}
_LAYOUT_ORDER = ("his-a", "his-b", "his-c")


# ---------------------------------------------------------------------------------------------------
# Public helpers


def hospital_ids(count: int) -> list[str]:
    """``hosp-a``, ``hosp-b``, ... for `count` hospitals (at most 26)."""
    if not 1 <= count <= 26:
        raise ValueError(f"hospitals must be between 1 and 26, got {count}")
    return [f"hosp-{chr(ord('a') + i)}" for i in range(count)]


def _hospital_index(hospital: str) -> int:
    suffix = hospital.removeprefix("hosp-")
    if len(suffix) != 1 or not "a" <= suffix <= "z":
        raise ValueError(f"not a synthetic hospital id: {hospital!r}; expected hosp-a ... hosp-z")
    return ord(suffix) - ord("a")


def csv_mapping_for(hospital_id: str) -> str:
    """Name of the CSV layout (``conf/csv_mappings/<name>.yaml``) the generator uses for a hospital."""
    return _LAYOUT_ORDER[_hospital_index(hospital_id) % len(_LAYOUT_ORDER)]


def uses_local_lab_codes(hospital_id: str) -> bool:
    """Whether a hospital codes its lab results with local codes instead of LOINC (hosp-b, hosp-e, ...)."""
    return _hospital_index(hospital_id) % 3 == 1


def feed_for_year(year: int) -> str:
    """Which feed delivers an encounter that started in `year`: old ones CSV, middle FHIR, recent HL7 v2."""
    if year <= 2021:
        return "csv"
    if year <= 2023:
        return "fhir"
    return "hl7v2"


def terminology_rows(hospitals: Iterable[str]) -> list[dict]:
    """Local lab code -> LOINC map rows (``conf/terminology`` CSV columns) for the hospitals that need one.

    Two local codes (`_UNMAPPED_LOCAL`) are left out on purpose: they must stay local, not be quarantined.
    """
    rows = []
    for hospital in hospitals:
        if not uses_local_lab_codes(hospital):
            continue
        for lab in _LABS:
            if lab.local_code not in _UNMAPPED_LOCAL:
                rows.append({
                    "source_system": local_code_system(hospital, "lab"), "source_code": lab.local_code,
                    "target_system": LOINC, "target_code": lab.loinc, "target_display": lab.display,
                })
    return rows


@dataclass(frozen=True)
class BadRecord:
    """A deliberately bad record; `file` is relative to the landing directory, `position` 0-based."""

    hospital: str
    feed: str
    file: str
    position: int
    expected_code: str
    description: str


@dataclass(frozen=True)
class SynthResult:
    """What `generate` wrote. Record counts include the bad records (they are delivered too)."""

    landing: Path
    truth_dir: Path
    hospitals: tuple[str, ...]
    persons: int
    patients: dict[str, int]  # persons who are patients of each hospital
    records: dict[str, dict[str, int]]  # hospital -> feed -> records delivered (messages, rows, lines)
    encounters: dict[str, dict[str, int]]  # hospital -> feed -> good encounters
    bad_records: tuple[BadRecord, ...]
    persons_csv: Path
    bad_records_csv: Path


# ---------------------------------------------------------------------------------------------------
# Population


@dataclass(slots=True)
class _Person:
    index: int
    national_id: str
    family: str
    given: str
    sex: str
    birth_date: date
    phone: str
    street: str
    city: str
    postal_code: str
    chronic: tuple[tuple[str, str], ...]
    hospitals: tuple[int, ...] = ()
    mrns: dict[str, str] = field(default_factory=dict)


def _age(rng: random.Random, index: int) -> int:
    # A fixed share of persons is 90+, so de-identification always has someone to group.
    if index % 50 == 7:
        return rng.randint(90, 99)
    return min(99, int(rng.triangular(0, 100, 45)))


def _name(rng: random.Random, sex: str) -> tuple[str, str]:
    culture = rng.choices(range(len(_CULTURES)), weights=[c[0] for c in _CULTURES])[0]
    _, families, males, females = _CULTURES[culture]
    female = sex == "female" or (sex not in ("male", "female") and rng.random() < 0.5)
    family = rng.choice(families)
    if female and culture == _POLISH and family.endswith(("ski", "cki")):
        family = family[:-1] + "a"
    return family, rng.choice(females if female else males)


def _street(rng: random.Random) -> str:
    line = f"{rng.choice(_STREETS)} {rng.randint(1, 180)}"
    if rng.random() < 0.03:  # care-of lines carry commas and '&', which CSV and HL7 must escape
        line = f"c/o Weber & Söhne, {line}"
    return line


def _person(rng: random.Random, index: int, national_id: str, prefixes: list[str], cities: dict[str, str]) -> _Person:
    sex = rng.choices(("male", "female", "other", "unknown"), weights=(49, 49, 1, 1))[0]
    family, given = _name(rng, sex)
    age = _age(rng, index)
    # Born within the year that makes them exactly `age` on the reference date.
    birth = date(REFERENCE_DATE.year - age - 1, REFERENCE_DATE.month, REFERENCE_DATE.day) + timedelta(days=rng.randint(1, 365))
    prefix = rng.choice(prefixes)
    chronic = tuple(rng.sample(_CHRONIC, rng.choices((0, 1, 2), weights=(50, 35, 15))[0])) if age > 15 else ()
    return _Person(
        index=index, national_id=national_id, family=family, given=given, sex=sex, birth_date=birth,
        phone=f"+49 {rng.choice(_AREA_CODES)} {rng.randint(100000, 99999999)}", street=_street(rng),
        city=cities[prefix], postal_code=f"{prefix}{rng.randint(0, 99):02d}", chronic=chronic,
    )


def _assign_hospitals(rng: random.Random, person: _Person, count: int) -> None:
    home = rng.randrange(count)
    chosen = {home}
    if count > 1 and rng.random() < MULTI_HOSPITAL_SHARE:
        extra = 1 if count == 2 or rng.random() < 0.8 else 2
        chosen.update(rng.sample([h for h in range(count) if h != home], extra))
    person.hospitals = tuple(sorted(chosen))


def _mrn(hospital_index: int, number: int) -> str:
    style = hospital_index % 3
    if style == 0:
        return f"{chr(ord('A') + hospital_index)}{number:07d}"
    if style == 1:
        return f"{number:08d}"  # numeric with leading zeros: must survive every feed as a string
    return f"MRN-{number:07d}"


def _population(rng: random.Random, count: int, hospitals: list[str], prefixes: list[str]) -> list[_Person]:
    prefixes = list(dict.fromkeys(prefixes))
    cities = {p: rng.choice(_CITIES) for p in prefixes}
    national_ids = rng.sample(range(10**9, 10**10), count)
    persons = [_person(rng, i, str(national_ids[i]), prefixes, cities) for i in range(count)]
    for person in persons:
        _assign_hospitals(rng, person, len(hospitals))
    for h, hospital in enumerate(hospitals):
        members = [p for p in persons if h in p.hospitals]
        for person, number in zip(members, rng.sample(range(1, 10**7), len(members))):
            person.mrns[hospital] = _mrn(h, number)
    return persons


def _typo(rng: random.Random, text: str) -> str:
    """One keyboard slip: two neighbouring letters swapped, or one letter doubled or dropped."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 3:
        return text + text[-1]
    i = rng.choice(letters[1:-1])
    kind = rng.randrange(3)
    if kind == 0 and text[i + 1].isalpha() and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    return text[:i] + text[i + 1:]


def _noisy(person: _Person, hospital: str, seed: int, prefixes: list[str]) -> tuple[_Person, list[str]]:
    """The person as one hospital's system knows them, and the kinds of noise applied."""
    rng = random.Random(f"carelake-synth/{seed}/{hospital}/noise/{person.index}")
    changes: dict = {}
    kinds = []
    if rng.random() < NOISE["name_typo"]:
        which = rng.choice(("family", "given"))
        changes[which] = _typo(rng, getattr(person, which))
        kinds.append(f"{which}_typo")
    if rng.random() < NOISE["no_national_id"]:
        changes["national_id"] = ""
        kinds.append("no_national_id")
    if rng.random() < NOISE["moved"]:
        prefix = person.postal_code[:3] if rng.random() < 0.5 else rng.choice(prefixes)
        changes["street"] = _street(rng)
        changes["postal_code"] = f"{prefix}{(int(person.postal_code[3:]) + rng.randint(1, 98)) % 100:02d}"
        kinds.append("moved")
    born = person.birth_date
    if rng.random() < NOISE["swapped_birth_day_month"] and born.day <= 12 and born.day != born.month:
        changes["birth_date"] = date(born.year, born.day, born.month)
        kinds.append("swapped_birth_day_month")
    return (replace(person, **changes) if changes else person), kinds


# ---------------------------------------------------------------------------------------------------
# Clinical events


@dataclass(slots=True)
class _Lab:
    test: _LabTest
    value: float
    flag: str
    effective: datetime
    filler_id: str


@dataclass(slots=True)
class _Condition:
    code: str
    display: str
    onset: datetime


@dataclass(slots=True)
class _Encounter:
    visit: str
    kind: str
    start: datetime
    end: datetime | None
    conditions: list[_Condition]
    labs: list[_Lab]


class _Counters:
    """Per-hospital sequence numbers, so local ids are unique and deterministic."""

    def __init__(self, hospital_index: int):
        letter = chr(ord("A") + hospital_index)
        self._formats = {"visit": f"V{letter}{{:08d}}", "obs": "OBS{:09d}", "dx": "DX{:08d}",
                         "msg": f"{letter}{{:010d}}", "order": f"F{letter}{{:08d}}"}
        self._next = dict.fromkeys(self._formats, 0)

    def next(self, kind: str) -> str:
        self._next[kind] += 1
        return self._formats[kind].format(self._next[kind])


def _local_time(day: date, minutes: int) -> datetime:
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    # Round trip through UTC so a wall time inside the spring-forward gap becomes a real one.
    return naive.replace(tzinfo=_TZ).astimezone(timezone.utc).astimezone(_TZ)


def _encounter_times(rng: random.Random, kind: str, first_day: date) -> tuple[datetime, datetime | None]:
    day = first_day + timedelta(days=rng.randint(0, (REFERENCE_DATE - first_day).days))
    if kind == "outpatient":
        start = _local_time(day, rng.randint(7 * 60, 17 * 60))
        length = timedelta(minutes=rng.randint(15, 120))
    elif kind == "emergency":
        start = _local_time(day, rng.randint(0, 24 * 60 - 1))
        length = timedelta(minutes=rng.randint(60, 12 * 60))
    else:
        start = _local_time(day, rng.randint(0, 24 * 60 - 1))
        length = timedelta(days=rng.randint(1, 14), minutes=rng.randint(0, 600))
    end = start + length
    return start, (None if end > _END_OF_REFERENCE else end.astimezone(_TZ))


def _lab_value(rng: random.Random, test: _LabTest, age_years: float) -> tuple[float, str]:
    if test.low is None:  # body weight: by age, no reference range, no flag
        mean = 3.5 + 3.2 * age_years if age_years < 18 else 76.0
        return round(max(2.0, rng.gauss(mean, mean * 0.18)), test.decimals), ""
    value = round(max(10 ** -test.decimals, rng.gauss(test.mean, test.sd)), test.decimals)
    if test.decimals == 0:
        value = int(value)
    flag = "H" if value > test.high else "L" if value < test.low else "N"
    return value, flag


def _encounter(rng: random.Random, person: _Person, counters: _Counters) -> _Encounter:
    kind = rng.choices(list(_CLASSES), weights=[c[2] for c in _CLASSES.values()])[0]
    start, end = _encounter_times(rng, kind, max(FIRST_DATE, person.birth_date))
    age_years = (start.date() - person.birth_date).days / 365.25
    pool = list(person.chronic) + list(rng.sample(_ACUTE, 2))
    conditions = [_Condition(code, display, start) for code, display in rng.sample(pool, min(len(pool), rng.randint(0, 3)))]
    order = counters.next("order")
    labs = []
    for test in rng.sample(_LABS, rng.randint(0, 8)):
        effective = start + timedelta(minutes=rng.randint(5, 90))
        if end is not None and effective > end:
            effective = end
        value, flag = _lab_value(rng, test, age_years)
        labs.append(_Lab(test, value, flag, effective, order))
    return _Encounter(counters.next("visit"), kind, start, end, conditions, labs)


def _encounters(rng: random.Random, person: _Person, counters: _Counters) -> list[_Encounter]:
    found = [_encounter(rng, person, counters) for _ in range(rng.randint(1, 6))]
    return sorted(found, key=lambda e: e.start)


# ---------------------------------------------------------------------------------------------------
# Shared formatting


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _impossible_date(date_format: str) -> str:
    year, month, day = _IMPOSSIBLE_BIRTH
    return date_format.replace("%Y", f"{year:04d}").replace("%m", f"{month:02d}").replace("%d", f"{day:02d}")


def _json_line(resource: dict) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n"


class _Feed:
    """Common bookkeeping of one feed of one hospital: record counts per file and injected bad records."""

    feed = ""

    def __init__(self, landing: Path, hospital: str):
        self.landing = landing
        self.hospital = hospital
        self.directory = landing / hospital / self.feed
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records: dict[Path, int] = {}
        self.bad: list[BadRecord] = []
        self.encounters = 0

    def _note_bad(self, path: Path, position: int, code: str, description: str) -> None:
        relative = path.relative_to(self.landing).as_posix()
        self.bad.append(BadRecord(self.hospital, self.feed, relative, position, code, description))

    def total(self) -> int:
        return sum(self.records.values())


# ---------------------------------------------------------------------------------------------------
# CSV export


class _CsvFeed(_Feed):
    feed = "csv"

    def __init__(self, landing: Path, hospital: str, rng: random.Random, counters: _Counters):
        super().__init__(landing, hospital)
        self.layout = CSV_LAYOUTS[csv_mapping_for(hospital)]
        self.local_labs = uses_local_lab_codes(hospital)
        self.counters = counters
        self._handles, self._writers, self._paths = {}, {}, {}
        for entity, columns in self.layout.columns.items():
            path = self.directory / f"{entity}.csv"
            handle = open(path, "w", newline="", encoding="utf-8")
            self._handles[entity], self._paths[entity] = handle, path
            self._writers[entity] = csv.writer(handle)
            self._writers[entity].writerow([column for _, column in columns])
            self.records[path] = 0
        self._bad_patient_after = rng.randint(1, 8)
        self._bad_encounter_after = rng.randint(1, 15)
        self._last: tuple[_Person, str, _Encounter] | None = None

    def _date(self, day: date) -> str:
        return day.strftime(self.layout.date_format)

    def _datetime(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        if self.layout.datetime_format is None:
            return _iso(moment)
        if self.layout.naive_local_times:
            moment = moment.astimezone(_TZ)
        return moment.strftime(self.layout.datetime_format)

    def _row(self, entity: str, values: dict[str, str]) -> int:
        path = self._paths[entity]
        self._writers[entity].writerow([values[canonical] for canonical, _ in self.layout.columns[entity]])
        self.records[path] += 1
        return self.records[path] - 1

    def _patient_values(self, person: _Person, mrn: str) -> dict[str, str]:
        return {
            "patient_id": mrn, "national_id": person.national_id, "family": person.family, "given": person.given,
            "birth_date": self._date(person.birth_date), "sex": self.layout.sexes[person.sex],
            "phone": person.phone, "street": person.street, "city": person.city, "postal_code": person.postal_code,
        }

    def _encounter_values(self, mrn: str, encounter: _Encounter, kind: str) -> dict[str, str]:
        return {"encounter_id": encounter.visit, "patient_id": mrn, "class": kind,
                "start": self._datetime(encounter.start), "end": self._datetime(encounter.end)}

    def _lab_values(self, mrn: str, visit: str, lab: _Lab) -> dict[str, str]:
        loinc_system, local_system = self.layout.code_systems
        return {
            "observation_id": self.counters.next("obs"), "patient_id": mrn, "encounter_id": visit,
            "code": lab.test.local_code if self.local_labs else lab.test.loinc,
            "code_system": local_system if self.local_labs else loinc_system,
            "value": str(lab.value), "unit": lab.test.unit, "flag": lab.flag, "effective": self._datetime(lab.effective),
        }

    def write(self, person: _Person, mrn: str, encounters: list[_Encounter]) -> None:
        self._row("patients", self._patient_values(person, mrn))
        for encounter in encounters:
            self.encounters += 1
            self._row("encounters", self._encounter_values(mrn, encounter, self.layout.classes[encounter.kind]))
            for condition in encounter.conditions:
                self._row("conditions", {"condition_id": self.counters.next("dx"), "patient_id": mrn,
                                         "encounter_id": encounter.visit, "code": condition.code,
                                         "onset": self._datetime(condition.onset)})
            for lab in encounter.labs:
                self._row("observations", self._lab_values(mrn, encounter.visit, lab))
        self._last = (person, mrn, encounters[-1])
        self._inject(force=False)

    def _inject(self, force: bool) -> None:
        if self._last is None:
            return
        person, mrn, encounter = self._last
        if self._bad_patient_after is not None and (force or self.records[self._paths["patients"]] >= self._bad_patient_after):
            values = self._patient_values(person, mrn) | {"birth_date": _impossible_date(self.layout.date_format)}
            self._note_bad(self._paths["patients"], self._row("patients", values), "INVALID_DATE",
                           "patient row re-sent with an impossible birth date")
            self._bad_patient_after = None
        if self._bad_encounter_after is not None and (force or self.encounters >= self._bad_encounter_after):
            bad = _Encounter(self.counters.next("visit"), encounter.kind, encounter.start, encounter.end, [], [])
            position = self._row("encounters", self._encounter_values(mrn, bad, "ZZ"))
            self._note_bad(self._paths["encounters"], position, "UNKNOWN_CODE", "encounter row with class ZZ")
            self._bad_encounter_after = None

    def close(self, fallback: tuple[_Person, str, _Encounter]) -> None:
        self._last = self._last or fallback
        self._inject(force=True)
        for handle in self._handles.values():
            handle.close()


# ---------------------------------------------------------------------------------------------------
# FHIR R4 NDJSON bulk export


def _coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code, "display": display} if display else {"system": system, "code": code}


def _fhir_patient(hospital: str, person: _Person, mrn: str) -> dict:
    national = [{"use": "official", "type": {"coding": [_coding(_V2_0203, "NI")]}, "system": NATIONAL_ID_SYSTEM,
                 "value": person.national_id}] if person.national_id else []
    return {
        "resourceType": "Patient", "id": mrn,
        "identifier": [
            {"use": "usual", "type": {"coding": [_coding(_V2_0203, "MR")]}, "system": mrn_system(hospital), "value": mrn},
            *national,
        ],
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": [person.street], "city": person.city, "postalCode": person.postal_code}],
    }


def _fhir_encounter(hospital: str, mrn: str, encounter: _Encounter) -> dict:
    _, act, _, display = _CLASSES[encounter.kind]
    period = {"start": _iso(encounter.start)} | ({"end": _iso(encounter.end)} if encounter.end else {})
    return {
        "resourceType": "Encounter", "id": encounter.visit,
        "identifier": [{"system": visit_system(hospital), "value": encounter.visit}],
        "status": "finished" if encounter.end else "in-progress",
        "class": _coding(ACT_CODE, act, display),
        "subject": {"reference": f"Patient/{mrn}"},
        "period": period,
    }


def _quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _fhir_observation(hospital: str, rng: random.Random, mrn: str, visit: str, lab: _Lab, local: bool) -> dict:
    test = lab.test
    coding = (_coding(local_code_system(hospital, "lab"), test.local_code, test.local_display) if local
              else _coding(LOINC, test.loinc, test.display))
    resource = {
        "resourceType": "Observation", "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "status": "final",
        "category": [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/observation-category", test.category)]}],
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{mrn}"},
        "encounter": {"reference": f"Encounter/{visit}"},
        "effectiveDateTime": _iso(lab.effective),
        "valueQuantity": _quantity(lab.value, test.unit),
    }
    if lab.flag:
        resource["interpretation"] = [{"coding": [_coding(_INTERPRETATION, lab.flag)]}]
        resource["referenceRange"] = [{"low": _quantity(test.low, test.unit), "high": _quantity(test.high, test.unit)}]
    return resource


def _fhir_condition(rng: random.Random, mrn: str, visit: str, condition: _Condition) -> dict:
    return {
        "resourceType": "Condition", "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "clinicalStatus": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")]},
        "verificationStatus": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed")]},
        "category": [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis")]}],
        "code": {"coding": [_coding(ICD10, condition.code, condition.display)]},
        "subject": {"reference": f"Patient/{mrn}"},
        "encounter": {"reference": f"Encounter/{visit}"},
        "onsetDateTime": _iso(condition.onset),
    }


class _FhirFeed(_Feed):
    feed = "fhir"
    _TYPES = ("Patient", "Encounter", "Observation", "Condition")

    def __init__(self, landing: Path, hospital: str, rng: random.Random):
        super().__init__(landing, hospital)
        self.rng = rng
        self.local_labs = uses_local_lab_codes(hospital)
        self._paths = {t: self.directory / f"{t}.ndjson" for t in self._TYPES}
        self._handles = {t: open(p, "w", newline="", encoding="utf-8") for t, p in self._paths.items()}
        self.records.update({p: 0 for p in self._paths.values()})
        self._bad_patient_after = rng.randint(1, 8)
        self._bad_observation_after = rng.randint(1, 30)
        self._last: tuple[_Person, str, _Encounter] | None = None

    def _line(self, resource_type: str, text: str) -> int:
        path = self._paths[resource_type]
        self._handles[resource_type].write(text)
        self.records[path] += 1
        return self.records[path] - 1

    def write(self, person: _Person, mrn: str, encounters: list[_Encounter]) -> None:
        self._line("Patient", _json_line(_fhir_patient(self.hospital, person, mrn)))
        for encounter in encounters:
            self.encounters += 1
            self._line("Encounter", _json_line(_fhir_encounter(self.hospital, mrn, encounter)))
            for condition in encounter.conditions:
                self._line("Condition", _json_line(_fhir_condition(self.rng, mrn, encounter.visit, condition)))
            for lab in encounter.labs:
                resource = _fhir_observation(self.hospital, self.rng, mrn, encounter.visit, lab, self.local_labs)
                self._line("Observation", _json_line(resource))
        self._last = (person, mrn, encounters[-1])
        self._inject(force=False)

    def _inject(self, force: bool) -> None:
        if self._last is None:
            return
        person, mrn, encounter = self._last
        if self._bad_patient_after is not None and (force or self.records[self._paths["Patient"]] >= self._bad_patient_after):
            resource = _fhir_patient(self.hospital, person, mrn) | {"birthDate": "%04d-%02d-%02d" % _IMPOSSIBLE_BIRTH}
            self._note_bad(self._paths["Patient"], self._line("Patient", _json_line(resource)), "INVALID_DATE",
                           "Patient re-exported with an impossible birthDate")
            self._bad_patient_after = None
        if self._bad_observation_after is not None and (force or self.encounters >= self._bad_observation_after):
            lab = _Lab(_LABS[0], 100, "H", encounter.start, "")
            text = _json_line(_fhir_observation(self.hospital, self.rng, mrn, encounter.visit, lab, self.local_labs))
            position = self._line("Observation", text[: len(text) // 2] + "\n")
            self._note_bad(self._paths["Observation"], position, "PARSE", "Observation line cut in the middle")
            self._bad_observation_after = None

    def close(self, fallback: tuple[_Person, str, _Encounter]) -> None:
        self._last = self._last or fallback
        self._inject(force=True)
        for handle in self._handles.values():
            handle.close()


# ---------------------------------------------------------------------------------------------------
# HL7 v2.5.1


_HL7_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\",
                              "\r": "\\X0D\\", "\n": "\\X0A\\"})


def hl7_escape(text: str) -> str:
    """Escape HL7 delimiters (``| ^ & ~ \\``) and line breaks in a text component."""
    return text.translate(_HL7_ESCAPES)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _segment(name: str, fields: dict[int, str]) -> str:
    cells = [""] * max(fields)
    for index, value in fields.items():
        cells[index - 1] = value
    return name + "|" + "|".join(cells)


class _Hl7Feed(_Feed):
    feed = "hl7v2"

    def __init__(self, landing: Path, hospital: str, rng: random.Random, counters: _Counters):
        super().__init__(landing, hospital)
        self.rng = rng
        self.counters = counters
        self.authority = hospital.replace("-", "").upper()
        self.local_labs = uses_local_lab_codes(hospital)
        self._handles: dict[Path, object] = {}
        self._pid_cache: tuple[_Person | None, str] = (None, "")
        self._truncate_after = rng.randint(1, 10)
        self._bad_class_after = rng.randint(1, 20)
        self._last: tuple[_Person, str, _Encounter] | None = None

    # -- segments

    def _msh(self, moment: datetime, message_type: str) -> str:
        fields = {3: "CARELAKE-SYNTH", 4: self.hospital, 5: "CARELAKE", 6: "REGION", 7: _ts(moment),
                  9: message_type, 10: self.counters.next("msg"), 11: "P", 12: "2.5.1", 18: "UNICODE UTF-8"}
        # MSH-1 is the field separator itself, so MSH-2 is the first field after "MSH|".
        return "MSH|^~\\&|" + "|".join(fields.get(i, "") for i in range(3, 19))

    def _pid(self, person: _Person, mrn: str) -> str:
        if self._pid_cache[0] is not person:  # every message of a patient repeats the same PID
            self._pid_cache = (person, self._build_pid(person, mrn))
        return self._pid_cache[1]

    def _build_pid(self, person: _Person, mrn: str) -> str:
        identifiers = f"{hl7_escape(mrn)}^^^{self.authority}^MR"
        if person.national_id:
            identifiers += f"~{person.national_id}^^^REGION^NI"
        address = f"{hl7_escape(person.street)}^^{hl7_escape(person.city)}^^{person.postal_code}^^H"
        sex = {"male": "M", "female": "F", "other": "O", "unknown": "U"}[person.sex]
        return _segment("PID", {1: "1", 3: identifiers, 5: f"{hl7_escape(person.family)}^{hl7_escape(person.given)}",
                                7: person.birth_date.strftime("%Y%m%d"), 8: sex, 11: address,
                                13: f"{hl7_escape(person.phone)}^PRN^PH"})

    def _pv1(self, encounter: _Encounter, patient_class: str, discharged: bool) -> str:
        fields = {1: "1", 2: patient_class, 19: f"{encounter.visit}^^^{self.authority}^VN", 44: _ts(encounter.start)}
        if discharged and encounter.end:
            fields[45] = _ts(encounter.end)
        return _segment("PV1", fields)

    def _dg1(self, index: int, condition: _Condition) -> str:
        return _segment("DG1", {1: str(index), 3: f"{condition.code}^{hl7_escape(condition.display)}^I10",
                                5: _ts(condition.onset), 6: "W"})

    def _obx(self, index: int, lab: _Lab) -> str:
        test = lab.test
        code = (f"{hl7_escape(test.local_code)}^{hl7_escape(test.local_display)}^L" if self.local_labs
                else f"{test.loinc}^{hl7_escape(test.display)}^LN")
        reference = f"{test.low:g}-{test.high:g}" if test.low is not None else ""
        return _segment("OBX", {1: str(index), 2: "NM", 3: code, 5: str(lab.value), 6: f"{hl7_escape(test.unit)}^^UCUM",
                                7: reference, 8: lab.flag, 11: "F", 14: _ts(lab.effective)})

    # -- messages

    def _adt(self, event: str, moment: datetime, person: _Person, mrn: str, encounter: _Encounter,
             patient_class: str | None = None) -> list[str]:
        structure = "ADT_A03" if event == "A03" else "ADT_A01"
        segments = [self._msh(moment, f"ADT^{event}^{structure}"), _segment("EVN", {1: event, 2: _ts(moment)}),
                    self._pid(person, mrn),
                    self._pv1(encounter, patient_class or _CLASSES[encounter.kind][0], event == "A03")]
        if event in ("A01", "A08"):
            segments += [self._dg1(i, c) for i, c in enumerate(encounter.conditions, 1)]
        return segments

    def _oru(self, person: _Person, mrn: str, encounter: _Encounter) -> list[str]:
        observed = min(lab.effective for lab in encounter.labs)
        reported = max(lab.effective for lab in encounter.labs) + timedelta(minutes=45)
        filler = f"{encounter.labs[0].filler_id}^{self.authority}"
        panel = "LAB^Laboratory results^L" if self.local_labs else "24323-8^Comprehensive metabolic 2000 panel - Serum or Plasma^LN"
        return [self._msh(reported, "ORU^R01^ORU_R01"), self._pid(person, mrn),
                self._pv1(encounter, _CLASSES[encounter.kind][0], False),
                _segment("ORC", {1: "RE", 3: filler}),
                _segment("OBR", {1: "1", 3: filler, 4: panel, 7: _ts(observed), 25: "F"}),
                *(self._obx(i, lab) for i, lab in enumerate(encounter.labs, 1))]

    def _file_for(self, moment: datetime) -> Path:
        return self.directory / f"adt_oru_{moment:%Y-%m}.hl7"

    def _message(self, path: Path, segments: list[str]) -> int:
        handle = self._handles.get(path)
        if handle is None:
            handle = self._handles[path] = open(path, "w", newline="", encoding="utf-8")
            self.records[path] = 0
        handle.write("\r".join(segments) + "\r")
        self.records[path] += 1
        return self.records[path] - 1

    def write(self, person: _Person, mrn: str, encounters: list[_Encounter]) -> None:
        for encounter in encounters:
            self.encounters += 1
            # One file per month of admission, so an encounter's messages stay together and in order.
            path = self._file_for(encounter.start)
            self._message(path, self._adt("A01", encounter.start, person, mrn, encounter))
            if self.rng.random() < 0.25:
                updated = encounter.start + timedelta(minutes=self.rng.randint(5, 60))
                self._message(path, self._adt("A08", updated, person, mrn, encounter))
            if encounter.labs:
                self._message(path, self._oru(person, mrn, encounter))
            if encounter.end:
                self._message(path, self._adt("A03", encounter.end, person, mrn, encounter))
        self._last = (person, mrn, encounters[-1])
        self._inject(force=False)

    def _inject(self, force: bool) -> None:
        if self._last is None:
            return
        person, mrn, encounter = self._last
        path = self._file_for(encounter.start)
        if self._truncate_after is not None and (force or self.encounters >= self._truncate_after):
            msh, evn, pid = self._adt("A01", encounter.start, person, mrn, encounter)[:3]
            cut = pid[: len("PID|1||") + max(1, len(mrn) // 2)]
            self._note_bad(path, self._message(path, [msh, evn, cut]), "PARSE", "ADT^A01 truncated inside PID")
            self._truncate_after = None
        if self._bad_class_after is not None and (force or self.encounters >= self._bad_class_after):
            moment = encounter.start + timedelta(minutes=1)
            position = self._message(path, self._adt("A08", moment, person, mrn, encounter, patient_class="Z"))
            self._note_bad(path, position, "UNKNOWN_CODE", "ADT^A08 with patient class PV1-2 = Z")
            self._bad_class_after = None

    def close(self, fallback: tuple[_Person, str, _Encounter]) -> None:
        self._last = self._last or fallback
        self._inject(force=True)
        for handle in self._handles.values():
            handle.close()


# ---------------------------------------------------------------------------------------------------
# Driver


_OWNED_FILES = {"hl7v2": "*.hl7", "csv": "*.csv", "fhir": "*.ndjson"}


def _prepare(landing: Path, hospitals: list[str], overwrite: bool) -> None:
    for hospital in hospitals:
        for feed, pattern in _OWNED_FILES.items():
            existing = sorted((landing / hospital / feed).glob(pattern))
            if existing and not overwrite:
                raise FileExistsError(
                    f"{landing / hospital / feed} already holds feed files; generate into an empty landing "
                    "directory or pass overwrite=True"
                )
            for path in existing:
                path.unlink()


def _check_prefixes(prefixes: list[str]) -> None:
    if not prefixes:
        raise ValueError("postal_prefixes is empty; give at least one 3-digit prefix, e.g. ['101', '102']")
    bad = [p for p in prefixes if not (isinstance(p, str) and len(p) == 3 and p.isdigit())]
    if bad:
        raise ValueError(f"postal_prefixes must be 3-digit strings, got {bad}")


def _write_hospital(landing: Path, hospital: str, index: int, seed: int, members: list[_Person],
                    prefixes: list[str], noise: list[tuple[int, str, str]]):
    rng = random.Random(f"carelake-synth/{seed}/{hospital}")
    counters = _Counters(index)
    feeds = {"csv": _CsvFeed(landing, hospital, rng, counters), "fhir": _FhirFeed(landing, hospital, rng),
             "hl7v2": _Hl7Feed(landing, hospital, rng, counters)}
    fallback = None
    for person in members:
        mrn = person.mrns[hospital]
        by_feed: dict[str, list[_Encounter]] = {}
        for encounter in _encounters(rng, person, counters):
            by_feed.setdefault(feed_for_year(encounter.start.year), []).append(encounter)
        known, kinds = _noisy(person, hospital, seed, prefixes)
        noise += [(person.index, hospital, kind) for kind in kinds]
        for feed, encounters in by_feed.items():
            feeds[feed].write(known, mrn, encounters)
            fallback = fallback or (person, mrn, encounters[0])
    if fallback is None:
        raise ValueError(f"{hospital} has no patients; raise `patients` so every hospital gets some")
    for feed in feeds.values():
        feed.close(fallback)
    return feeds


def _write_persons(path: Path, persons: list[_Person], hospitals: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["person_index", "national_id", "family", "given", "birth_date", "sex", "phone", "street",
                         "city", "postal_code", *(f"mrn_{h}" for h in hospitals)])
        for p in persons:
            writer.writerow([p.index, p.national_id, p.family, p.given, p.birth_date.isoformat(), p.sex, p.phone,
                             p.street, p.city, p.postal_code, *(p.mrns.get(h, "") for h in hospitals)])


def _write_bad(path: Path, bad: list[BadRecord]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["hospital", "feed", "file", "position", "expected_code", "description"])
        for b in bad:
            writer.writerow([b.hospital, b.feed, b.file, b.position, b.expected_code, b.description])


def generate(
    landing: Path,
    *,
    hospitals: int = 3,
    patients: int = 200,
    seed: int = 7,
    postal_prefixes: list[str],
    truth_dir: Path,
    overwrite: bool = False,
) -> SynthResult:
    """Write the feeds of `hospitals` synthetic hospitals serving `patients` persons, and the ground truth.

    `postal_prefixes` are the first three digits of the persons' postal codes (include any restricted
    prefix the de-identification policy must handle). Existing feed files make this fail unless
    `overwrite` is set, in which case only the feed files this function writes are replaced.
    """
    landing, truth_dir = Path(landing), Path(truth_dir)
    _check_prefixes(postal_prefixes)
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    ids = hospital_ids(hospitals)
    _prepare(landing, ids, overwrite)
    truth_dir.mkdir(parents=True, exist_ok=True)
    persons = _population(random.Random(f"carelake-synth/{seed}/population"), patients, ids, postal_prefixes)
    persons_csv, bad_csv = truth_dir / "persons.csv", truth_dir / "bad_records.csv"
    _write_persons(persons_csv, persons, ids)

    records, encounters, bad, patient_counts = {}, {}, [], {}
    noise: list[tuple[int, str, str]] = []
    prefixes = list(dict.fromkeys(postal_prefixes))
    for index, hospital in enumerate(ids):
        members = [p for p in persons if index in p.hospitals]
        feeds = _write_hospital(landing, hospital, index, seed, members, prefixes, noise)
        patient_counts[hospital] = len(members)
        records[hospital] = {name: feed.total() for name, feed in feeds.items()}
        encounters[hospital] = {name: feed.encounters for name, feed in feeds.items()}
        bad += [b for name in FEEDS for b in feeds[name].bad]
    _write_bad(bad_csv, bad)
    with open(truth_dir / "noise.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["person_index", "hospital", "noise"])
        writer.writerows(noise)
    return SynthResult(landing, truth_dir, tuple(ids), len(persons), patient_counts, records, encounters,
                       tuple(bad), persons_csv, bad_csv)
