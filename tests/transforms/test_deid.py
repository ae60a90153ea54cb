from datetime import date

import pytest

from transforms.deid import Policy, deidentify, pseudonym

KEY = b"k" * 16 + b"0123456789abcdef"
POLICY = Policy(key=KEY, as_of=date(2026, 6, 30), restricted_prefixes=("099",),
                regions=(("north", ("100", "101")), ("south", ("104",))))
TABLE = {"columns": [
    {"column": "person_key", "action": "pseudonym", "as": "person_id"},
    {"column": "gender", "action": "keep"},
    {"column": "birth_date", "action": "birth_year", "as": "birth_year"},
    {"column": "birth_date", "action": "age_band", "as": "age_band"},
    {"column": "postal_code", "action": "postal3", "as": "postal3"},
    {"column": "postal_code", "action": "region", "as": "region"},
    {"column": "start", "action": "month", "as": "start_month"},
]}
COLUMNS = "person_key string, family string, gender string, birth_date string, postal_code string, start string"


def test_same_key_same_pseudonym_other_key_other():
    assert pseudonym(KEY, "person-1") == pseudonym(KEY, "person-1")
    assert pseudonym(KEY, "person-1") != pseudonym(KEY + b"x", "person-1")
    assert len(pseudonym(KEY, "person-1")) == 32


def test_policy_columns_only_and_generalised(spark):
    df = spark.createDataFrame(
        [("pk1", "Doe", "female", "1980-05-17", "10155", "2024-03-02T10:00:00+01:00"),
         ("pk2", "Roe", "male", "1930-01-01", "09912", None),
         ("pk3", "Poe", "other", "2026-01-15", "77777", "2025-12")],
        COLUMNS,
    )
    rows = sorted((r.asDict() for r in deidentify(df, TABLE, POLICY).collect()), key=lambda r: r["gender"])
    assert list(rows[0]) == ["person_id", "gender", "birth_year", "age_band", "postal3", "region", "start_month"]
    female, male, other = rows
    assert female == {"person_id": pseudonym(KEY, "pk1"), "gender": "female", "birth_year": "1980", "age_band": "45-49",
                      "postal3": "101", "region": "north", "start_month": "2024-03"}
    # 96 at the reference date: no birth year at all, only the top band; restricted prefix blanked
    assert (male["birth_year"], male["age_band"], male["postal3"], male["region"], male["start_month"]) == (None, "90+", "000", "other", None)
    assert (other["age_band"], other["region"]) == ("0-4", "other")


def test_unknown_action_and_missing_column_are_refused(spark):
    df = spark.createDataFrame([("pk1", "Doe", "female", "1980-05-17", "10155", None)], COLUMNS)
    with pytest.raises(ValueError, match="unknown de-identification action 'blur'"):
        deidentify(df, {"columns": [{"column": "family", "action": "blur"}]}, POLICY)
    with pytest.raises(ValueError, match="names column 'phone', which the view does not produce"):
        deidentify(df, {"columns": [{"column": "phone", "action": "keep"}]}, POLICY)
