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


def test_date_shift_is_consistent_per_person_and_within_range(spark):
    from transforms.deid import shift_days

    policy = Policy(key=KEY, as_of=date(2026, 6, 30), shift_range=10)
    table = {"columns": [{"column": "person_key", "action": "pseudonym", "as": "person_id"},
                         {"column": "start", "action": "date_shift", "as": "start_shifted"},
                         {"column": "end", "action": "date_shift", "as": "end_shifted"},
                         {"column": "note", "action": "drop"}]}
    df = spark.createDataFrame(
        [("pk1", "2024-03-02T10:00:00+01:00", "2024-03-12", "free text"), ("pk1", "2025-01-01", None, None),
         ("pk2", "2024-03-02", "2024-03-04", "x")], "person_key string, start string, `end` string, note string")
    rows = [r.asDict() for r in deidentify(df, table, policy).collect()]
    assert all(list(r) == ["person_id", "start_shifted", "end_shifted"] for r in rows)  # drop leaves nothing behind
    first = next(r for r in rows if r["start_shifted"] and r["end_shifted"] and r["person_id"] == pseudonym(KEY, "pk1"))
    shift = shift_days(KEY, "pk1", 10)
    assert -10 <= shift <= 10
    assert first["start_shifted"] == (date(2024, 3, 2) + __import__("datetime").timedelta(days=shift)).isoformat()
    # the interval survives: 10 days apart before and after
    assert (date.fromisoformat(first["end_shifted"]) - date.fromisoformat(first["start_shifted"])).days == 10
    shifts = {shift_days(KEY, f"p{i}", 10) for i in range(200)}
    assert shifts <= set(range(-10, 11)) and len(shifts) > 15
    assert [shift_days(KEY, f"p{i}", 10) for i in range(50)] != [shift_days(KEY + b"x", f"p{i}", 10) for i in range(50)]


def test_date_shift_needs_the_person_column(spark):
    df = spark.createDataFrame([("2024-03-02",)], "start string")
    with pytest.raises(ValueError, match="date_shift needs the person_key column"):
        deidentify(df, {"columns": [{"column": "start", "action": "date_shift"}]}, POLICY)
