"""The fast path (fhirpath/_fast.py) must give what the general compiled expression gives, or defer to it.

For a compiled path, ``fast(node)`` either raises Fallback (the general expression then decides) or returns
exactly the column value of ``fn([node], env)``: None when empty, the only item when one, and never a
value where the general expression has several items or raises. Compared strictly: 5 is not 5.0, True is
not 1. Checked on the conformance suite's expressions and resources (every node of them, as forEach
visits nested nodes), on hand-made awkward data, and on random FHIR-shaped JSON.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.sqlonfhir import FhirPathError, ViewError, compile_view
from transforms.sqlonfhir.fhirpath import Env, compile_path
from transforms.sqlonfhir.fhirpath import _fast
from transforms.sqlonfhir.fhirpath._fast import Fallback

ROOT = Path(__file__).resolve().parents[3]
VIEWS_DIR = ROOT / "conf" / "views"
SUITE = ROOT.parent / "shared" / "extdata" / "sql-on-fhir-v2-tests"
GOLD = ["patient", "encounter", "observation", "condition"]


def _same(a, b) -> bool:
    """Equal and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _general(compiled, node, resource):
    """The column value of the general expression on [node], or "several", or "error"."""
    try:
        values = compiled.fn([node], Env(resource, 0))
    except FhirPathError:
        return "error"
    if len(values) > 1:
        return "several"
    return values[0] if values else None


def _check(compiled, node, resource) -> bool:
    """Assert fast and general agree on `node`; True when the fast path decided (no Fallback)."""
    try:
        got = compiled.fast(node)
    except Fallback:
        return False
    expected = _general(compiled, node, resource)
    assert expected not in ("error", "several"), (compiled.expression, node, got, expected)
    assert _same(got, expected), (compiled.expression, node, got, expected)
    return True


def _nodes(value):
    """`value` and everything inside it (forEach focuses on nested elements)."""
    yield value
    if type(value) is dict:
        for v in value.values():
            yield from _nodes(v)
    elif type(value) is list:
        for v in value:
            yield from _nodes(v)


def _view_paths(view: dict):
    """Every FHIRPath of a ViewDefinition: columns, where, forEach / forEachOrNull / repeat."""
    for w in view.get("where") or []:
        if isinstance(w, dict) and isinstance(w.get("path"), str):
            yield w["path"]
    stack = list(view.get("select") or [])
    while stack:
        sel = stack.pop()
        if not isinstance(sel, dict):
            continue
        for col in sel.get("column") or []:
            if isinstance(col, dict) and isinstance(col.get("path"), str):
                yield col["path"]
        for key in ("forEach", "forEachOrNull"):
            if isinstance(sel.get(key), str):
                yield sel[key]
        for p in sel.get("repeat") or []:
            if isinstance(p, str):
                yield p
        stack.extend(sel.get("select") or [])
        stack.extend(sel.get("unionAll") or [])


def _constants(view: dict) -> dict:
    out = {}
    for const in view.get("constant") or []:
        values = [k for k in const if k.startswith("value")]
        if len(values) == 1:
            out[const["name"]] = const[values[0]]
    return out


def _compiled(expression: str, constants: dict | None = None):
    try:
        return compile_path(expression, constants)
    except FhirPathError:
        return None


def _gold_views() -> list[dict]:
    return [json.loads((VIEWS_DIR / f"{name}.json").read_text(encoding="utf-8")) for name in GOLD]


@functools.cache
def _gold_paths() -> list:
    return [compile_path(p, _constants(v)) for v in _gold_views() for p in _view_paths(v)]


# -- the gold views take the fast path ------------------------------------------------------------------
@pytest.mark.parametrize("name", GOLD)
def test_gold_views_are_fast_end_to_end(name):
    view = compile_view(json.loads((VIEWS_DIR / f"{name}.json").read_text(encoding="utf-8")))
    assert view._flat_fast is not None, "every column of a gold view has a fast path"
    assert all(fast is not None for *_, fast in view._wheres)


# -- the conformance suite ------------------------------------------------------------------------------
def _suite():
    if not SUITE.is_dir():
        pytest.skip(f"SQL-on-FHIR v2 conformance suite not found at {SUITE}")
    for file in sorted(SUITE.glob("*.json")):
        if file.name == "tests.schema.json":
            continue
        doc = json.loads(file.read_text(encoding="utf-8"))
        yield file.stem, doc


@pytest.mark.extdata
def test_conformance_suite_expressions_agree_on_every_node():
    fast_paths = decided = 0
    for _, doc in _suite():
        resources = doc["resources"]
        for test in doc["tests"]:
            view = test["view"] if isinstance(test.get("view"), dict) else {}
            constants = _constants(view)
            for expression in _view_paths(view):
                compiled = _compiled(expression, constants)
                if compiled is None or compiled.fast is None:
                    continue
                fast_paths += 1
                for resource in resources:
                    for node in _nodes(resource):
                        decided += _check(compiled, node, resource)
    # the comparison has teeth: many expressions, many decisions
    assert fast_paths > 150 and decided > 5000, (fast_paths, decided)


# -- hand-made awkward data for the gold views' expressions ----------------------------------------------
AWKWARD = [
    {},
    {"resourceType": "Observation"},
    {"resourceType": "Observation", "id": ""},
    {"resourceType": "Observation", "id": 5},
    {"resourceType": "", "id": "x"},
    {"resourceType": "Observation", "id": ["a", "b"]},
    {"subject": {"reference": "Patient/p1/_history/2"}, "encounter": {"reference": "Encounter/e1"}},
    {"subject": {"reference": "Group/g1"}, "encounter": {"reference": "http://x.org/Encounter/e1"}},
    {"subject": {"reference": "Patient/p1\n"}, "encounter": {"reference": "urn:uuid:1234"}},
    {"subject": [{"reference": "Patient/a"}, {"reference": "Patient/b"}]},
    {"subject": [{"reference": "Patient/a"}, {"reference": "Group/b"}]},
    {"subject": [None, {"reference": "Patient/a"}]},
    {"subject": {"reference": ["Patient/a"]}},
    {"subject": {"reference": None}},
    {"subject": "Patient/a"},
    {"subjectReference": {"reference": "Patient/a"}},
    {"subject": None, "subjectReference": None},
    {"code": {"coding": {"system": "http://loinc.org", "code": "1-8"}}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": ["1-8", "2-6"]}]}},
    {"code": {"coding": [{"system": "http://loinc.org"}, {"system": "http://loinc.org", "code": "2-6"}]}},
    {"code": {"coding": [{"system": ["http://loinc.org"], "code": "1-8"}]}},
    {"code": {"coding": [{"system": ["urn:carelake:a", "urn:carelake:b"], "code": "1-8"}]}},
    {"code": {"coding": [{"system": "urn:carelake:h1:lab", "code": "G"}, {"system": 5, "code": "x"}]}},
    {"code": {"coding": [{"system": "urn:carelake:h1:lab", "code": "G"}, "text"]}},
    {"code": {"coding": [{"systemUri": "http://loinc.org", "code": "1-8"}]}},
    {"code": {"coding": [{"system": None, "systemUri": None, "code": "1-8"}]}},
    {"code": [{"coding": [{"system": "http://loinc.org", "code": "1"}]},
              {"coding": [{"system": "http://loinc.org", "code": "2"}]}]},
    {"code": {"coding": [None, {"system": "http://loinc.org", "code": "2"}]}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": {"nested": 1}}]}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": [[1, 2]]}]}},
    {"valueQuantity": {"value": 5, "unit": "mg", "comparator": "<"}},
    {"valueQuantity": {"value": 5.0, "unit": ["mg", "g"]}},
    {"valueQuantity": {"value": True}},
    {"valueQuantity": [{"value": 1}, {"value": 2}]},
    {"valueQuantity": None, "value": {"value": 3}},
    {"value": {"value": 3, "unit": "mg"}},
    {"valueString": "negative"},
    {"valueQuantity": {"valueDecimal": 3}},
    {"valueQuantity": {"value": None, "valueInteger": None}},
    {"effectiveDateTime": "2024-01-01", "effectivePeriod": {"start": "2023-01-01"}},
    {"effectiveInstant": "2024-01-01T00:00:00Z"},
    {"effectivePeriod": {"start": "2023-01-01"}},
    {"effectivePeriod": [{"start": "2023-01-01"}, {"start": "2022-01-01"}]},
    {"effectivePeriod": {"start": ["2023-01-01", "2022-01-01"]}},
    {"effective": "2024-01-01"},
    {"effectiveDateTime": ["2024-01-01", "2024-01-02"]},
    {"effectiveDateTime": 20240101},
    {"status": "entered-in-error"},
    {"status": "final"},
    {"status": ["final"]},
    {"status": ["final", "entered-in-error"]},
    {"status": 1},
    {"status": None, "statusCode": "x"},
    {"verificationStatus": {"coding": [{"code": "entered-in-error"}]}},
    {"verificationStatus": {"coding": [{"code": "confirmed"}, {"code": ["entered-in-error", "x"]}]}},
    {"verificationStatus": {"coding": ["entered-in-error"]}},
    {"identifier": [{"system": "urn:carelake:h1:mrn", "value": "M1"}, {"system": "urn:carelake:national-id",
                                                                        "value": "N1"}]},
    {"identifier": [{"system": "urn:carelake:h1:mrn", "value": "M1"}, {"system": ["a", "b"], "value": "x"}]},
    {"identifier": [{"system": "urn:carelake:h1:mrn", "value": "M1"}, {"system": 7}]},
    {"identifier": [{"system": "urn:carelake:h1:mrn"}, {"system": "urn:carelake:h2:mrn", "value": "M2"}]},
    {"identifier": {"system": "urn:carelake:h1:mrn", "value": ["M1", "M2"]}},
    {"name": [{"use": "nickname", "given": ["Kiki"]}, {"family": "Curie", "given": ["Marie", "S"]}]},
    {"name": [{"use": "official", "family": "A"}, {"use": "official", "family": "B"}]},
    {"name": [{"use": ["official"], "family": "A"}, {"family": "B"}]},
    {"name": ["text", {"family": "B"}]},
    {"name": [{"use": "nickname"}]},
    {"name": [{"use": "official", "given": []}, {"family": "B", "given": ["x"]}]},
    {"name": [{"useCode": "official", "family": "A"}]},
    {"name": [{"use": 3, "family": "A"}]},
    {"name": [{"family": ["A", "B"]}]},
    {"address": [{"use": "old", "line": ["1 Old"]}, {"line": [None, "2 New"], "city": "X"}]},
    {"address": [{"use": "home", "line": "single line"}]},
    {"address": {"use": "home", "line": ["a", "b"], "city": ["c", "d"]}},
    {"telecom": [{"system": "email", "value": "e"}, {"system": "phone", "value": ["1", "2"]}]},
    {"telecom": [{"system": "phone"}, {"system": "phone", "value": "2"}]},
    {"deceasedBoolean": False},
    {"deceasedBoolean": "yes"},
    {"deceasedBoolean": [True, False]},
    {"deceasedDateTime": "2020-01-01"},
    {"deceasedDateTime": "2020-01-01", "deceasedBoolean": False},
    {"deceased": True},
    {"deceased": "2020-01-01"},
    {"class": {"code": "IMP"}, "period": {"start": "2024-01-01", "end": None}},
    {"class": [{"code": "IMP"}, {"code": "AMB"}], "period": [{"start": "a"}]},
    {"class": {"codeCoding": {"code": "IMP"}}, "period": "2024"},
    {"onsetDateTime": "2019", "onsetPeriod": {"start": "2018"}},
    {"onsetPeriod": {"start": "2018"}},
    {"onsetString": "childhood"},
    {"birthDate": ["1970", "1971"], "gender": None},
]


@pytest.mark.parametrize("extra", AWKWARD, ids=lambda r: json.dumps(r)[:60])
def test_gold_expressions_agree_on_awkward_data(extra):
    paths = _gold_paths()
    for resource_type in ("Patient", "Observation", "Encounter", "Condition"):
        resource = {"resourceType": resource_type, "id": "r1", **extra}
        for compiled in paths:
            for node in _nodes(resource):
                _check(compiled, node, resource)


# -- random FHIR-shaped JSON ------------------------------------------------------------------------------
_STRINGS = st.sampled_from([
    "official", "nickname", "home", "old", "phone", "email", "final", "entered-in-error", "confirmed",
    "http://loinc.org", "http://hl7.org/fhir/sid/icd-10", "urn:carelake:national-id", "urn:carelake:h1:mrn",
    "urn:carelake:h1:lab", ":mrn", "Patient/p1", "Encounter/e1", "Patient/p2/_history/1", "Group/g", "",
    "2024-01-01", "2024-01-01T10:00:00+01:00", "10:00", "x",
])
_KEYS = st.sampled_from([
    "id", "resourceType", "code", "coding", "system", "value", "valueQuantity", "valueString", "valueBoolean",
    "valueInteger", "comparator", "unit", "use", "useCode", "name", "family", "given", "identifier", "telecom",
    "address", "line", "city", "postalCode", "subject", "encounter", "reference", "status", "effective",
    "effectiveDateTime", "effectiveInstant", "effectivePeriod", "start", "end", "onsetDateTime", "onsetPeriod",
    "deceased", "deceasedBoolean", "deceasedDateTime", "interpretation", "verificationStatus", "period", "class",
    "birthDate", "gender", "systemUri", "item", "v",
])
_LEAVES = st.one_of(_STRINGS, st.integers(-1, 3), st.floats(-1, 2, allow_nan=False), st.booleans(), st.none())
_JSON = st.recursive(_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_KEYS, inner, max_size=4)),
                     max_leaves=14)

EXTRA_EXPRESSIONS = [
    "name.given", "name.given.first()", "item.where(v = 'official').v", "item.where(v != 'x').v.first()",
    "item.where(v.exists())", "item.where(v).v", "item.where(v.empty() and v.exists()).first()",
    "item.v.getReferenceKey()", "item.getReferenceKey(Group).first()", "(item.v | v).first()",
    "item.where(v = '2024-01-01').v", "item.where(v = 'urn:carelake:h1:mrn').v.first()",
    "item.where(v.startsWith('urn:') or v = 'x').v.first()", "v.ofType(Quantity).unit",
    "item.v.ofType(string).first()", "first()", "first().v", "v = 'x'", "v != '2024-01-01'", "v.empty()",
    "v.exists() and item.exists()", "v.endsWith('x')", "coding.where(system = 'http://loinc.org').first().code",
    "getResourceKey()", "item.first().getResourceKey()", "v or item", "(item | name).first().v.first()",
    # unions whose later branch can fail in the general engine: walked even when an earlier one answers
    "(item.v | item.where(v.startsWith('u'))).first()", "(name | item.where(v)).first().v",
]


@functools.cache
def _extra_paths() -> list:
    return [compile_path(e) for e in EXTRA_EXPRESSIONS]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_random_resources_agree(extra):
    paths = _gold_paths() + _extra_paths()
    for resource_type in ("Patient", "Observation"):
        resource = {**extra, "resourceType": resource_type}
        for compiled in paths:
            for node in _nodes(resource):
                _check(compiled, node, resource)


def _general_only_view(doc: dict, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(_fast, "compile_fast", lambda tree, compiler: None)
        view = compile_view(doc)
    assert view._flat_fast is None
    return view


def _rows(view, resource):
    try:
        return view.evaluate_tuples(resource)
    except (FhirPathError, ViewError) as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_gold_views_rows_agree_with_the_general_engine(extra):
    # Whole rows, including where and the errors (with their messages) that the general engine raises.
    with pytest.MonkeyPatch.context() as monkeypatch:
        for doc in _gold_views():
            resource = {**extra, "resourceType": doc["resource"]}
            fast, general = compile_view(doc), _general_only_view(doc, monkeypatch)
            assert _same(_rows(fast, resource), _rows(general, resource))


def test_fallback_column_takes_the_general_path_with_its_error():
    view = compile_view(json.loads((VIEWS_DIR / "observation.json").read_text(encoding="utf-8")))
    several = {"resourceType": "Observation", "id": "o1",
               "valueQuantity": [{"value": 1}, {"value": 2}], "subject": {"reference": "Patient/p"}}
    with pytest.raises(ViewError, match="gave 2 values"):
        view.evaluate_tuples(several)
    one = {**several, "valueQuantity": [{"value": 1, "unit": "mg"}]}  # a list of one: still one value
    (row,) = view.evaluate_tuples(one)
    assert row[view.column_names.index("value")] == 1 and row[view.column_names.index("patient_id")] == "p"


def test_generated_walk_is_plain_python():
    compiled = compile_path("code.coding.where(system = %s).code.first()", {"s": "http://loinc.org"})
    assert "'http://loinc.org'" in compiled.fast.source
    assert compiled.fast({"code": {"coding": [{"system": "x", "code": "a"},
                                              {"system": "http://loinc.org", "code": "b"}]}}) == "b"


@pytest.mark.parametrize(("expression", "node"), [
    # the general engine fails on the second item, after the first has given the answer
    ("item.where(v.startsWith('u')).v.first()", {"item": [{"v": "u1"}, {"v": ["u2", "u3"]}]}),
    ("item.where(v.startsWith('u')).v.first()", {"item": [{"v": "u1"}, {"v": 5}]}),
    ("item.where(v).v.first()", {"item": [{"v": "u1"}, {"v": [True, False]}]}),
    ("(item.v | item.where(v.startsWith('u'))).first()", {"item": [{"v": "a"}, {"v": ["u1", "u2"]}]}),
    ("item.where(v = 'a').v.first()", {"item": [{"v": "a"}, {"v": ["a", "b"]}]}),  # = never fails
    # a date-like constant compares as a date: '2024-01-01' = '2024-01-01T10:00:00Z' is unknown
    ("item.where(v != '2024-01-01').v.first()", {"item": [{"v": "2024-01-01T10:00:00+01:00"}, {"v": "x"}]}),
    ("item.where(v = 'urn:x').v.first()", {"item": [{"v": "urn:x"}]}),
    # choice keys: `v` absent but `vString` present, with a value or null
    ("item.v.first()", {"item": [{"vString": "s"}]}),
    ("item.v.first()", {"item": [{"v": None, "vString": None}, {"v": "x"}]}),
])
def test_fast_path_defers_where_the_general_engine_differs(expression, node):
    compiled = compile_path(expression)
    _check(compiled, node, node)
