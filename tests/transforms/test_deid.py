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


# -- the engine's built-in expressions give what the per-row reference (`_apply`) gives ------------

import hashlib  # noqa: E402
import hmac  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from transforms.deid import _apply, hmac_hex, with_key  # noqa: E402

_ENGINE = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_DATES = st.builds(lambda d, form: d.isoformat()[:form] if form else d.isoformat() + "T10:00:00+01:00",
                   st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)), st.sampled_from([0, 4, 7, 10]))
_DATEISH = st.one_of(_DATES, st.from_regex(r"\A[0-9]{4}(-[0-9]{1,2}(-[0-9]{1,3})?)?[T ]?\Z"), _TEXT,
                     st.sampled_from(["2024-02-30", "2024-13-01", "1980-5", "1980-05-1", " 1980-05-17", ""]))


@_ENGINE
@given(key=st.binary(min_size=0, max_size=100), messages=st.lists(_TEXT, min_size=1, max_size=20))
def test_hmac_with_built_ins_equals_python_hmac(spark, key, messages):
    df = spark.createDataFrame([(i, m) for i, m in enumerate(messages)], "i int, m string")
    got = {r["i"]: r["h"] for r in with_key(df, key).select("i", hmac_hex(df["m"]).alias("h")).collect()}
    assert got == {i: hmac.new(key, m.encode("utf-8"), hashlib.sha256).hexdigest() for i, m in enumerate(messages)}


@_ENGINE
@given(values=st.lists(st.tuples(_DATEISH, st.one_of(st.none(), st.just(""), _TEXT)), min_size=1, max_size=25),
       shift_range=st.sampled_from([0, 1, 30, 365]))
def test_every_action_in_the_engine_equals_the_reference(spark, values, shift_range):
    policy = Policy(key=KEY, as_of=date(2026, 6, 30), restricted_prefixes=("099", "1 2"), shift_range=shift_range,
                    regions=(("north", ("100", "101")), ("south", ("1",)), ("none", ())))
    actions = ["keep", "pseudonym", "date_shift", "year", "month", "birth_year", "age_band", "postal3", "region"]
    table = {"columns": [{"column": "v", "action": a, "as": a} for a in actions]}
    rows = [(i, v, p) for i, (v, p) in enumerate(values)]
    df = spark.createDataFrame(rows, "i int, v string, person_key string")
    got = {r["i"]: r.asDict() for r in deidentify(df, {"columns": [{"column": "i", "action": "keep"}] + table["columns"]}, policy).collect()}
    for i, v, person in rows:
        expected = {a: _apply(a, v, policy, person) for a in actions}
        assert {a: got[i][a] for a in actions} == expected, (v, person)


def test_the_key_is_not_written_into_the_plan(spark, capsys):
    """The padded keys come in as data of a one-row relation, never as literals of the expressions."""
    from transforms.deid import hmac_pads

    df = spark.createDataFrame([("pk1", "2024-03-02", "pk1")], "v string, d string, person_key string")
    table = {"columns": [{"column": "v", "action": "pseudonym"}, {"column": "d", "action": "date_shift"}]}
    out = deidentify(df, table, POLICY)
    out.explain(extended=True)
    plan = capsys.readouterr().out
    assert "sha256" in plan.lower() or "sha2" in plan.lower()
    secrets = [KEY.decode(), KEY.hex(), *(pad.hex() for pad in hmac_pads(KEY)), *(pad.hex().upper() for pad in hmac_pads(KEY))]
    assert not [s for s in secrets if s in plan]
