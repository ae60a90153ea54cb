import pytest

from transforms.kanon import LadderStep, k_anonymize

QI = ["birth_year", "age_band", "gender", "postal3", "region"]
LADDER = [LadderStep("postal3"), LadderStep("birth_year"), LadderStep("age_band", "band20"), LadderStep("region")]
SCHEMA = "person_id string, hospital string, birth_year string, age_band string, gender string, postal3 string, region string"


def _rows(df):
    return {(r.person_id, r.hospital): r.asDict() for r in df.collect()}


def test_large_groups_untouched_small_ones_generalized_then_suppressed(spark):
    big = [(f"a{i}", "h1", "1980", "45-49", "female", "101", "north") for i in range(5)]
    # same region, sex and 20-year band, different postal prefixes and birth years: one generalization apart
    mid = [(f"b{i}", "h1", str(1976 + i), "45-49" if i < 3 else "40-44", "male", f"10{i % 2}", "north") for i in range(5)]
    lone = [("c0", "h1", "1950", "75-79", "other", "105", "south")]
    # one person at two hospitals is one person, not two
    twice = [("d0", "h1", "1990", "35-39", "female", "103", "east"), ("d0", "h2", "1990", "35-39", "female", "103", "east")]
    df = spark.createDataFrame(big + mid + lone + twice, SCHEMA)
    out = _rows(k_anonymize(df, k=5, quasi_identifiers=QI, ladder=LADDER))
    assert all(out[(f"a{i}", "h1")]["kanon_step"] == 0 and out[(f"a{i}", "h1")]["postal3"] == "101" for i in range(5))
    for i in range(5):
        row = out[(f"b{i}", "h1")]
        assert (row["postal3"], row["birth_year"], row["age_band"], row["region"], row["kanon_step"]) == (None, None, "40-59", "north", 3)
    for key in [("c0", "h1"), ("d0", "h1"), ("d0", "h2")]:
        assert all(out[key][c] is None for c in QI) and out[key]["kanon_step"] == 5
    assert list(k_anonymize(df, k=5, quasi_identifiers=QI, ladder=LADDER).columns) == [*df.columns, "kanon_step"]


def test_settings_are_checked(spark):
    df = spark.createDataFrame([], SCHEMA)
    with pytest.raises(ValueError, match="k must be at least 2"):
        k_anonymize(df, k=1, quasi_identifiers=QI, ladder=LADDER)
    with pytest.raises(ValueError, match="unknown generalization 'blur'"):
        k_anonymize(df, k=5, quasi_identifiers=QI, ladder=[LadderStep("postal3", "blur")])
    with pytest.raises(ValueError, match=r"column\(s\) zip not in the table"):
        k_anonymize(df, k=5, quasi_identifiers=["zip"], ladder=[])
