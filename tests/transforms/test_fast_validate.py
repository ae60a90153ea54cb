"""The shape-cached validator gives fhir.resources' verdict on every resource, valid or not."""

from __future__ import annotations

import copy
import typing
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import extdata
from transforms.errors import RecordError
from transforms.fast_validate import ShapeValidator, shape_of
from transforms.fhir_validate import validate as full_validate
from transforms.normalize import RESOURCE_TABLES

PATIENT = {
    "resourceType": "Patient", "id": "p-1", "meta": {"lastUpdated": "2024-03-01T10:00:00Z"},
    "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN001", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
    "name": [{"family": "Muster", "given": ["Anna", "Maria"]}], "gender": "female", "birthDate": "1984-02-29",
    "address": [{"line": ["Hauptstr. 1"], "city": "Berlin", "postalCode": "10115"}], "deceasedBoolean": False,
}
ENCOUNTER = {
    "resourceType": "Encounter", "id": "e-1", "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/p-1"},
    "period": {"start": "2024-01-05T10:20:30+01:00", "end": "2024-01-09T08:00:00+01:00"},
}
OBSERVATION = {
    "resourceType": "Observation", "id": "o-1", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}], "text": "Glucose"},
    "subject": {"reference": "Patient/p-1"}, "encounter": {"reference": "Encounter/e-1"},
    "effectiveDateTime": "2024-01-05T11:00:00+01:00", "issued": "2024-01-05T12:00:00.123+01:00",
    "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6}}],
    "interpretation": [{"coding": [{"code": "N"}]}],
}
CONDITION = {
    "resourceType": "Condition", "id": "c-1", "subject": {"reference": "Patient/p-1"},
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]}, "onsetDateTime": "2023",
    "recordedDate": "2023-11",
}
SEEDS = [PATIENT, ENCOUNTER, OBSERVATION, CONDITION]


def _variant(seed: dict, change) -> dict:
    resource = copy.deepcopy(seed)
    change(resource)
    return resource


# Shapes with a seed's head (resourceType and top-level keys) that part from it deep inside, as feeds
# produce them: an int quantity instead of a float, two codings instead of one, one list item fewer.
SIBLINGS = [
    _variant(OBSERVATION, lambda r: r["valueQuantity"].update(value=5)),
    _variant(OBSERVATION, lambda r: r["code"]["coding"].append({"system": "urn:local", "code": "GLU"})),
    _variant(OBSERVATION, lambda r: r["referenceRange"][0].pop("high")),
    _variant(PATIENT, lambda r: r["name"][0]["given"].pop()),
]

# Values that sit on the edges of the FHIR primitive types (and of the fast path's own patterns).
TRICKY = [
    "", " ", "  x", "x  y", "x\ty", "a b", "\n", "final", "FINAL", "urn:oid:1.2.3", "http://x y", "Patient/p 1",
    "2024", "0000", "0999", "2024-00", "2024-13", "2024-02", "2024-02-29", "2023-02-29", "2024-04-31", "2024-1-01",
    "2024-01-01T10:00:00", "2024-01-01T10:00Z", "2024-01-01T24:00:00Z", "2024-01-01T23:59:60Z", "2016-12-31T23:59:60Z",
    "2024-01-01T10:00:00+14:00", "2024-01-01T10:00:00+14:30", "2024-01-01T10:00:00-13:59", "2024-01-01T10:00:00.1234567Z",
    "2024-01-01T10:00:00.Z", "2024-01-01 10:00:00Z", "2024-01-01T10:00:00z", "abc-123.x", "abc_123", "x" * 64, "x" * 256,
    "1.5", "1e3", "-0", "NaN", "ß", "\u00e9t\u00e9", "\x00", "true",
    # lone surrogates, as a JSON escape like "\\ud800" decodes: pydantic refuses them, UTF-8 cannot hold them
    "Mus\ud800ter", "\udfff", "a\udc80 b",
]
VALUES = st.one_of(
    st.sampled_from(TRICKY), st.text(max_size=12), st.integers(min_value=-3, max_value=2**40), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.just([]), st.just({}), st.just(["x"]),
    st.just({"x": 1}), st.just([{"text": "x"}]),
)


def verdict(check, resource) -> str | None:
    try:
        check(resource)
    except RecordError as exc:
        return exc.code
    return None


def warmed() -> ShapeValidator:
    validator = ShapeValidator()
    for seed in SEEDS:
        validator.validate(copy.deepcopy(seed))
    return validator


def paths(node, prefix=()):
    """Every path to a value inside `node` (dict keys and list indexes), leaves and containers."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(prefix + (key,))
            out += paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append(prefix + (index,))
            out += paths(value, prefix + (index,))
    return out


def _parent(resource, path):
    node = resource
    for part in path[:-1]:
        node = node[part]
    return node


MUTATIONS = ("replace", "delete", "add_unknown", "add_sibling_choice", "move_last")


@st.composite
def mutated(draw):
    seed = draw(st.sampled_from(SEEDS))
    resource = copy.deepcopy(seed)
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        candidates = [p for p in paths(resource) if p != ("resourceType",)]
        path = draw(st.sampled_from(candidates))
        parent = _parent(resource, path)
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "replace":
            parent[path[-1]] = copy.deepcopy(draw(VALUES))
        elif kind == "delete":
            del parent[path[-1]]
        elif kind == "add_unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["foo", "_status", "valueString", "fhir_comments", "id", "extension"]))] = copy.deepcopy(draw(VALUES))
        elif kind == "move_last" and isinstance(parent, dict):  # the same keys in another order
            parent[path[-1]] = parent.pop(path[-1])
        elif kind == "add_sibling_choice":
            resource[draw(st.sampled_from(["valueString", "deceasedDateTime", "onsetString", "effectivePeriod"]))] = copy.deepcopy(draw(VALUES))
    return resource


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_verdict_equals_fhir_resources_verdict_on_mutated_resources(resource):
    validator = warmed()
    expected = verdict(full_validate, copy.deepcopy(resource))
    assert verdict(validator.validate, resource) == expected
    # a second resource of the same shape goes through the cached plan: still the same verdict
    assert verdict(validator.validate, resource) == expected


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_value_mutations_keep_the_shape_and_are_judged_by_the_fast_path(seed, data):
    """Same shape, one leaf string changed: the verdict comes from the cached plan, not a new model."""
    validator = warmed()
    resource = copy.deepcopy(seed)
    leaves = [p for p in paths(resource) if isinstance(_parent(resource, p)[p[-1]], str) and p[-1] != "resourceType"]
    path = data.draw(st.sampled_from(leaves))
    _parent(resource, path)[path[-1]] = data.draw(st.one_of(st.sampled_from(TRICKY), st.text(max_size=30)))
    assert shape_of(resource, []) == shape_of(seed, [])
    before = dict(validator.stats)
    expected = verdict(full_validate, copy.deepcopy(resource))
    assert verdict(validator.validate, resource) == expected
    if expected is None:
        assert validator.stats["fast"] == before["fast"] + 1 or validator.stats["full"] == before["full"] + 1
    # the shape was then seen twice, so it is compiled: the compiled check gives the same verdict
    assert validator._compiled.get((seed["resourceType"], tuple(seed)))
    assert verdict(validator.validate, copy.deepcopy(resource)) == expected


def test_the_fast_path_is_taken_for_repeated_shapes():
    validator = warmed()
    for n in range(50):
        resource = copy.deepcopy(OBSERVATION)
        resource["id"] = f"o-{n}"
        resource["valueQuantity"]["value"] = 3.0 + n / 10
        resource["effectiveDateTime"] = f"2024-01-{n % 28 + 1:02d}T11:{n % 60:02d}:00+01:00"
        validator.validate(resource)
    assert validator.stats["fast"] == 50
    assert validator.stats["full"] == len(SEEDS)


def test_invalid_values_in_a_known_shape_are_rejected_with_fhir_resources_message():
    validator = warmed()
    bad = copy.deepcopy(PATIENT)
    bad["birthDate"] = "1984-02-30"
    with pytest.raises(RecordError) as caught:
        validator.validate(bad)
    with pytest.raises(RecordError) as expected:
        full_validate(copy.deepcopy(bad))
    assert (caught.value.code, caught.value.reason) == (expected.value.code, expected.value.reason)


def test_a_lone_surrogate_in_a_known_shape_is_rejected_as_fhir_resources_rejects_it():
    """Its shape compiled, a string leaf holding printable ASCII and a lone surrogate: the fast rule for
    strings once accepted it (pydantic refuses it), and the resource's text then failed the whole batch
    when it became an Arrow column."""
    validator = warmed()
    bad = copy.deepcopy(PATIENT)
    bad["name"][0]["family"] = "Mus\ud800ter"
    with pytest.raises(RecordError) as caught:
        validator.validate(bad)
    with pytest.raises(RecordError) as expected:
        full_validate(copy.deepcopy(bad))
    assert (caught.value.code, caught.value.reason) == (expected.value.code, expected.value.reason)
    assert "string_unicode" in caught.value.reason


def _examples():
    root = extdata("fhir-r4-examples")
    files = sorted(p for p in root.rglob("*.json") if p.name.split("-", 1)[0] in RESOURCE_TABLES)
    if not files:
        pytest.skip(f"no examples of the kept resource types under {root}")
    return files


def test_official_examples_get_the_same_verdict():
    validator = ShapeValidator()
    compared = 0
    for path in _examples():
        resource = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(resource, dict) or resource.get("resourceType") not in RESOURCE_TABLES:
            continue
        expected = verdict(full_validate, copy.deepcopy(resource))
        for _ in range(3):  # the second time through the cached plan, the third through the compiled check
            assert verdict(validator.validate, copy.deepcopy(resource)) == expected, path.name
        compared += 1
    assert compared > 50
    assert validator.stats["fast"] > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_official_examples_get_the_same_verdict(data):
    files = _examples()
    path = data.draw(st.sampled_from(files))
    resource = json.loads(path.read_text(encoding="utf-8"))
    validator = ShapeValidator()
    validator.validate(copy.deepcopy(resource)) if verdict(full_validate, copy.deepcopy(resource)) is None else None
    leaves = [p for p in paths(resource) if not isinstance(_parent(resource, p)[p[-1]], (dict, list)) and p[-1] != "resourceType"]
    if not leaves:
        return
    p = data.draw(st.sampled_from(leaves))
    _parent(resource, p)[p[-1]] = copy.deepcopy(data.draw(VALUES))
    assert verdict(validator.validate, copy.deepcopy(resource)) == verdict(full_validate, copy.deepcopy(resource)), path.name


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_compiled_check_matches_exactly_the_resources_of_its_shapes(resource):
    """The compiled checks find a resource's shape without `shape_of`: the check of a head must claim
    (answer True or False) exactly the resources whose `shape_of` equals one of its seeds' up to the
    order of keys (see "compiled shapes" in the module), and answer None for every other."""
    validator = ShapeValidator()
    for seed in SEEDS + SIBLINGS:  # a shape is compiled when it is seen the second time
        validator.validate(copy.deepcopy(seed))
        validator.validate(copy.deepcopy(seed))
    assert sum(len(programs) for programs in validator._programs.values()) == len(SEEDS + SIBLINGS)
    shape = shape_of(keys_sorted(resource), [])
    for seed in SEEDS:
        key = (seed["resourceType"], tuple(seed))
        check = validator._compiled[key]
        head = [s for s in SEEDS + SIBLINGS if (s["resourceType"], tuple(s)) == key]
        for member in head:
            assert check(copy.deepcopy(member)) is True
        claimed = check(copy.deepcopy(resource)) is not None
        assert claimed == any(shape == shape_of(keys_sorted(member), []) for member in head), seed["resourceType"]


def keys_sorted(node):
    """`node` with every dict's keys in sorted order."""
    if isinstance(node, dict):
        return {key: keys_sorted(node[key]) for key in sorted(node, key=str)}
    if isinstance(node, list):
        return [keys_sorted(item) for item in node]
    return node


def test_shapes_of_a_head_that_differ_only_in_the_keys_of_a_dict_are_each_compiled():
    """Two shapes whose quantity has as many keys, but not the same ones, cannot part at a count of
    keys: their head is compiled with the tuples of keys as guards, and each is found, judged by the
    fast path, and told apart from a resource with the same keys in another order."""
    validator = ShapeValidator()
    comparator = _variant(OBSERVATION, lambda r: r["valueQuantity"].update(comparator=r["valueQuantity"].pop("unit")))
    for seed in (OBSERVATION, comparator):
        validator.validate(copy.deepcopy(seed))
        validator.validate(copy.deepcopy(seed))
    key = ("Observation", tuple(OBSERVATION))
    assert len(validator._programs[key]) == 2
    check = validator._compiled[key]
    assert check(copy.deepcopy(OBSERVATION)) is True and check(copy.deepcopy(comparator)) is True
    before = dict(validator.stats)
    validator.validate(copy.deepcopy(comparator))
    assert validator.stats == {**before, "fast": before["fast"] + 1}
    reordered = _variant(OBSERVATION, lambda r: r["valueQuantity"].update(unit=r["valueQuantity"].pop("unit")))
    assert check(reordered) is None  # its own shape; the full check then decides
    assert verdict(validator.validate, reordered) is None


def test_a_dict_with_as_many_keys_but_another_key_is_not_claimed():
    """A head compiled with counts of keys: a quantity with one key swapped for another is not the
    shape (the check answers None), and fhir.resources gives the verdict and its message."""
    validator = warmed()
    validator.validate(copy.deepcopy(OBSERVATION))
    check = validator._compiled[("Observation", tuple(OBSERVATION))]
    swapped = _variant(OBSERVATION, lambda r: r["valueQuantity"].update(foo=r["valueQuantity"].pop("unit")))
    assert check(copy.deepcopy(swapped)) is None
    reordered = _variant(OBSERVATION, lambda r: r["valueQuantity"].update(unit=r["valueQuantity"].pop("unit")))
    assert check(copy.deepcopy(reordered)) is True
    assert verdict(validator.validate, copy.deepcopy(swapped)) == verdict(full_validate, copy.deepcopy(swapped)) == "FHIR_INVALID"


def test_every_shape_of_a_head_is_judged_by_the_compiled_check():
    """The last shape compiled into a head is found as surely as the first: a valid resource of it takes
    the fast path, an invalid one gets fhir.resources' own message."""
    validator = ShapeValidator()
    observations = [OBSERVATION] + [s for s in SIBLINGS if s["resourceType"] == "Observation"]
    for seed in observations:
        validator.validate(copy.deepcopy(seed))
        validator.validate(copy.deepcopy(seed))
    (key,) = {(s["resourceType"], tuple(s)) for s in observations}
    assert len(validator._programs[key]) == len(observations)
    last = copy.deepcopy(observations[-1])
    last["id"], last["effectiveDateTime"] = "o-2", "2024-02-03T04:05:06Z"
    before = dict(validator.stats)
    validator.validate(last)
    assert validator.stats == {**before, "fast": before["fast"] + 1}
    last["effectiveDateTime"] = "2024-02-30T04:05:06Z"
    assert validator._compiled[key](last) is False  # its shape, a value the fast path cannot vouch for
    with pytest.raises(RecordError) as caught:
        validator.validate(last)
    with pytest.raises(RecordError) as expected:
        full_validate(copy.deepcopy(last))
    assert (caught.value.code, caught.value.reason) == (expected.value.code, expected.value.reason)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.sampled_from(TRICKY + ["\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\x0b x"]),
                 st.text(max_size=6), st.text(alphabet=" \t\r\n\x0b\x0c\x1c\x85\xa0\u2028\u3000a\x00", max_size=4)))
def test_the_fast_string_rule_accepts_only_what_fhir_resources_accepts(value):
    from fhir_core import types as fhir_types
    from pydantic import TypeAdapter

    from transforms.fast_validate import ASCII_STRING_TEST, _fast_for, _fast_string

    annotation = typing.Annotated[str, fhir_types.String()]
    assert _fast_for(annotation, str) is _fast_string
    if eval(ASCII_STRING_TEST.format("value")):  # noqa: S307 - the compiled checks' own source
        assert _fast_string(value)
    if _fast_string(value):
        TypeAdapter(annotation).validate_python(value)  # raises if fhir.resources would refuse it


@pytest.mark.parametrize("value", [5.4, 0.0, -0.0, 1e-4, 9.9e15, 1e-5, 1e-7, 1e16, 1.5e300, 3])
def test_a_compiled_check_says_plain_floats_only_when_json_writes_them_without_exponent(value):
    """`validate` returning True lets `fastjson.dumps` skip its float search, so it must mean what
    the search would find: every float of the resource written alike by json and msgspec."""
    from transforms import fastjson

    validator = ShapeValidator()
    resource = copy.deepcopy(OBSERVATION)
    resource["valueQuantity"]["value"] = value
    for _ in range(2):  # compiled on the second sight
        validator.validate(copy.deepcopy(resource))
    plain = validator.validate(resource)
    assert validator._compiled[("Observation", tuple(resource))](resource)
    assert plain == fastjson._floats_as_repr(resource)
    assert fastjson.dumps(resource, plain_floats=plain) == json.dumps(resource, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
