import json

from transforms.phi_scan import direct_identifiers, identifier_values, scan

PATIENT = {
    "resourceType": "Patient", "id": "x",
    "identifier": [{"system": "urn:mrn", "value": "MRN-0042"}, {"system": "urn:carelake:national-id", "value": "9876543210"}],
    "name": [{"family": "Okafor", "given": ["Chidi", "A"]}],
    "telecom": [{"system": "phone", "value": "+1 555 0100"}],
    "address": [{"line": ["12 Elm Street"], "city": "Springfield", "postalCode": "10155"}],
    "birthDate": "1980-05-17",
}


def test_identifier_values_cover_the_direct_identifiers():
    values = identifier_values(PATIENT)
    assert {"MRN-0042", "9876543210", "Okafor", "Chidi", "+1 555 0100", "12 Elm Street", "1980-05-17"} <= values
    assert "A" not in values  # too short to scan without false alarms
    assert "10155" not in values and "Springfield" not in values  # quasi-identifiers: generalised, not scanned


def test_scan_finds_leaked_values_by_column(spark):
    silver = spark.createDataFrame([(json.dumps(PATIENT),)], "resource string")
    gold = spark.createDataFrame([("p1", "Okafor", "1980"), ("p2", "Smith", "1980-05-17")], "person_id string, note string, born string")
    hits = {r.column: r.hits for r in scan(gold, direct_identifiers(silver)).collect()}
    assert hits == {"note": 1, "born": 1}
    clean = spark.createDataFrame([("p1", "1980")], "person_id string, born string")
    assert scan(clean, direct_identifiers(silver)).count() == 0


def test_emails_contacts_and_identifiers_inside_longer_values(spark):
    from transforms.phi_scan import tokens

    patient = {**PATIENT, "telecom": [{"system": "email", "value": "chidi.okafor@example.org"}],
               "contact": [{"name": {"family": "Nwosu", "given": ["Adaeze"]}, "telecom": [{"system": "phone", "value": "+1 555 0199"}]}]}
    values = identifier_values(patient)
    assert {"chidi.okafor@example.org", "Nwosu", "Adaeze", "+1 555 0199"} <= values
    assert "1980-05-17" in tokens("1980-05-17T10:00:00+01:00")
    assert "12 Elm Street" in tokens("c/o 12 Elm Street, back door")
    silver = spark.createDataFrame([(json.dumps(patient),)], "resource string")
    gold = spark.createDataFrame(
        [("p1", "seen 1980-05-17T10:00", "call +1 555 0199 after 5"), ("p2", "AMB", "Okafor"), ("p3", "2024-03", "Elmwood")],
        "person_id string, born string, note string")
    hits = {r.column: r.hits for r in scan(gold, direct_identifiers(silver)).collect()}
    assert hits == {"born": 1, "note": 2}
