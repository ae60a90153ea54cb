from transforms.marts import encounters_by_region_month, suppress_small_cells


def test_small_cells_suppressed_and_zero_kept(spark):
    df = spark.createDataFrame([("a", 25, 12), ("b", 11, 3), ("c", 0, 0)], "k string, encounters long, persons long")
    rows = {r.k: r for r in suppress_small_cells(df, ["encounters", "persons"]).collect()}
    assert (rows["a"].encounters, rows["a"].persons, rows["a"].suppressed) == (25, 12, False)
    assert (rows["b"].encounters, rows["b"].persons, rows["b"].suppressed) == (None, None, True)
    assert (rows["c"].encounters, rows["c"].suppressed) == (0, False)


def test_encounters_by_region_month_counts_persons_once(spark):
    patient = spark.createDataFrame(
        [(f"p{i}", "h1", "north") for i in range(12)] + [("q", "h1", None)], "person_id string, hospital string, region string")
    encounter = spark.createDataFrame(
        [(f"p{i}", "h1", "AMB", "2024-03") for i in range(12)] + [("p0", "h1", "AMB", "2024-03"), ("q", "h1", "IMP", "2024-04")],
        "person_id string, hospital string, class string, start_month string",
    )
    rows = {(r.region, r.month): r for r in encounters_by_region_month(encounter, patient).collect()}
    north = rows[("north", "2024-03")]
    assert (north.encounters, north.persons, north.suppressed) == (13, 12, False)
    unknown = rows[("unknown", "2024-04")]
    assert (unknown.encounters, unknown.persons, unknown.suppressed) == (None, None, True)


def test_icd10_chapters_and_age_groups(spark):
    from pyspark.sql import functions as F

    from transforms.marts import age_group, icd10_chapter

    df = spark.createDataFrame([("E11.9", "45-49"), ("I10", "90+"), ("S52.5", "0-4"), ("U07.1", "40-59"), ("R51", None)],
                               "code string, band string")
    got = [(r.chapter, r.grp) for r in df.select(icd10_chapter(F.col("code")).alias("chapter"), age_group(F.col("band")).alias("grp")).collect()]
    assert got == [("IV", "40-59"), ("IX", "80+"), ("XIX", "0-19"), ("XXII", "40-59"), ("XVIII", None)]


def test_condition_prevalence_zero_cells_and_suppression(spark):
    from transforms.marts import condition_prevalence

    patient = spark.createDataFrame([(f"p{i}", "h1", "north", "45-49", "female") for i in range(20)]
                                    + [(f"q{i}", "h1", "south", "45-49", "male") for i in range(12)],
                                    "person_id string, hospital string, region string, age_band string, gender string")
    condition = spark.createDataFrame([(f"p{i}", "I10") for i in range(12)] + [("p0", "I25.1"), ("q0", "J45.9")],
                                      "person_id string, icd10 string")
    rows = {(r.region, r.chapter): r for r in condition_prevalence(condition, patient).collect()}
    north = rows[("north", "IX")]
    assert (north.persons_with_condition, north.population, north.prevalence, north.suppressed) == (12, 20, 0.6, False)
    assert rows[("north", "X")].persons_with_condition == 0 and not rows[("north", "X")].suppressed
    south = rows[("south", "X")]
    assert (south.persons_with_condition, south.prevalence, south.suppressed) == (None, None, True)


def test_lab_abnormal_share_counts_flagged_results_of_common_codes(spark):
    from transforms.marts import lab_abnormal_share

    rows = [(f"p{i}", "2345-7", "H" if i < 12 else "N", "2024-03") for i in range(30)] + \
           [(f"p{i}", "718-7", "N", "2024-05") for i in range(3)] + [("p0", "29463-7", None, "2024-01")]
    obs = spark.createDataFrame(rows, "person_id string, loinc string, interpretation string, effective_month string")
    out = {r.loinc: r for r in lab_abnormal_share(obs, top=2).collect()}
    assert set(out) == {"2345-7", "718-7"}  # body weight carries no flag
    glucose = out["2345-7"]
    assert (glucose.year, glucose.results, glucose.abnormal, glucose.persons, glucose.abnormal_share) == ("2024", 30, 12, 30, 0.4)
    assert out["718-7"].suppressed and out["718-7"].results is None


def test_readmissions_flagged_on_exact_dates_then_counted(spark):
    from transforms.marts import flag_readmissions, readmissions_by_region_year

    view = spark.createDataFrame([
        ("h1", "e1", "pk1", "IMP", "2024-01-01T08:00:00+01:00", "2024-01-05T10:00:00+01:00"),
        ("h2", "e2", "pk1", "IMP", "2024-02-01T08:00:00+01:00", "2024-02-03T10:00:00+01:00"),  # 27 days later, other hospital
        ("h1", "e3", "pk1", "AMB", "2024-02-02T08:00:00+01:00", "2024-02-02T09:00:00+01:00"),
        ("h1", "e4", "pk2", "IMP", "2024-01-01T08:00:00+01:00", "2024-01-02T10:00:00+01:00"),
        ("h1", "e5", "pk2", "IMP", "2024-03-01T08:00:00+01:00", None),
    ], "hospital string, id string, person_key string, class string, start string, `end` string")
    flags = {r.id: r.readmitted_30d for r in flag_readmissions(view).collect()}
    assert flags == {"e1": True, "e2": False, "e3": None, "e4": False, "e5": None}
    encounter = spark.createDataFrame([(f"p{i}", "h1", "2024-01", i < 11) for i in range(15)] + [("q", "h1", "2024-02", True)],
                                      "person_id string, hospital string, end_month string, readmitted_30d boolean")
    patient = spark.createDataFrame([(f"p{i}", "h1", "north") for i in range(15)] + [("q", "h1", "south")],
                                    "person_id string, hospital string, region string")
    out = {r.region: r for r in readmissions_by_region_year(encounter, patient).collect()}
    assert (out["north"].stays, out["north"].readmissions, out["north"].readmission_rate) == (15, 11, 0.7333)
    assert out["south"].suppressed and out["south"].stays is None


def test_encounters_by_quarter_and_class(spark):
    from transforms.marts import encounters_by_region_quarter_class

    patient = spark.createDataFrame([(f"p{i}", "h1", "north") for i in range(12)], "person_id string, hospital string, region string")
    encounter = spark.createDataFrame([(f"p{i}", "h1", "AMB", f"2024-0{1 + i % 3}") for i in range(12)],
                                      "person_id string, hospital string, class string, start_month string")
    rows = [r.asDict() for r in encounters_by_region_quarter_class(encounter, patient).collect()]
    assert rows == [{"region": "north", "quarter": "2024-Q1", "class": "AMB", "encounters": 12, "persons": 12, "suppressed": False}]
