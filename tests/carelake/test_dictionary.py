import dataclasses

import pytest

from carelake.config import PROJECT_ROOT, load_config
from carelake.dictionary import DICTIONARY_PATH, check_grades, curated_columns, load_grades, render_markdown
from carelake.errors import PrivacyGateError


def test_committed_dictionary_is_up_to_date_with_conf():
    expected = render_markdown(load_config(PROJECT_ROOT / "conf"))
    assert DICTIONARY_PATH.read_text(encoding="utf-8") == expected, \
        "docs/data-dictionary.md is stale: run `python -m carelake.dictionary --write`"


def test_every_curated_column_is_documented_and_graded():
    config = load_config(PROJECT_ROOT / "conf")
    docs = curated_columns(config)
    tables = {d.table for d in docs}
    assert {f"gold.{t}" for t in config.deid["tables"]} <= tables
    assert any(t.startswith("marts.") for t in tables)
    for d in docs:
        assert d.description and d.treatment and d.category, (d.table, d.column)
        assert 1 <= d.grade <= 3, (d.table, d.column)
    check_grades(config, layer="gold")
    check_grades(config, layer="marts")


def test_a_policy_that_keeps_a_direct_identifier_fails_the_grade_check():
    config = load_config(PROJECT_ROOT / "conf")
    deid = dict(config.deid)
    patient = dict(deid["tables"]["patient"])
    patient["columns"] = [*patient["columns"], {"column": "mrn", "action": "keep"}]
    deid["tables"] = {**deid["tables"], "patient": patient}
    with pytest.raises(PrivacyGateError, match=r"gold.patient.mrn \(grade 4, narrowly accessible\) above the gold ceiling of grade 3"):
        check_grades(dataclasses.replace(config, deid=deid), layer="gold")


def test_staged_columns_without_a_grade_are_refused():
    config = load_config(PROJECT_ROOT / "conf")
    with pytest.raises(PrivacyGateError, match="gold.patient.shoe_size carry no grade"):
        check_grades(config, layer="gold", columns={"gold.patient": ["person_id", "shoe_size"]})


def test_default_scale_is_the_five_grades_of_gb_t_39725():
    grades = load_grades(load_config(PROJECT_ROOT / "conf"))
    assert [g["grade"] for g in grades["scale"]] == [1, 2, 3, 4, 5]


def test_phi_tables_of_a_demo_run_are_all_graded(demo_run):
    from deltalake import DeltaTable

    from carelake.lake import Lake

    workdir, _ = demo_run
    config = load_config(workdir / "conf")
    grades = load_grades(config)["phi_tables"]
    for table in Lake.from_config(config, workdir).tables(zones=("phi",)):
        key = "silver.<resource>" if table.name.startswith("silver.") else table.name
        assert key in grades, f"{table.name} has no entry in conf/grades.yaml phi_tables"
        columns = DeltaTable(table.path).schema().to_arrow().names
        assert set(columns) <= set(grades[key]), f"{table.name}: ungraded columns {set(columns) - set(grades[key])}"
