"""The FHIRPath subset: parsing, navigation, functions, operators, and the errors it reports."""

from __future__ import annotations

import pytest

from transforms.sqlonfhir import FhirPathError, ViewError
from transforms.sqlonfhir.fhirpath import compile_path, evaluate, parse

PATIENT = {
    "resourceType": "Patient", "id": "p1", "active": True, "gender": "female", "birthDate": "1970-06",
    "name": [{"use": "official", "family": "Curie", "given": ["Marie", "Salomea"]},
             {"use": "maiden", "family": "Sklodowska"}],
    "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "m@x.org"}],
    "deceasedBoolean": False,
    "extension": [{"url": "http://ex.org/birthsex", "valueCode": "F"},
                  {"url": "http://ex.org/race", "extension": [{"url": "ombCategory",
                                                               "valueCoding": {"code": "2106-3"}}]}],
    "managingOrganization": {"reference": "Organization/o1"},
    "link": [{"other": {"reference": "Patient/p2/_history/3"}}],
}
OBSERVATION = {"resourceType": "Observation", "id": "o1", "status": "final",
               "valueQuantity": {"value": 1.0, "unit": "mg"}, "effectiveDateTime": "2010-10-10",
               "component": [{"valueInteger": 3}, {"valueString": "x"}]}


def ev(expression: str, node=PATIENT, **constants):
    return evaluate(expression, node, constants=constants)


@pytest.mark.parametrize(("expression", "expected"), [
    ("id", ["p1"]),
    ("Patient.id", ["p1"]),
    ("name.family", ["Curie", "Sklodowska"]),
    ("name.given", ["Marie", "Salomea"]),
    ("name[1].family", ["Sklodowska"]),
    ("name[5].family", []),
    ("nothing.here", []),
    ("`name`.family.first()", ["Curie"]),
    ("$this.id", ["p1"]),
    ("name.family.last()", ["Sklodowska"]),
    ("name.given.tail()", ["Salomea"]),
    ("name.count()", [2]),
    ("name.given.skip(1).take(1)", ["Salomea"]),
])
def test_navigation_and_subsetting(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("name.where(use = 'official').family", ["Curie"]),
    ("name.where(use = 'nickname').family", []),
    ("name.where(family.exists() and given.empty()).use", ["maiden"]),
    ("name.exists()", [True]),
    ("photo.exists()", [False]),
    ("name.exists(use = 'maiden')", [True]),
    ("photo.empty()", [True]),
    ("name.all(family.exists())", [True]),
    ("name.select(given).count()", [2]),
    ("name.where($index = 1).family", ["Sklodowska"]),
    ("name.given.join(', ')", ["Marie, Salomea"]),
    ("name.given.join()", ["MarieSalomea"]),
    ("photo.join(',')", [""]),
    ("(name.family | name.family).count()", [2]),
    ("name.family.combine(name.family).count()", [4]),
    ("iif(active, 'yes', 'no')", ["yes"]),
    ("gender.upper()", ["FEMALE"]),
    ("gender.startsWith('fem') and gender.endsWith('ale')", [True]),
    ("gender.substring(0, 3)", ["fem"]),
    ("gender.length()", [6]),
    ("'a,b'.split(',')", ["a", "b"]),
    ("gender.matches('^f.*e$')", [True]),
    ("'1'.toInteger() + 1", [2]),
    ("name.given.distinct().count()", [2]),
])
def test_functions(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("extension('http://ex.org/birthsex').value.ofType(code)", ["F"]),
    ("extension('http://ex.org/race').extension('ombCategory').value.ofType(Coding).code", ["2106-3"]),
    ("extension('http://ex.org/none').exists()", [False]),
    ("deceased.ofType(boolean)", [False]),
    ("deceased.ofType(dateTime)", []),
    ("deceased", [False]),
    ("deceased is boolean", [True]),
    ("deceased.as(FHIR.boolean)", [False]),
    ("name.given.ofType(string).count()", [2]),
    ("name.given.ofType(integer)", []),
    ("getResourceKey()", ["p1"]),
    ("managingOrganization.getReferenceKey()", ["o1"]),
    ("managingOrganization.getReferenceKey(Organization)", ["o1"]),
    ("managingOrganization.getReferenceKey(Patient)", []),
    ("link.other.getReferenceKey(Patient)", ["p2"]),
])
def test_fhir_functions(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize("reference", [
    "#c1", "urn:uuid:0b3c", "http://other.org/fhir/Patient/p2", "Patient?identifier=x|1",
])
def test_get_reference_key_needs_a_relative_reference(reference):
    assert evaluate("getReferenceKey()", {"reference": reference}) == []


@pytest.mark.parametrize(("expression", "expected"), [
    ("value.ofType(Quantity).value", [1.0]),
    ("value.ofType(Quantity).value.lowBoundary()", [0.95]),
    ("value.ofType(Quantity).value.highBoundary()", [1.05]),
    ("effective.ofType(dateTime).lowBoundary()", ["2010-10-10T00:00:00.000+14:00"]),
    ("effective.ofType(dateTime).highBoundary()", ["2010-10-10T23:59:59.999-12:00"]),
    ("component.value.ofType(integer)", [3]),
    ("component.value.ofType(string)", ["x"]),
    ("component.value.count()", [2]),
])
def test_choice_types_and_boundaries(expression, expected):
    assert ev(expression, OBSERVATION) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("birthDate.lowBoundary()", ["1970-06-01"]),
    ("birthDate.highBoundary()", ["1970-06-30"]),
    ("@1972-02.highBoundary()", ["1972-02-29"]),
    ("@T12:34.lowBoundary()", ["12:34:00.000"]),
    ("1.587.lowBoundary()", [1.5865]),
])
def test_date_boundaries(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("true and {}", []), ("false and {}", [False]), ("true or {}", [True]), ("false or {}", []),
    ("true xor false", [True]), ("false implies {}", [True]), ("{}.not()", []), ("(1 = 2).not()", [True]),
    ("active and gender = 'female'", [True]),
    ("photo = 'x'", []), ("gender != 'male'", [True]), ("gender ~ 'FEMALE'", [True]),
    ("name.family = 'Curie'", [False]),  # two families against one string
    ("1 < 2", [True]), ("2 >= 2.0", [True]), ("'b' > 'a'", [True]),
    ("birthDate < @1971", [True]), ("birthDate = @1970-06-15", []), ("birthDate > @1970-05-31", [True]),
    ("@2024-01-01T10:00:00+01:00 = @2024-01-01T09:00:00Z", [True]),
    ("1 + 2 * 3", [7]), ("7 div 2", [3]), ("7 mod 2", [1]), ("3 / 2", [1.5]), ("1 / 0", []),
    ("0.1 + 0.2", [0.3]), ("-(2 - 5)", [3]), ("'a' + 'b'", ["ab"]), ("'a' & {}", ["a"]),
    ("'Curie' in name.family", [True]), ("name.family contains 'Nope'", [False]),
    ("%rowIndex", [0]), ("%resource.id", ["p1"]), ("%loinc", ["http://loinc.org"]),
])
def test_operators(expression, expected):
    assert ev(expression) == expected


def test_constants_are_folded_in():
    assert ev("name.where(use = %use).family", use="maiden") == ["Sklodowska"]
    assert ev("name[%i].family", i=1) == ["Sklodowska"]


def test_compiled_path_reuse():
    path = compile_path("name.where(use = 'official').family.first()")
    assert path.evaluate(PATIENT) == ["Curie"]
    assert path.evaluate({"resourceType": "Patient"}) == []
    assert path.evaluate(None) == []


def test_literals():
    assert parse("1.50") == ("lit", 1.5)
    assert parse("'it\\'s'") == ("lit", "it's")
    assert parse("@2024-03-01T10:00:00Z") == ("date", "2024-03-01T10:00:00Z", "dateTime")
    assert parse("4 'mg'") == ("qty", 4, "mg")
    assert ev("{}") == []
    assert ev("'\\u00e9'") == ["é"]
    assert ev("// a comment\n 1 /* another */ + 1") == [2]


@pytest.mark.parametrize(("expression", "message"), [
    ("@@", "invalid date/time literal at position 0 in '@@'"),
    ("name.", "expected a name, found end of expression at position 5 in 'name.'"),
    ("name.where(", "expression ends too early at position 11 in 'name.where('"),
    ("name[0", "expected ']', found end of expression at position 6 in 'name[0'"),
    ("nam e", "unexpected 'e' at position 4 in 'nam e'"),
    ("'abc", "unterminated '-quoted text at position 0 in \"'abc\""),
    ("name.frist()", "unknown function frist() (did you mean first()?) in 'name.frist()'"),
    ("first(1)", "first() takes 0 argument(s), found 1 in 'first(1)'"),
    ("where()", "where() takes 1 argument(s), found 0 in 'where()'"),
    ("%missing", "undefined constant %missing (constants defined by the view: none) in '%missing'"),
    ("$foo", "unknown special variable (expected $this, $index or $total) at position 0 in '$foo'"),
    ("", "empty expression at position 0 in ''"),
])
def test_compile_errors(expression, message):
    with pytest.raises(FhirPathError) as err:
        compile_path(expression)
    assert str(err.value) == message
    assert isinstance(err.value, ViewError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(("expression", "message"), [
    ("name.family < 'x'", "operator '<' expects a single item, found 2 in \"name.family < 'x'\""),
    ("gender < 1", "cannot compare string with integer using '<' in 'gender < 1'"),
    ("name.family.not()", "not() expects a single boolean, found a collection of 2 items in 'name.family.not()'"),
])
def test_evaluation_errors(expression, message):
    with pytest.raises(FhirPathError) as err:
        compile_path(expression).evaluate(PATIENT)
    assert str(err.value) == message


# -- `x = 'text'` against a constant string takes a shortcut; it must agree with the general operator ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXTS = st.one_of(st.sampled_from(["official", "Official", "", "2020", "2020-01", "2020-01-01", "2020-01-01T10:00:00Z",
                                    "2020-01-01T11:00:00+01:00", "10:00", "10:00:00", "T10:00", "urn:x", "12:3",
                                    "2020-13", "1970-06"]),
                   st.text(max_size=8))
_VALUES = st.one_of(_TEXTS, st.lists(_TEXTS, max_size=2), st.integers(-2, 2), st.booleans(), st.floats(-2, 2),
                    st.none(), st.just({"a": 1}))


@settings(max_examples=1500, deadline=None)
@given(_VALUES, _TEXTS, st.sampled_from(["=", "!="]), st.booleans())
def test_equality_with_a_constant_string_agrees_with_the_general_operator(value, text, op, as_constant):
    node = {"resourceType": "Basic", "v": value}
    literal = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    shortcut = f"v {op} %c" if as_constant else f"v {op} {literal}"
    general = f"v {op} {literal}.first()"  # not a literal any more: the general operator

    def outcome(expression, **constants):
        try:
            return ev(expression, node, **constants)
        except FhirPathError as exc:
            return type(exc)

    assert outcome(shortcut, c=text) == outcome(general)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.one_of(st.fixed_dictionaries({"v": _VALUES}), st.just({}), st.just({"vString": "official"}),
                          _TEXTS), max_size=4),
       _TEXTS, st.sampled_from(["=", "!="]), st.booleans())
def test_where_member_equals_a_constant_string_agrees_with_the_general_path(items, text, op, as_constant):
    node = {"resourceType": "Basic", "item": items}
    literal = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    shortcut = f"item.where(v {op} %c)" if as_constant else f"item.where(v {op} {literal})"
    general = f"item.where(v {op} {literal}.first())"

    def outcome(expression, **constants):
        try:
            return ev(expression, node, **constants)
        except FhirPathError as exc:
            return type(exc)

    assert outcome(shortcut, c=text) == outcome(general)


@settings(max_examples=500, deadline=None)
@given(_VALUES, _TEXTS, st.sampled_from(["startsWith", "endsWith", "contains", "indexOf"]))
def test_string_functions_with_constant_arguments_agree_with_the_general_path(value, text, function):
    node = {"resourceType": "Basic", "v": value}
    literal = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def outcome(expression):
        try:
            return ev(expression, node)
        except FhirPathError as exc:
            return type(exc)

    assert outcome(f"v.{function}({literal})") == outcome(f"v.{function}({literal}.first())")
