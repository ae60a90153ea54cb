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
