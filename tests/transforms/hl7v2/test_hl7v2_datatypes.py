"""DTM precision and time zones, numbers, CWE systems, XTN/XAD/XPN/CX."""

from __future__ import annotations

import pytest

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2.parse import Delimiters, Repetition

D = Delimiters()


def rep(text: str) -> Repetition:
    return Repetition(text, D)


@pytest.mark.parametrize("value,expected", [
    ("2024", "2024"),
    ("202402", "2024-02"),
    ("20240229", "2024-02-29"),
    ("20240229+0800", "2024-02-29"),
    ("202402291230+0800", "2024-02-29T12:30:00+08:00"),
    ("20240229123045-0500", "2024-02-29T12:30:45-05:00"),
    ("20240229123045.123+0000", "2024-02-29T12:30:45.123+00:00"),
    ("2024022912", "2024-02-29"),  # a time without offset and no configured zone: the date only
])
def test_dtm_precision(value, expected):
    assert dt.fhir_datetime(value, "X-1") == expected


def test_dtm_uses_configured_timezone_when_no_offset():
    assert dt.fhir_datetime("20240229123045", "X-1", "+08:00") == "2024-02-29T12:30:45+08:00"
    assert dt.fhir_datetime("2024022912", "X-1", "+08:00") == "2024-02-29T12:00:00+08:00"
    assert dt.fhir_datetime("20240229123045-0500", "X-1", "+08:00") == "2024-02-29T12:30:45-05:00"


@pytest.mark.parametrize("value", [
    "20230229", "20241301", "20240000", "2024013", "0000", "20240101256000", "20240101120000+2500",
    "abcd", "2024-01-01", "20240101120000.", "202401011200+08",
])
def test_impossible_dates_raise_invalid_date_naming_the_field(value):
    with pytest.raises(RecordError) as err:
        dt.fhir_datetime(value, "PID-7")
    assert err.value.code == "INVALID_DATE"
    assert "PID-7" in err.value.reason and value not in err.value.reason


def test_date_and_instant_and_time():
    assert dt.fhir_date("19800215093000+0800", "PID-7") == "1980-02-15"
    assert dt.fhir_instant("20240101120000+0800", "OBR-22") == "2024-01-01T12:00:00+08:00"
    # Minute or hour precision is padded to seconds (as for dateTime); a date alone is no instant.
    assert dt.fhir_instant("202401011200+0800", "OBR-22") == "2024-01-01T12:00:00+08:00"
    assert dt.fhir_instant("20240101", "OBR-22", "+08:00") is None
    assert dt.fhir_instant("202401011200", "OBR-22") is None
    assert dt.fhir_time("1230", "OBX-5") == "12:30:00"
    assert dt.fhir_datetime("", "X") is None


@pytest.mark.parametrize("text,expected", [("7.8", 7.8), ("-5", -5), ("+.5", 0.5), (" 12 ", 12), ("<5", None),
                                           ("1e5", None), ("", None), (".", None), ("1.2.3", None)])
def test_decimal(text, expected):
    assert dt.decimal(text) == expected


def test_cwe_systems():
    cc = dt.codeable_concept(rep("E11.9^Diabetes^I10^250.00^DM^I9C"), "H", "dx")
    assert cc["coding"][0] == {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9", "display": "Diabetes"}
    assert cc["coding"][1]["system"] == "http://hl7.org/fhir/sid/icd-9-cm"
    assert dt.codeable_concept(rep("A^a^L"), "H", "lab")["coding"][0]["system"] == "urn:carelake:H:lab"
    assert dt.codeable_concept(rep("A^a^99ZZZ"), "H", "lab")["coding"][0]["system"] == "urn:carelake:H:lab"
    assert dt.codeable_concept(rep("A^a^HL70078"), "H", "x")["coding"][0]["system"] == \
        "http://terminology.hl7.org/CodeSystem/v2-0078"
    assert dt.codeable_concept(rep("^^^^^^^^only text"), "H", "x") == {"text": "only text"}
    assert dt.codeable_concept(rep(""), "H", "x") is None


def test_contact_point():
    assert dt.contact_point(rep("13800000000"), "home") == {"system": "phone", "value": "13800000000", "use": "home"}
    assert dt.contact_point(rep("^NET^Internet^a@b.org")) == {"system": "email", "value": "a@b.org"}
    cp = dt.contact_point(rep("^PRN^CP^^86^10^5551234"))
    assert {k: cp[k] for k in ("system", "value", "use")} == {
        "system": "phone", "value": "+86 10 5551234", "use": "home"}
    # IG XTN[ContactPoint]: the parts are kept as the standard contactpoint-* extensions too.
    assert [(e["url"].rsplit("-", 1)[1], e["valueString"]) for e in cp["extension"]] == [
        ("country", "86"), ("area", "10"), ("local", "5551234")]
    # XTN.12 (unformatted) wins over XTN.1; XTN.18 is the rank; a negative rank is no positiveInt.
    assert dt.contact_point(rep("111^^PH^^^^^^^^^222^^^^^^2")) == {"system": "phone", "value": "222", "rank": 2}
    assert dt.contact_point(rep("^^^^^^^^^^^^^^^^^-1")) is None
    # Only an area code: kept, with the system said absent (IG), not dropped.
    area_only = dt.contact_point(rep("^^^^^218"))
    assert "value" not in area_only and area_only["_system"]["extension"][0]["valueCode"] == "unknown"


def test_address_and_name_and_identifier():
    assert dt.address(rep("1 Long St&Long St&1^Apt 2^Springfield^ST^100001^CN^H^^District 9")) == {
        "line": ["1 Long St", "Long St", "1", "Apt 2"], "city": "Springfield", "state": "ST", "postalCode": "100001",
        "country": "CN", "district": "District 9", "use": "home"}
    # IG XAD[Address]: SAD.1-3 are lines 1-3, XAD.2 line 4, XAD.19 line 5; XAD.13/14 (or XAD.12) the period.
    assert dt.address(rep("Main St^^Town^^^^^^^^^^20200101^20201231^^^^^Attn Ward 3"), "+08:00") == {
        "line": ["Main St", "Attn Ward 3"], "city": "Town", "period": {"start": "2020-01-01", "end": "2020-12-31"}}
    assert dt.human_name(rep("Wang&&Wang^Li^Ming^Jr^Dr^^L")) == {
        "family": "Wang", "given": ["Li", "Ming"], "prefix": ["Dr"], "suffix": ["Jr"], "use": "official"}
    ident = dt.identifier(rep("123^^^HOSP&1.2.3&ISO^PI"), "H")
    assert ident == {"value": "123", "system": "urn:oid:1.2.3",
                     "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]}}
    assert dt.identifier(rep("123^^^My Clinic"), "H")["system"] == "urn:carelake:H:id:My%20Clinic"
