"""ViewDefinition compilation and evaluation: validation messages, row shapes, the public helpers."""

from __future__ import annotations

import gzip
import json

import pytest

from transforms.sqlonfhir import (
    ResourceFileError, ViewError, compile_view, load_resources, rows_to_csv, run_view,
)

PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "gender": "female",
     "name": [{"family": "A", "given": ["a1", "a2"]}, {"family": "B"}],
     "telecom": [{"system": "phone", "value": "1"}]},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Observation", "id": "o1"},
]


def _view(*select, **extra) -> dict:
    return {"resource": "Patient", "select": list(select), **extra}


def _col(name, path, **extra) -> dict:
    return {"name": name, "path": path, **extra}


def test_columns_and_rows():
    view = compile_view(_view(
        {"column": [_col("id", "getResourceKey()", type="id")]},
        {"forEachOrNull": "name", "column": [_col("family", "family", type="string"),
                                              _col("given", "given", type="string", collection=True)]},
    ))
    assert view.resource == "Patient"
    assert view.columns == [("id", "id", False), ("family", "string", False), ("given", "string", True)]
    assert list(view.evaluate_many(PATIENTS)) == [
        {"id": "p1", "family": "A", "given": ["a1", "a2"]},
        {"id": "p1", "family": "B", "given": []},
        {"id": "p2", "family": None, "given": None},
    ]
    assert view.evaluate(PATIENTS[2]) == []


def test_repeat_and_row_index():
    qr = {"resourceType": "QuestionnaireResponse", "id": "q",
          "item": [{"linkId": "1", "item": [{"linkId": "1.1"}]}, {"linkId": "2"}]}
    view = compile_view({"resource": "QuestionnaireResponse", "select": [
        {"repeat": ["item"], "column": [_col("link", "linkId"), _col("i", "%rowIndex")]}]})
    assert view.evaluate(qr) == [{"link": "1", "i": 0}, {"link": "1.1", "i": 1}, {"link": "2", "i": 2}]


def test_where_and_constants():
    view = compile_view(_view({"column": [_col("id", "id")]}, where=[{"path": "gender = %g"}],
                              constant=[{"name": "g", "valueCode": "female"}]))
    assert list(view.evaluate_many(PATIENTS)) == [{"id": "p1"}]


def test_run_view_and_csv():
    view = _view({"column": [_col("id", "id"), _col("phone", "telecom.value"),
                             _col("given", "name.given", collection=True), _col("has_name", "name.exists()")]})
    rows = run_view(view, PATIENTS)
    assert rows_to_csv(compile_view(view).columns, rows) == (
        'id,phone,given,has_name\np1,1,"[""a1"",""a2""]",true\np2,,[],false\n')


@pytest.mark.parametrize(("view", "message"), [
    ({}, "'resource' is required: the FHIR resource type the view reads, e.g. \"Patient\""),
    ([], "a ViewDefinition must be a JSON object, found a list"),
    ({"resource": "patient", "select": []},
     "resource: expected a FHIR resource type name such as \"Patient\", found 'patient'"),
    ({"resource": "Patient"}, "'select' is required: a non-empty list of selection structures"),
    (_view({"column": [_col("id", "id")]}, {"column": [{"name": "x"}]}),
     "select[1].column[0]: 'path' is required"),
    (_view({"column": [{"path": "id"}]}), "select[0].column[0]: 'name' is required"),
    (_view({"column": [_col("id", "id"), _col("id", "gender")]}),
     "select[0].column[1]: column name 'id' is already used by select[0].column[0]; "
     "column names must be unique across the view"),
    (_view({"column": [_col("id", "id")]}, {"forEach": "name", "column": [_col("id", "family")]}),
     "select[1].column[0]: column name 'id' is already used by select[0].column[0]; "
     "column names must be unique across the view"),
    (_view({"colum": []}), "select[0]: unknown key 'colum' (did you mean 'column'?); allowed: column, "
                           "description, extension, forEach, forEachOrNull, id, repeat, select, unionAll"),
    (_view({"column": [_col("1d", "id")]}),
     "select[0].column[0]: column name '1d' must match ^[A-Za-z][A-Za-z0-9_]*$ "
     "(letters, digits, underscores; starting with a letter)"),
    (_view({"column": [_col("d", "id", type="datetime")]}),
     "select[0].column[0]: unknown FHIR type 'datetime' (did you mean 'dateTime'?)"),
    (_view({"column": [_col("d", "id", collection="yes")]}),
     "select[0].column[0]: 'collection' must be true or false, found 'yes'"),
    (_view({"forEach": "name", "forEachOrNull": "name", "column": [_col("d", "id")]}),
     "select[0]: use only one of forEach, forEachOrNull and repeat, found forEach, forEachOrNull"),
    (_view({"forEach": 1, "column": [_col("d", "id")]}),
     "select[0].forEach: expected a FHIRPath expression as a string, found a number"),
    (_view({"forEach": "name"}), "select[0]: a selection needs at least one of 'column', 'select' or 'unionAll'"),
    (_view({"column": [_col("d", "name.foo()")]}),
     "select[0].column[0].path: unknown function foo() (did you mean floor()?) in 'name.foo()'"),
    (_view({"column": [_col("d", "")]}), "select[0].column[0].path: the FHIRPath expression is empty"),
    (_view({"unionAll": [{"column": [_col("a", "id")]}, {"column": [_col("b", "id")]}]}),
     "select[0].unionAll[1]: unionAll branches must have the same columns in the same order; "
     "unionAll[0] has ['a'], this branch has ['b']"),
    (_view({"unionAll": [{"column": [_col("a", "id", type="id")]}, {"column": [_col("a", "id", type="string")]}]}),
     "select[0].unionAll[1]: column 'a' is string here but id in unionAll[0]"),
    (_view({"column": [_col("d", "id")]}, constant=[{"name": "c"}]),
     "constant[0] (c): exactly one value[x] is required (e.g. valueString, valueInteger), found none"),
    (_view({"column": [_col("d", "name.where(use = %other)")]}, constant=[{"name": "c", "valueString": "x"}]),
     "select[0].column[0].path: undefined constant %other (constants defined by the view: c) "
     "in 'name.where(use = %other)'"),
    (_view({"column": [_col("d", "id")]}, where="active"),
     "where: expected a list of {\"path\": ...} objects, found a string"),
    (_view({"column": [_col("d", "id")]}, where=[{}]), "where[0]: 'path' is required"),
])
def test_invalid_views(view, message):
    with pytest.raises(ViewError) as err:
        compile_view(view)
    assert str(err.value) == message


@pytest.mark.parametrize(("view", "message"), [
    (_view({"column": [_col("d", "name.given")]}),
     "select[0].column[0]: path 'name.given' gave 2 values but column 'd' is not a collection; "
     "set \"collection\": true or narrow the path (e.g. with first())"),
    (_view({"column": [_col("d", "id")]}, where=[{"path": "name.family.first()"}]),
     "where[0]: path 'name.family.first()' must give a boolean, found a string"),
    (_view({"column": [_col("d", "name.family < 'x'")]}),
     "select[0].column[0]: evaluating \"name.family < 'x'\": operator '<' expects a single item, found 2"),
])
def test_evaluation_errors(view, message):
    compiled = compile_view(view)
    with pytest.raises(ViewError) as err:
        compiled.evaluate(PATIENTS[0])
    assert str(err.value) == message


def test_compile_does_not_mutate_the_view():
    view = _view({"column": [_col("id", "id")]})
    before = json.dumps(view, sort_keys=True)
    compile_view(view).evaluate(PATIENTS[0])
    assert json.dumps(view, sort_keys=True) == before


# -- load_resources --------------------------------------------------------------------------------
BUNDLE = {
    "resourceType": "Bundle", "type": "transaction",
    "entry": [
        {"fullUrl": "urn:uuid:aaa", "resource": {"resourceType": "Patient", "id": "aaa"}},
        {"fullUrl": "urn:uuid:bbb", "resource": {"resourceType": "Encounter", "id": "bbb",
                                                 "subject": {"reference": "urn:uuid:aaa"}}},
    ],
}


def test_load_bundle_rewrites_uuid_references(tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(BUNDLE))
    patient, encounter = load_resources(path)
    assert patient["id"] == "aaa"
    assert encounter["subject"] == {"reference": "Patient/aaa"}


def test_load_ndjson_folder_and_single(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Patient.ndjson").write_text(
        "\n".join(json.dumps(p) for p in PATIENTS[:2]) + "\n\n")
    with gzip.open(tmp_path / "sub" / "Observation.ndjson.gz", "wt") as fh:
        fh.write(json.dumps(PATIENTS[2]) + "\n")
    (tmp_path / "one.json").write_text(json.dumps({"resourceType": "Condition", "id": "c1"}))
    (tmp_path / "notes.txt").write_text("ignored")
    ids = [r["id"] for r in load_resources(tmp_path)]
    assert ids == ["c1", "o1", "p1", "p2"]
    assert [r["id"] for r in load_resources(tmp_path / "one.json")] == ["c1"]


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient"}\n{oops\n')
    with pytest.raises(ResourceFileError, match=r"bad.ndjson:2: not valid JSON"):
        list(load_resources(bad))
    not_fhir = tmp_path / "x.json"
    not_fhir.write_text('{"a": 1}')
    with pytest.raises(ResourceFileError, match="expected a FHIR resource"):
        list(load_resources(not_fhir))
    with pytest.raises(FileNotFoundError):
        list(load_resources(tmp_path / "missing"))


def test_compiled_view_pickles():
    import pickle

    view = compile_view(_view({"forEach": "name", "column": [_col("family", "family")]}))
    clone = pickle.loads(pickle.dumps(view))
    assert clone.columns == view.columns
    assert clone.evaluate(PATIENTS[0]) == [{"family": "A"}, {"family": "B"}]
