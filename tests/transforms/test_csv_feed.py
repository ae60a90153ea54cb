"""CSV exports to FHIR: header checks, per-hospital layouts, formats, codes, and quarantine errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml

from carelake.synth import csv_mapping_for, generate, terminology_rows
from transforms.csv_feed import CsvLayoutError, csv_row_to_resources, read_csv_records
from transforms.errors import RecordError
from transforms.fhir_validate import validate
from transforms.ids import resource_id
from transforms.systems import ACT_CODE, ICD10, LOINC, NATIONAL_ID_SYSTEM, UCUM, local_code_system, mrn_system, visit_system
from transforms.terminology import COLUMNS, Concept, Terminology

MAPPINGS = Path(__file__).resolve().parents[2] / "conf" / "csv_mappings"
HOSPITAL = "hosp-x"
LOCAL_LAB = local_code_system(HOSPITAL, "lab")

MAPPING = {
    "name": "test-his",
    "delimiter": ";",
    "encoding": "latin-1",
    "timezone": "Europe/Berlin",
    "entities": {
        "patients": {"file": "pat.csv", "date_format": "%d.%m.%Y",
                     "columns": {"patient_id": "PID", "national_id": "NID", "family": "NAME", "given": "VORNAME",
                                 "birth_date": "GEB", "sex": "SEX", "phone": "TEL", "street": "STR", "city": "ORT",
                                 "postal_code": "PLZ"},
                     "values": {"sex": {"w": "female", "d": "other"}}},
        "encounters": {"file": "fall.csv", "datetime_format": "%d.%m.%Y %H:%M",
                       "columns": {"encounter_id": "FALL", "patient_id": "PID", "class": "ART", "start": "AUFN",
                                   "end": "ENTL"}},
        "observations": {"file": "lab.csv", "datetime_format": "%Y-%m-%dT%H:%M:%S%z",
                         "columns": {"observation_id": "ID", "patient_id": "PID", "encounter_id": "FALL",
                                     "code": "CODE", "code_system": "SYS", "value": "WERT", "unit": "EINHEIT",
                                     "flag": "FLAG", "effective": "ZEIT"}},
        "conditions": {"file": "dx.csv", "datetime_format": "%d.%m.%Y",
                       "columns": {"condition_id": "ID", "patient_id": "PID", "encounter_id": "FALL", "code": "ICD",
                                   "onset": "DATUM"}},
    },
}
PATIENT = {"patient_id": "00042", "national_id": "1234567890", "family": "Müller", "given": "Jürgen",
           "birth_date": "30.01.1950", "sex": "w", "phone": "+49 30 123456", "street": "Hauptstraße 5",
           "city": "Neustadt", "postal_code": "10115"}
ENCOUNTER = {"encounter_id": "V1", "patient_id": "00042", "class": "I", "start": "15.01.2024 08:30",
             "end": "20.07.2024 11:00"}
OBSERVATION = {"observation_id": "O1", "patient_id": "00042", "encounter_id": "V1", "code": "GLU", "code_system": "L",
               "value": "132", "unit": "mg/dL", "flag": "H", "effective": "2024-01-15T09:00:00+01:00"}
CONDITION = {"condition_id": "D1", "patient_id": "00042", "encounter_id": "V1", "code": "E11.9", "onset": "15.01.2024"}
TERMINOLOGY = Terminology.from_csv_files([])


@pytest.fixture(scope="module")
def terminology(tmp_path_factory):
    path = tmp_path_factory.mktemp("terminology") / "lab.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerow([LOCAL_LAB, "GLU", LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"])
    return Terminology.from_csv_files([path])


def _map(entity: str, row: dict, terminology: Terminology = TERMINOLOGY, mapping: dict = MAPPING) -> dict:
    resources = csv_row_to_resources(entity, row, hospital=HOSPITAL, mapping=mapping, terminology=terminology)
    assert len(resources) == 1
    validate(resources[0])
    return resources[0]


def _error(entity: str, row: dict) -> RecordError:
    with pytest.raises(RecordError) as caught:
        csv_row_to_resources(entity, row, hospital=HOSPITAL, mapping=MAPPING, terminology=TERMINOLOGY)
    return caught.value


def _write(path: Path, lines: list[str], encoding: str = "latin-1") -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


# ---------------------------------------------------------------------------------------------------
# Reading


def test_reads_rows_by_canonical_field_honouring_delimiter_and_encoding(tmp_path):
    _write(tmp_path / "pat.csv", ["PID;NID;NAME;VORNAME;GEB;SEX;TEL;STR;ORT;PLZ",
                                  '00042;1234567890;Müller;Jürgen;30.01.1950;m;;"Weg 1; Hof";Neustadt;10115',
                                  "",
                                  "00043;;Weiß;Anna;01.02.1960;w;;;;"])
    records = list(read_csv_records(tmp_path, MAPPING))
    assert [(r.entity, r.position) for r in records] == [("patients", 0), ("patients", 1)]
    assert records[0].file == str(tmp_path / "pat.csv")
    assert records[0].row["family"] == "Müller" and records[0].row["street"] == "Weg 1; Hof"
    assert records[0].row["patient_id"] == "00042"  # leading zeros kept: ids are text


def test_renamed_column_raises_layout_error_naming_file_and_columns(tmp_path):
    _write(tmp_path / "pat.csv", ["PID;NID;NAME;VORNAME;GEB;SEX;TEL;STR;ORT;POSTLEITZAHL", "1;;A;B;;;;;;"])
    with pytest.raises(CsvLayoutError) as caught:
        list(read_csv_records(tmp_path, MAPPING))
    assert str(caught.value).startswith(
        "pat.csv: columns do not match mapping 'test-his': missing ['PLZ'], unexpected ['POSTLEITZAHL']")


def test_extra_column_alone_is_a_layout_error(tmp_path):
    _write(tmp_path / "dx.csv", ["ID;PID;FALL;ICD;DATUM;KOMMENTAR"])
    with pytest.raises(CsvLayoutError, match=r"dx.csv: .* unexpected \['KOMMENTAR'\]"):
        list(read_csv_records(tmp_path, MAPPING))


def test_delivery_without_any_mapped_file_is_a_layout_error(tmp_path):
    (tmp_path / "other.csv").write_text("a\n")
    with pytest.raises(CsvLayoutError, match="none of the files of mapping 'test-his'"):
        list(read_csv_records(tmp_path, MAPPING))


def test_utf8_bom_does_not_hide_the_first_column(tmp_path):
    mapping = MAPPING | {"encoding": "utf-8"}
    _write(tmp_path / "dx.csv", ["\ufeffID;PID;FALL;ICD;DATUM", "D1;00042;V1;I10;15.01.2024"], encoding="utf-8")
    assert [r.row["condition_id"] for r in read_csv_records(tmp_path, mapping)] == ["D1"]


def test_rows_with_the_wrong_number_of_cells_are_parse_errors(tmp_path):
    _write(tmp_path / "dx.csv", ["ID;PID;FALL;ICD;DATUM", "D1;00042;V1", "D2;00042;V1;I10;15.01.2024;x"])
    for record in read_csv_records(tmp_path, MAPPING):
        assert _error(record.entity, record.row).code == "PARSE"


# ---------------------------------------------------------------------------------------------------
# Mapping rows


def test_patient_row_maps_to_patient_with_identifiers_and_demographics():
    patient = _map("patients", PATIENT)
    assert patient["id"] == resource_id(HOSPITAL, "Patient", "00042")
    assert patient["identifier"][0]["system"] == mrn_system(HOSPITAL) and patient["identifier"][0]["value"] == "00042"
    assert patient["identifier"][1] == {"use": "official", "type": patient["identifier"][1]["type"],
                                        "system": NATIONAL_ID_SYSTEM, "value": "1234567890"}
    assert patient["name"] == [{"use": "official", "family": "Müller", "given": ["Jürgen"]}]
    assert patient["gender"] == "female"  # hospital code "w" through the mapping's values
    assert patient["birthDate"] == "1950-01-30"
    assert patient["telecom"] == [{"system": "phone", "value": "+49 30 123456", "use": "home"}]
    assert patient["address"] == [{"use": "home", "line": ["Hauptstraße 5"], "city": "Neustadt", "postalCode": "10115"}]


def test_patient_with_only_an_id_is_still_valid():
    patient = _map("patients", {k: "" for k in PATIENT} | {"patient_id": "7"})
    assert set(patient) == {"resourceType", "id", "identifier"}


def test_encounter_gets_class_period_with_offset_and_references():
    encounter = _map("encounters", ENCOUNTER)
    assert encounter["id"] == resource_id(HOSPITAL, "Encounter", "V1")
    assert encounter["identifier"] == [{"system": visit_system(HOSPITAL), "value": "V1"}]
    assert encounter["class"]["system"] == ACT_CODE and encounter["class"]["code"] == "IMP"
    assert encounter["status"] == "finished"
    # wall-clock times without offset take the mapping's zone: winter +01:00, summer +02:00
    assert encounter["period"] == {"start": "2024-01-15T08:30:00+01:00", "end": "2024-07-20T11:00:00+02:00"}
    assert encounter["subject"] == {"reference": f"Patient/{resource_id(HOSPITAL, 'Patient', '00042')}"}


def test_encounter_without_end_is_in_progress():
    assert _map("encounters", ENCOUNTER | {"end": ""})["status"] == "in-progress"


@pytest.mark.parametrize("raw, act", [("O", "AMB"), ("emergency", "EMER"), ("IMP", "IMP"), ("Outpatient", "AMB")])
def test_encounter_class_synonyms(raw, act):
    assert _map("encounters", ENCOUNTER | {"class": raw})["class"]["code"] == act


def test_unknown_encounter_class_is_unknown_code_without_the_value():
    error = _error("encounters", ENCOUNTER | {"class": "ZZ"})
    assert error.code == "UNKNOWN_CODE"
    assert "ART (encounters.class)" in error.reason and "ZZ" not in error.reason


def test_impossible_birth_date_is_invalid_date_naming_the_field_not_the_value():
    error = _error("patients", PATIENT | {"birth_date": "30.02.2023"})
    assert error.code == "INVALID_DATE"
    assert "GEB (patients.birth_date)" in error.reason and "2023" not in error.reason


def test_end_before_start_is_invalid_date():
    assert _error("encounters", ENCOUNTER | {"end": "14.01.2024 08:30"}).code == "INVALID_DATE"


@pytest.mark.parametrize("entity, row, field", [
    ("patients", PATIENT | {"patient_id": " "}, "patient_id"),
    ("encounters", ENCOUNTER | {"start": ""}, "start"),
    ("observations", OBSERVATION | {"code": ""}, "code"),
    ("conditions", CONDITION | {"patient_id": ""}, "patient_id"),
])
def test_missing_required_field_is_missing_field(entity, row, field):
    error = _error(entity, row)
    assert error.code == "MISSING_FIELD" and f"({entity}.{field})" in error.reason


def test_unmapped_entity_is_unsupported():
    assert _error("medications", {"x": "1"}).code == "UNSUPPORTED"


def test_local_lab_code_keeps_local_coding_and_gains_loinc(terminology):
    observation = _map("observations", OBSERVATION, terminology)
    assert observation["code"]["coding"] == [
        {"system": LOCAL_LAB, "code": "GLU"},
        {"system": LOINC, "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"},
    ]
    assert observation["valueQuantity"] == {"value": 132, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    assert observation["interpretation"][0]["coding"][0]["code"] == "H"
    assert observation["effectiveDateTime"] == "2024-01-15T09:00:00+01:00"
    assert observation["status"] == "final"
    assert observation["encounter"] == {"reference": f"Encounter/{resource_id(HOSPITAL, 'Encounter', 'V1')}"}


def test_unmapped_local_code_stays_local(terminology):
    observation = _map("observations", OBSERVATION | {"code": "CRP-Q"}, terminology)
    assert observation["code"]["coding"] == [{"system": LOCAL_LAB, "code": "CRP-Q"}]


@pytest.mark.parametrize("coding", [
    {"system": LOCAL_LAB, "code": "GLU"},  # mapped: the standard coding follows
    {"system": LOCAL_LAB, "code": "CRP-Q"},  # unmapped
    {"system": LOINC, "code": "2345-7", "display": "Glucose"},  # mapped to itself: not repeated
])
def test_code_element_is_what_add_standard_codings_makes(coding):
    from transforms.csv_feed import _concept
    from transforms.fhir_feed import add_standard_codings

    rows = [(LOCAL_LAB, "GLU", LOINC, "2345-7", "Glucose"), (LOINC, "2345-7", LOINC, "2345-7", "Glucose")]
    terminology = Terminology({(s, c): Concept(ts, tc, d) for s, c, ts, tc, d in rows})
    assert _concept(dict(coding), terminology) == add_standard_codings({"coding": [dict(coding)]}, terminology)


def test_loinc_code_and_decimal_value():
    observation = _map("observations", OBSERVATION | {"code": "718-7", "code_system": "LOINC", "value": "13.5",
                                                      "unit": "g/dL", "flag": "N"})
    assert observation["code"]["coding"] == [{"system": LOINC, "code": "718-7"}]
    assert observation["valueQuantity"]["value"] == 13.5


@pytest.mark.parametrize("field, value, code", [("code_system", "SNOMED?", "UNKNOWN_CODE"), ("flag", "X", "UNKNOWN_CODE"),
                                                ("code_system", "", "MISSING_FIELD")])
def test_observation_code_problems(field, value, code):
    assert _error("observations", OBSERVATION | {field: value}).code == code


def test_condition_row_maps_to_encounter_diagnosis():
    condition = _map("conditions", CONDITION)
    assert condition["code"]["coding"] == [{"system": ICD10, "code": "E11.9"}]
    assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
    assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert condition["onsetDateTime"] == "2024-01-15"  # the format has no time: a date
    assert condition["subject"]["reference"] == f"Patient/{resource_id(HOSPITAL, 'Patient', '00042')}"


def test_mapping_does_not_modify_the_row():
    row = dict(OBSERVATION)
    _map("observations", row)
    assert row == OBSERVATION


# ---------------------------------------------------------------------------------------------------
# The generator's exports against the layouts in conf/csv_mappings


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    root = tmp_path_factory.mktemp("region")
    return generate(root / "landing", patients=80, seed=3, postal_prefixes=["101", "036"], truth_dir=root / "truth")


def test_every_conf_mapping_names_itself():
    for path in MAPPINGS.glob("*.yaml"):
        assert yaml.safe_load(path.read_text(encoding="utf-8"))["name"] == path.stem


def test_generated_exports_match_conf_mappings_and_map_to_valid_fhir(region, tmp_path):
    terminology_csv = tmp_path / "terminology.csv"
    with open(terminology_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(terminology_rows(region.hospitals))
    terminology = Terminology.from_csv_files([terminology_csv])
    bad = {(b.file, b.position): b.expected_code for b in region.bad_records if b.feed == "csv"}
    seen_bad, mapped = {}, 0
    for hospital in region.hospitals:
        mapping = yaml.safe_load((MAPPINGS / f"{csv_mapping_for(hospital)}.yaml").read_text(encoding="utf-8"))
        for record in read_csv_records(region.landing / hospital / "csv", mapping):
            key = (Path(record.file).relative_to(region.landing).as_posix(), record.position)
            try:
                resources = csv_row_to_resources(record.entity, record.row, hospital=hospital, mapping=mapping,
                                                 terminology=terminology)
            except RecordError as error:
                seen_bad[key] = error.code
                continue
            for resource in resources:
                validate(resource)
            mapped += 1
    assert seen_bad == bad
    assert mapped > 500


# ---------------------------------------------------------------------------------------------------
# Issue 4: renamed columns, encodings, the Synthea layout


def test_a_renamed_column_fails_ingest_naming_the_file_and_the_columns(tmp_path, monkeypatch):
    from carelake.config import load_config
    from carelake.pipeline import run_pipeline
    from tests.carelake.test_linkage_synthea_paired import make_conf
    from tests.conftest import TEST_KEY

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "patients.csv").write_text("PATIENT_ID,NATIONAL_ID,SURNAME,FIRST_NAME,BIRTHDATE,SEX,PHONE,ADDRESS,CITY,ZIP\n"
                                         "1,2,Muster,Max,1970-01-01,M,,,,\n", encoding="utf-8")
    conf = make_conf(tmp_path, {"hosp-r": [{"kind": "csv", "path": str(folder), "mapping": "his-a"}]})
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    summary = run_pipeline(load_config(conf), tmp_path / "home", ["ingest"])
    assert summary.error == ("ingest: patients.csv: columns do not match mapping 'his-a': missing ['LAST_NAME'], "
                             "unexpected ['SURNAME'] (fix the export, or the mapping if the hospital changed its layout) "
                             "(mapping 'his-a', conf/csv_mappings/his-a.yaml)")
    assert "Muster" not in summary.error


def test_gb18030_export_with_tab_delimiter(tmp_path):
    mapping = {"name": "gb", "encoding": "gb18030", "delimiter": "\t", "entities": {"patients": {
        "file": "p.csv", "date_format": "%Y-%m-%d",
        "columns": {"patient_id": "编号", "family": "姓", "given": "名", "birth_date": "出生日期", "sex": "性别"},
        "values": {"sex": {"男": "male", "女": "female"}}}}}
    (tmp_path / "p.csv").write_bytes("编号\t姓\t名\t出生日期\t性别\n7\t王\t芳\t1988-07-04\t女\n".encode("gb18030"))
    [record] = list(read_csv_records(tmp_path, mapping))
    [patient] = csv_row_to_resources("patients", record.row, hospital=HOSPITAL, mapping=mapping, terminology=TERMINOLOGY)
    validate(patient)
    assert patient["name"][0] == {"use": "official", "family": "王", "given": ["芳"]} and patient["gender"] == "female"


def test_synthea_layout_maps_panels_content_ids_and_exclusions():
    from tests.conftest import extdata

    folder = extdata("synthea", "jijones12-synthea-ma-11pt-paired", "csv")
    mapping = yaml.safe_load((MAPPINGS / "synthea.yaml").read_text())
    counts: dict = {}
    ids = set()
    for record in read_csv_records(folder, mapping):
        if record.skipped:
            counts["skipped"] = counts.get("skipped", 0) + 1
            continue
        for resource in csv_row_to_resources(record.entity, record.row, hospital=HOSPITAL, mapping=mapping, terminology=TERMINOLOGY):
            validate(resource)
            ids.add((resource["resourceType"], resource["id"]))
            counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
            if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == "85354-9":
                assert {c["code"]["coding"][0]["code"] for c in resource["component"]} == {"8480-6", "8462-4"}
    assert counts == {"Patient": 11, "Encounter": 388, "Observation": 1802, "Condition": 273, "Immunization": 129, "skipped": 336}
    assert len(ids) == sum(v for k, v in counts.items() if k != "skipped")  # content ids are unique


# -- the fixed-width date fast path reads exactly what datetime.strptime reads -------------------------

_FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d", "%Y-%m-%dT%H:%M:%S%z", "%d/%m/%Y %H:%M", "%Y%m%d%H%M%S%z",
            "%m/%d/%Y %H:%M:%S", "%H:%M %d.%m.%Y", "%Y-%m-%d %I:%M %p", "%Y-%j"]


@st.composite
def _date_texts(draw):
    from datetime import datetime as dt

    fmt = draw(st.sampled_from(_FORMATS))
    moment = draw(st.datetimes(min_value=dt(1000, 1, 1), max_value=dt(9999, 12, 31)))
    offset = draw(st.sampled_from(["+0100", "-0530", "+00:00", "Z", "+2359", "+0060", "-1200"]))
    text = list(moment.strftime(fmt.replace("%z", offset)))
    for _ in range(draw(st.integers(0, 3))):  # then a few edits: digits, separators, spaces, letters
        i = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from("0123456789-/:+ TZz.\t"))
        op = draw(st.sampled_from(["set", "delete", "insert"]))
        if op == "insert" or i == len(text):
            text.insert(i, char)
        elif op == "set":
            text[i] = char
        else:
            del text[i]
    return fmt, "".join(text)


def _read(parse, text, fmt):
    try:
        moment = parse(text, fmt)
    except ValueError:
        return "ValueError"
    return moment.isoformat(), moment.utcoffset()


@settings(max_examples=3000, deadline=None)
@given(_date_texts())
def test_fast_strptime_reads_what_strptime_reads(case):
    from datetime import datetime as dt

    from transforms.csv_feed import _strptime

    fmt, text = case
    assert _read(_strptime, text, fmt) == _read(dt.strptime, text, fmt)
