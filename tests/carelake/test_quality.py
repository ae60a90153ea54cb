"""The quality runner on small silver DataFrames: verdicts, the gate, Data Docs, suite loading, no PHI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carelake.errors import ConfigError, QualityGateError
from carelake.quality import (QualityReport, build_data_docs, load_report, load_suite, purge_results, suites_for,
                              validate_tables)
from transforms.ids import record_id, resource_id

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "expectations"
SILVER = ("silver.patient", "silver.encounter", "silver.observation", "silver.condition")
SCHEMA = "id string, hospital string, feed string, record_id string, patient_id string, person_key string, resource string"
# A value that stands for PHI: it must never reach a report, a GE store or Data Docs.
PHI = "Zyxwvut-Secret-Surname"


# The least each resource needs to pass the quality-view checks (status, codes, dates, ...).
VALID = {
    "Patient": {"gender": "female", "birthDate": "1980-02-03", "identifier": [{"value": "id-1"}]},
    "Encounter": {"status": "finished", "period": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00+00:00"}},
    "Observation": {"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                    "effectiveDateTime": "2024-01-01", "valueQuantity": {"value": 13.1, "unit": "g/dL"}},
    "Condition": {"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "R51"}]}, "onsetDateTime": "2024-01-01"},
}


def silver_rows(resource_type: str, n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        patient = resource_id("h1", "Patient", f"mrn{i}")
        rid = patient if resource_type == "Patient" else resource_id("h1", resource_type, f"local{i}")
        resource = {"resourceType": resource_type, "id": rid, "name": [{"family": PHI}], **VALID.get(resource_type, {})}
        rows.append({
            "id": rid,
            "hospital": "h1",
            "feed": ("hl7v2", "csv", "fhir")[i % 3],
            "record_id": record_id("h1", "csv", f"payload {resource_type} {i}"),
            "patient_id": patient,
            "person_key": f"pk{i}",
            "resource": json.dumps(resource),
        })
    return rows


def frame(spark, rows: list[dict]):
    return spark.createDataFrame([tuple(r.values()) for r in rows], SCHEMA)


def run(spark, tmp_path: Path, tables: dict[str, list[dict]], run_id: str = "run-1", docs: list | None = None) -> QualityReport:
    """Validate silver rows the way the validate stage does: through their quality views."""
    import datetime as dt

    from carelake.validate import quality_view

    frames = {name: frame(spark, rows) for name, rows in tables.items()}
    targets = {"silver.patient": frame(spark, silver_rows("Patient")), **frames}
    return validate_tables(
        {name: quality_view(name, df, targets=targets, as_of=dt.date(2026, 1, 1)) for name, df in frames.items()},
        suites_dir=SUITES,
        reports_dir=tmp_path / "reports",
        run_id=run_id,
        docs=docs,
    )


def test_every_silver_suite_loads_and_every_expectation_has_a_severity():
    suites = suites_for(SILVER, SUITES)
    assert set(suites) == set(SILVER)
    for suite in suites.values():
        assert suite.expectations
        assert {e.meta["severity"] for e in suite.expectations} <= {"critical", "warning"}


def test_clean_tables_pass(spark, tmp_path):
    report = run(spark, tmp_path, {"silver.patient": silver_rows("Patient"), "silver.observation": silver_rows("Observation")})
    assert report.verdict == "pass", [r.describe() for r in report.results if not r.success]
    assert report.tables == ["silver.patient", "silver.observation"]
    report.raise_if_critical()
    written = json.loads((tmp_path / "reports/validation/run-1/silver.patient.json").read_text())
    assert written["success"] is True and written["results"][0]["expectation"] == "expect_table_columns_to_match_set"


def test_null_id_fails_the_gate_with_a_message_naming_table_and_expectation(spark, tmp_path):
    rows = silver_rows("Encounter")
    rows[1]["id"] = None
    report = run(spark, tmp_path, {"silver.encounter": rows})
    assert report.verdict == "fail"
    assert [(f.table, f.expectation, f.column) for f in report.critical_failures] == [
        ("silver.encounter", "expect_column_values_to_not_be_null", "id"),
    ]
    with pytest.raises(QualityGateError) as caught:
        report.raise_if_critical()
    assert str(caught.value) == (
        "critical expectation failed: silver.encounter expect_column_values_to_not_be_null(id): 1 of 4 rows"
        " — this run's curated tables were not published"
    )


def test_failed_warning_gives_warn_without_raising(spark, tmp_path):
    rows = silver_rows("Condition")
    rows[2]["person_key"] = None
    report = run(spark, tmp_path, {"silver.condition": rows})
    assert report.verdict == "warn"
    report.raise_if_critical()
    (warning,) = report.warnings
    assert (warning.column, warning.unexpected_count, warning.element_count) == ("person_key", 1, 4)
    assert warning.sample_ids == (rows[2]["id"],)
    assert report.to_dict()["verdict"] == "warn"


def test_sample_ids_hold_ids_only_and_no_value_reaches_the_reports(spark, tmp_path):
    rows = silver_rows("Patient", n=8)
    for row in rows:  # every resource fails the shape check; its JSON holds the stand-in PHI
        row["resource"] = json.dumps({"resourceType": "Person", "id": row["id"], "name": PHI})
    report = run(spark, tmp_path, {"silver.patient": rows})
    (failure,) = report.critical_failures
    assert failure.expectation == "expect_column_values_to_be_in_set" and failure.column == "json_resource_type"
    assert failure.unexpected_count == 8
    assert len(failure.sample_ids) == 5
    assert set(failure.sample_ids) <= {r["id"] for r in rows}
    for path in (tmp_path / "reports").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".html", ".yml"}:
            assert PHI not in path.read_text(encoding="utf-8", errors="replace"), path


def test_data_docs_list_each_run_once_and_reruns_replace(spark, tmp_path):
    tables = {"silver.patient": silver_rows("Patient")}
    run(spark, tmp_path, tables, run_id="run-1")
    run(spark, tmp_path, tables, run_id="run-2")
    report = run(spark, tmp_path, tables, run_id="run-1")
    index = report.data_docs_index
    assert index == tmp_path / "reports/data_docs/index.html" and index.is_file()
    html = index.read_text()
    assert "run-1/" in html and "run-2/" in html
    pages = sorted(p.relative_to(index.parent).parts[3] for p in (index.parent / "validations").rglob("*.html"))
    assert pages == ["run-1", "run-2"]
    assert len(list((tmp_path / "reports/gx/uncommitted/validations").rglob("*.json"))) == 2
    again = load_report(tmp_path / "reports", "run-1")
    assert again.verdict == "pass" and len(again.results) == len(report.results)


def test_purged_results_leave_the_store_the_run_summaries_and_at_the_next_build_the_data_docs(spark, tmp_path):
    import datetime as dt

    reports = tmp_path / "reports"
    run(spark, tmp_path, {"silver.patient": silver_rows("Patient")}, run_id="run-1")
    cutoff = dt.datetime.now(dt.timezone.utc)  # GE stamps each result with the time it was validated
    tables = {"silver.patient": silver_rows("Patient"), "silver.encounter": silver_rows("Encounter")}
    run(spark, tmp_path, tables, run_id="run-2")
    stored = reports / "gx/uncommitted/validations"
    assert len(list(stored.rglob("*.json"))) == 3

    assert purge_results(reports, before=cutoff) == {"results": 1, "runs": 1}
    assert sorted(p.parts[-3] for p in stored.rglob("*.json")) == ["run-2", "run-2"]
    assert not (reports / "validation/run-1").exists() and (reports / "validation/run-2").is_dir()
    with pytest.raises(ConfigError, match="no validation results for run 'run-1'"):
        load_report(reports, "run-1")
    assert load_report(reports, "run-2").verdict == "pass"
    assert purge_results(reports, before=cutoff) == {"results": 0, "runs": 0}  # a rerun purges nothing more
    # a time without its zone (as Airflow's may come) is UTC, not an error
    assert purge_results(reports, before=cutoff.replace(tzinfo=None)) == {"results": 0, "runs": 0}

    run(spark, tmp_path, tables, run_id="run-3")  # the next run's Data Docs build drops run-1's page
    index = reports / "data_docs/index.html"
    assert "run-1/" not in index.read_text() and "run-2/" in index.read_text()
    pages = sorted({p.relative_to(index.parent / "validations").parts[2] for p in (index.parent / "validations").rglob("*.html")})
    assert pages == ["run-2", "run-3"]


def test_purging_a_reports_folder_that_never_held_a_validation_makes_nothing(tmp_path):
    import datetime as dt

    assert purge_results(tmp_path / "reports", before=dt.datetime.now(dt.timezone.utc)) == {"results": 0, "runs": 0}
    assert not (tmp_path / "reports").exists()


def test_the_ge_project_keeps_no_config_variables_file_that_ge_would_parse_at_every_access(spark, tmp_path):
    import yaml

    run(spark, tmp_path, {"silver.patient": silver_rows("Patient")})
    project = yaml.safe_load((tmp_path / "reports/gx/great_expectations.yml").read_text())
    assert project.get("config_variables_file_path") is None  # GE scaffolds it; carelake keeps no variables there
    # a project made before this setting existed loses the file path at its next run
    path = tmp_path / "reports/gx/great_expectations.yml"
    path.write_text(path.read_text().replace("config_variables_file_path:", "config_variables_file_path: uncommitted/config_variables.yml"))
    assert run(spark, tmp_path, {"silver.patient": silver_rows("Patient")}, run_id="run-2").verdict == "pass"
    assert yaml.safe_load(path.read_text()).get("config_variables_file_path") is None


def test_deferred_data_docs_are_built_once_for_several_validations(spark, tmp_path):
    docs: list = []
    run(spark, tmp_path, {"silver.patient": silver_rows("Patient")}, run_id="run-1", docs=docs)
    run(spark, tmp_path, {"silver.encounter": silver_rows("Encounter")}, run_id="run-1", docs=docs)
    index = tmp_path / "reports/data_docs/index.html"
    assert docs and not index.exists()  # nothing rendered yet: both calls left their pages in `docs`
    build_data_docs(tmp_path / "reports", docs)
    pages = sorted((index.parent / "validations").rglob("*.html"))
    assert sorted(p.relative_to(index.parent / "validations").parts[1] for p in pages) == ["encounter", "patient"]
    assert "run-1/" in index.read_text()


def write_suite(tmp_path: Path, name: str, expectations: list[dict]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}))
    return path


def test_expectation_without_severity_fails_to_load_naming_file_and_index(tmp_path):
    path = write_suite(tmp_path, "silver.patient", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}, "meta": {"severity": "critical"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "hospital"}, "meta": {"notes": "no severity"}},
    ])
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    assert str(caught.value) == (
        f"{path}: expectation #1 (expect_column_values_to_not_be_null): meta.severity is missing;"
        ' set it to "critical" or "warning"'
    )


def test_unknown_expectation_type_fails_to_load_naming_file_and_index(tmp_path):
    path = write_suite(tmp_path, "silver.patient", [
        {"type": "expect_column_values_to_be_shiny", "kwargs": {"column": "id"}, "meta": {"severity": "warning"}},
    ])
    with pytest.raises(ConfigError, match=r"silver\.patient\.json: expectation #0 \(expect_column_values_to_be_shiny\): "):
        load_suite(path)


def test_suite_name_must_match_its_file(tmp_path):
    path = write_suite(tmp_path, "silver.patient", [])
    path.write_text(json.dumps({"name": "silver.encounter", "expectations": []}))
    with pytest.raises(ConfigError, match="must match the file name, 'silver.patient'"):
        load_suite(path)


def test_a_table_without_a_suite_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no expectation suite for silver\.no_such_table: expected .*silver\.no_such_table\.json"):
        suites_for(["silver.patient", "silver.no_such_table"], SUITES)


def test_an_unchanged_suite_is_reused_from_the_store_and_an_edited_one_takes_effect(spark, tmp_path):
    suites = tmp_path / "suites"
    suites.mkdir()
    not_null = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}, "meta": {"severity": "critical"}}
    write_suite(suites, "gold.patient", [not_null])
    df = spark.createDataFrame([("p1", None), ("p2", PHI)], "id string, national_id string")
    stored = tmp_path / "reports/gx/expectations/gold/patient.json"

    def validate(run_id: str) -> QualityReport:
        return validate_tables({"gold.patient": df}, suites_dir=suites, reports_dir=tmp_path / "reports", run_id=run_id)

    assert validate("r1").verdict == "pass"
    first = json.loads(stored.read_text())
    assert validate("r2").verdict == "pass"
    assert json.loads(stored.read_text()) == first  # not written again: the expectation keeps its id

    is_null = {"type": "expect_column_values_to_be_null", "kwargs": {"column": "national_id"}, "meta": {"severity": "critical"}}
    write_suite(suites, "gold.patient", [not_null, is_null])
    report = validate("r3")
    assert [(r.expectation, r.success) for r in report.results] == [
        ("expect_column_values_to_not_be_null", True), ("expect_column_values_to_be_null", False)]
    assert report.verdict == "fail"
    # a change of meta alone (the severity) counts as an edit too
    write_suite(suites, "gold.patient", [not_null, {**is_null, "meta": {"severity": "warning"}}])
    assert validate("r4").verdict == "warn"
    assert [e["meta"]["severity"] for e in json.loads(stored.read_text())["expectations"]] == ["critical", "warning"]


def test_without_the_id_column_failures_are_counted_but_carry_no_sample_ids(spark, tmp_path):
    write_suite(tmp_path, "gold.patient", [
        {"type": "expect_column_values_to_be_null", "kwargs": {"column": "national_id"}, "meta": {"severity": "critical"}},
    ])
    df = spark.createDataFrame([("p1", None), ("p2", PHI)], "pseudonym string, national_id string")
    report = validate_tables({"gold.patient": df}, suites_dir=tmp_path, reports_dir=tmp_path / "reports", run_id="r")
    (failure,) = report.critical_failures
    assert (failure.unexpected_count, failure.element_count, failure.sample_ids) == (1, 2, ())
    with pytest.raises(QualityGateError, match=r"^critical expectation failed: gold\.patient expect_column_values_to_be_null\(national_id\): 1 of 2 rows — "):
        report.raise_if_critical()


def test_every_expectation_keeps_its_counts_and_only_failures_carry_sample_ids(spark, tmp_path):
    # The suite runs without GE's failing-row queries; ids are fetched afterwards for failures only.
    rows = silver_rows("Condition")
    rows[2]["person_key"] = None
    report = run(spark, tmp_path, {"silver.condition": rows})
    row_level = [r for r in report.results if r.unexpected_count is not None]
    assert len(row_level) > 10 and all(r.element_count == 4 for r in row_level)
    assert [(r.column, r.sample_ids) for r in report.results if r.sample_ids] == [("person_key", (rows[2]["id"],))]
    assert all(r.unexpected_count == 0 for r in row_level if r.success)


def test_uniqueness_counts_and_ids_are_those_of_ge_own_check(spark, tmp_path):
    # expect_column_values_to_be_unique runs as a query (GE's own sorts the whole table in a window);
    # the outcome keeps the suite's type and column, GE's counts, and the ids of the repeated rows.
    import great_expectations as gx

    suite = tmp_path / "suites"
    suite.mkdir()
    (suite / "gold.t.json").write_text(json.dumps({"name": "gold.t", "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "code"}, "meta": {"severity": "critical"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "t_id"}, "meta": {"severity": "warning"}}]}))
    df = spark.createDataFrame([("a", "x"), ("b", "y"), ("c", "x"), ("d", None), ("e", None), ("f", "z"), ("g", "x")],
                               "t_id string, code string")
    report = validate_tables({"gold.t": df}, suites_dir=suite, reports_dir=tmp_path / "reports", run_id="r1", id_column="t_id")
    code, ids = report.results
    assert (code.expectation, code.column, code.success, code.unexpected_count, code.element_count) == (
        "expect_column_values_to_be_unique", "code", False, 3, 7)  # the three rows of "x"; nulls repeat freely
    assert set(code.sample_ids) == {"a", "c", "g"}
    assert (ids.column, ids.success, ids.unexpected_count, ids.sample_ids) == ("t_id", True, 0, ())
    stored = "".join(p.read_text() for p in (tmp_path / "reports" / "gx").rglob("*.json"))
    assert "expect_column_values_to_be_unique" in stored and '"x"' not in stored  # no failing value in GE's stores
    batch = gx.get_context(mode="ephemeral").data_sources.add_spark("s").add_dataframe_asset("a") \
        .add_batch_definition_whole_dataframe("b").get_batch(batch_parameters={"dataframe": df})
    assert batch.validate(gx.expectations.ExpectColumnValuesToBeUnique(column="code")).result["unexpected_count"] == 3


def test_quality_view_handles_missing_fields_and_empty_lists(spark):
    import datetime as dt

    from carelake.validate import quality_view

    patients = silver_rows("Patient", n=3)
    patients[0]["resource"] = json.dumps({"resourceType": "Patient", "id": patients[0]["id"], "identifier": []})
    patients[1]["resource"] = json.dumps({"resourceType": "Patient", "id": "other", "identifier": [{"system": "s"}]})
    view = quality_view("silver.patient", frame(spark, patients), targets={}, as_of=dt.date(2026, 1, 1))
    got = {r["id"]: (r["json_resource_type"], r["json_id_matches"], r["has_identifier"], r["gender"], r["birth_date_plausible"])
           for r in view.collect()}
    assert got == {
        patients[0]["id"]: ("Patient", True, False, None, None),
        patients[1]["id"]: ("Patient", False, False, None, None),
        patients[2]["id"]: ("Patient", True, True, "female", True),
    }
    encounters = silver_rows("Encounter", n=2)
    encounters[0]["resource"] = json.dumps({"resourceType": "Encounter", "id": encounters[0]["id"], "status": "planned",
                                            "period": {"start": "2024-01-01T10:00:00Z"}})
    view = quality_view("silver.encounter", frame(spark, encounters), targets={}, as_of=dt.date(2026, 1, 1))
    got = {r["id"]: (r["status"], r["period_in_order"], r["date_plausible"], r["patient_resolves"]) for r in view.collect()}
    assert got == {encounters[0]["id"]: ("planned", None, True, False), encounters[1]["id"]: ("finished", True, True, False)}


def test_quality_view_resolves_references_and_leaves_the_resource_out(spark):
    import datetime as dt

    from carelake.validate import quality_view

    patients, encounters, observations = silver_rows("Patient", 2), silver_rows("Encounter", 1), silver_rows("Observation", 2)
    reports = silver_rows("DiagnosticReport", 4)
    base = {"resourceType": "DiagnosticReport", "status": "final", "encounter": {"reference": f"Encounter/{encounters[0]['id']}"}}
    results = {
        0: [{"reference": f"Observation/{o['id']}"} for o in observations],  # all resolve
        1: [{"reference": f"Observation/{observations[0]['id']}"}, {"reference": "Observation/gone"}],  # one dangles
        2: [],  # no results: nothing dangles
    }
    for i, row in enumerate(reports):
        resource = {**base, "id": row["id"], "result": results.get(i, [])}
        if i == 1:
            resource["encounter"] = {"reference": "Encounter/gone"}
        row["resource"] = json.dumps(resource)
    reports[3]["resource"] = None  # no resource: the results check does not apply
    targets = {name: frame(spark, rows) for name, rows in
               [("silver.patient", patients), ("silver.encounter", encounters), ("silver.observation", observations)]}
    view = quality_view("silver.diagnostic_report", frame(spark, reports), targets=targets, as_of=dt.date(2026, 1, 1))
    assert "resource" not in view.columns and not any(c.startswith("_") for c in view.columns)
    got = {r["id"]: (r["patient_resolves"], r["encounter_resolves"], r["results_resolve"]) for r in view.collect()}
    assert got == {
        reports[0]["id"]: (True, True, True),
        reports[1]["id"]: (True, False, False),
        reports[2]["id"]: (False, True, True),  # silver_rows' third patient is not among the two Patients
        reports[3]["id"]: (False, None, None),
    }
    # without the Observation table every result dangles; without the Encounter table no encounter resolves
    view = quality_view("silver.diagnostic_report", frame(spark, reports[:1]), targets={}, as_of=dt.date(2026, 1, 1))
    assert [(r["patient_resolves"], r["encounter_resolves"], r["results_resolve"]) for r in view.collect()] == [(False, False, False)]


@pytest.mark.parametrize("staged", [False, True], ids=["from-json", "staged"])
def test_quality_view_flags_units_other_than_the_usual_one_per_lab(spark, tmp_path, staged):
    import datetime as dt

    from carelake.validate import quality_view

    # (hospital, codings, unit): the lab is the LOINC code, else hospital and local code
    cases = [
        ("h1", [("http://loinc.org", "2093-3")], "mg/dL"),
        ("h2", [("http://loinc.org", "2093-3"), ("urn:carelake:h2:lab", "CHOL")], "mg/dL"),
        ("h1", [("http://loinc.org", "2093-3")], "mmol/L"),  # 2 against 1: not the usual unit
        ("h1", [("http://loinc.org", "2093-3")], None),  # no unit: the check does not apply
        ("h1", [("urn:carelake:h1:lab", "CRP")], "g/dL"),
        ("h1", [("urn:carelake:h1:lab", "CRP")], "g/L"),  # a tie: the first unit by name wins ("L" < "d")
        ("h2", [("urn:carelake:h2:lab", "CRP")], "g/dL"),  # another hospital's CRP: a lab of its own
    ]
    rows = silver_rows("Observation", n=len(cases))
    for row, (hospital, codings, unit) in zip(rows, cases):
        resource = json.loads(row["resource"])
        resource["code"] = {"coding": [{"system": s, "code": c} for s, c in codings]}
        resource["valueQuantity"] = {"value": 1.0, **({"unit": unit} if unit else {})}
        row["hospital"], row["resource"] = hospital, json.dumps(resource)
    written = []

    def stage(view):
        written.append(view.columns)
        view.write.format("delta").save(str(tmp_path / "base"))
        return spark.read.format("delta").load(str(tmp_path / "base"))

    view = quality_view("silver.observation", frame(spark, rows), targets={}, as_of=dt.date(2026, 1, 1),
                        stage=stage if staged else None)
    got = {r["id"]: r["unit_consistent"] for r in view.collect()}
    assert got == {row["id"]: want for row, want in zip(rows, [True, True, False, None, False, True, True])}
    assert not any(c.startswith("_") for c in view.columns)
    # staged: the JSON's columns written once, without the resource
    assert written == ([] if not staged else [written[0]]) and (not staged or "resource" not in written[0])


def test_import_in_background_loads_great_expectations_in_a_daemon_thread():
    # a fresh interpreter: this one imported GE long ago
    import subprocess
    import sys

    script = ("import sys; from carelake.quality import import_in_background; "
              "assert 'great_expectations' not in sys.modules; t = import_in_background(); "
              "assert t.daemon; t.join(120); print('great_expectations' in sys.modules, t.is_alive())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]
