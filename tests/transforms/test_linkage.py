from transforms.linkage import person_keys


def test_national_id_links_across_hospitals_and_missing_one_does_not(spark):
    patients = spark.createDataFrame(
        [("a1", "h1", "123"), ("b7", "h2", " 123 "), ("c3", "h2", None), ("d4", "h1", "")],
        "id string, hospital string, national_id string",
    )
    keys = {r.patient_id: r for r in person_keys(patients).collect()}
    assert keys["a1"].person_key == keys["b7"].person_key
    assert keys["a1"].rule == "national_id"
    assert keys["c3"].person_key not in (keys["a1"].person_key, keys["d4"].person_key)
    assert (keys["c3"].rule, keys["d4"].rule) == ("hospital_patient", "hospital_patient")
    assert all(len(r.person_key) == 32 for r in keys.values())
