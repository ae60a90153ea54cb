"""fastjson gives the standard library's exact results: the same text, the same objects, the same errors."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import extdata
from transforms import fastjson


def std_dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def outcome(function, arg):
    """What a call gives, comparable across implementations: the repr of the result (tells 1 from 1.0
    from True, -0.0 from 0.0, and keeps dict order), or the exception's type and message."""
    try:
        return "ok", repr(function(arg))
    except Exception as exc:  # the exception itself is the outcome under test
        return "raises", type(exc), str(exc)


def assert_dumps_like_json(obj):
    assert outcome(fastjson.dumps, obj) == outcome(std_dumps, obj)
    # the same text as UTF-8, and the same refusal of what UTF-8 cannot hold (a lone surrogate)
    assert outcome(fastjson.dumps_utf8, obj) == outcome(lambda o: std_dumps(o).encode("utf-8"), obj)


def assert_loads_like_json(text):
    assert outcome(fastjson.loads, text) == outcome(json.loads, text)


# --- strategies -----------------------------------------------------------------------------------

#: characters JSON encoders treat specially, plus U+02C0-U+02FF, whose UTF-8 lead byte is the msgpack
#: float marker fastjson looks for
_SPECIAL = st.sampled_from(["\x00", "\x1f", "\x7f", '"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\u2028", "\u2029",
                            "\ufeff", "\uffff", "\U0001f600", "\ud800", "\udfff", "\u02c8", "\xe9"])
_CHARS = st.one_of(_SPECIAL, st.characters(codec=None, exclude_categories=()))  # () lets lone surrogates in
TEXT = st.text(_CHARS, max_size=12)
#: floats at every exponent (subnormals, 1e-5, 1e16, 1e308), NaN, the infinities, and the repr boundaries
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e-05, 1e16, 9999999999999998.0, 5e-324, 1.7976931348623157e308]),
    st.builds(lambda m, e: m * 10.0 ** e, st.floats(-10, 10, allow_nan=False), st.integers(-30, 30)),
)
INTS = st.one_of(st.integers(-2**70, 2**70), st.integers(), st.sampled_from([2**63, 2**64, -2**63 - 1, 10**40]))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
#: what json.loads gives: str keys only
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)
#: what json.dumps also takes: tuples, and keys of type int, float, bool or None (written as strings)
KEYS = st.one_of(TEXT, st.none(), st.booleans(), INTS, FLOATS)
DUMPABLE = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                         st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)

#: JSON numbers as texts: many digits, large and tiny exponents, and the non-standard words json accepts
NUMBER_TEXTS = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?\Z"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "-0.0", "1e400", "-1e400", "1e-400", "0e99999",
                     "2.2250738585072011e-308", "1.7976931348623158e308", "1.7976931348623159e308", "1" * 4300, "1" * 4301]),
)
WHITESPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c\xa0"), max_size=2)


@st.composite
def json_texts(draw):
    """Valid JSON (and json's extensions), written the ways producers write it."""
    kind = draw(st.sampled_from(["dumps", "number", "duplicates"]))
    if kind == "number":
        return draw(WHITESPACE) + draw(NUMBER_TEXTS) + draw(WHITESPACE)
    if kind == "duplicates":  # objects with repeated keys: json keeps the last value at the first key's place
        pairs = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), SCALARS), max_size=6))
        return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (" , ", " : ")]))
    return json.dumps(draw(JSON_VALUES), ensure_ascii=draw(st.booleans()), indent=indent, separators=separators)


@st.composite
def broken_texts(draw):
    """JSON with one character deleted, replaced or inserted: mostly invalid, sometimes still valid."""
    text = draw(json_texts())
    at = draw(st.integers(0, len(text)))
    edit = draw(st.sampled_from(["delete", "replace", "insert"]))
    char = draw(st.one_of(st.sampled_from(list('{}[],:"\\ 0e.-') + ["\x00", "\x01", "\ud800"]), _CHARS))
    if edit == "delete":
        return text[:at] + text[at + 1:]
    return text[:at] + char + text[at + (edit == "replace"):]


def short_id(value) -> str:
    """A readable test id; some values are too large for str()."""
    try:
        return ascii(value)[:40]
    except ValueError:
        return f"<{type(value).__name__}>"


def as_bytes(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "surrogatepass")


# --- dumps ----------------------------------------------------------------------------------------

@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DUMPABLE)
def test_dumps_equals_json_dumps(value):
    assert_dumps_like_json(value)


@pytest.mark.parametrize("value", [
    # floats: repr's exponent forms differ from msgspec's (1e16, 1e-7, 0.00001)
    1e-05, 1e-07, 1.234e-05, 9.999999999999999e-05, 1e16, 1.5e300, 1e22, 5e-324, 1.7976931348623157e308, -1e-05,
    # floats that agree, at the edges of the range msgspec is trusted with
    1e-4, -1e-4, 9999999999999998.0, 0.0, -0.0, 0.1, 36.6, 1e15,
    # NaN and the infinities: json writes NaN / Infinity, msgspec null
    math.nan, math.inf, -math.inf, [1.5, math.nan], {"value": math.inf},
    # integers beyond 64 bits, and past the int-to-str digit limit (json raises ValueError)
    2**63, 2**64, -2**63 - 1, 2**200, 10**5000,
    # non-str keys: json writes them as strings; mixed key types cannot be sorted (json raises TypeError)
    {1: "a"}, {1.5: "a"}, {True: "a"}, {None: "a"}, {1e16: "a"}, {1: "a", "1": "b"}, {1: "a", "b": "c"},
    # strings: lone surrogates, control characters, U+2028/2029, "/", non-BMP, key order by code point
    "\ud800", "a\udfffb", {"\ud800": 1}, "\x00\x01\x1f\x7f", "\b\f\n\r\t\"\\", "\u2028\u2029", "a/b", "\U0001f600",
    {"\uffff": 1, "\U0001f600": 2, "\xe9": 3, "e": 4, "Z": 5},
    # a msgpack float marker byte (0xcb, the UTF-8 lead byte of U+02C0-U+02FF) inside a string
    {"a": "\u02c8\u02c8\u02c8\u02c8\u02c8\u02c8\u02c8\u02c8\u02c8", "b": 1.5},
    # tuples are lists for both
    (1, (2.5, "x")), [], {}, "", None, True,
], ids=short_id)
def test_dumps_edge_cases(value):
    assert_dumps_like_json(value)


def test_dumps_circular_container_raises_like_json():
    loop: list = []
    loop.append(loop)
    assert_dumps_like_json(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        fastjson.dumps(loop)


def test_dumps_refuses_what_json_refuses_in_both():
    class Number(int):
        pass

    assert_dumps_like_json(Number(3))  # subclasses: msgspec refuses them, json writes them as their base type
    assert_dumps_like_json(object())


# --- loads ----------------------------------------------------------------------------------------

@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_texts())
@example("NaN")
@example("[Infinity,-Infinity]")
@example('"\\ud800"')
def test_loads_equals_json_loads(text):
    assert_loads_like_json(text)
    assert_loads_like_json(as_bytes(text, "utf-8"))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_texts())
def test_loads_raises_like_json_loads(text):
    assert_loads_like_json(text)


@settings(max_examples=300, deadline=None)
@given(json_texts(), st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]))
def test_loads_of_bytes_in_other_encodings(text, encoding):
    assert_loads_like_json(as_bytes(text, encoding))


@pytest.mark.parametrize("text", [
    # json's extensions and what lies beyond msgspec's float range
    "NaN", "Infinity", "-Infinity", "[NaN]", "1e400", "-1e400", "1e-400", "1.7976931348623159e308", "0e99999",
    # lone and reversed surrogate escapes (pairs are fine for both); a raw lone surrogate in a str
    '"\\ud800"', '"\\udc00\\ud800"', '"\\ud800x"', '"\\ud83d\\ude00"', '"\ud800"',
    # duplicate keys: the last value wins, at the place of the first
    '{"a":1,"b":2,"a":3}',
    # whitespace: json takes space, tab, LF and CR only
    ' \t\n\r{"a" : [1 , 2]}\r\n', "[1,\x0c2]", "[1,\x0b2]", "\xa0[1]",
    # escapes and control characters
    '"\\/"', '"\\u2028"', '"\u2028"', '"\x7f"', '"\x01"', '"\\x"', '"\\u12"',
    # numbers json refuses, big integers, the int-to-str digit limit
    "01", "1.", ".5", "+1", "-", "1e", "-0", "-0.0", "12345678901234567890123", "1" * 4300, "1" * 4301,
    # other invalid documents: the same JSONDecodeError message and position
    "", "  ", "nul", "[1,]", '{"a":1,}', '{"a":1} x', "'a'", "\ufeff{}", "[1]\x00",
    # nesting past the recursion limit
    "[" * 100_000 + "]" * 100_000,
], ids=short_id)
def test_loads_edge_cases(text):
    assert_loads_like_json(text)
    assert_loads_like_json(as_bytes(text, "utf-8"))


def test_loads_error_is_json_decode_error():
    with pytest.raises(json.JSONDecodeError) as caught:
        fastjson.loads('{"a": 1,}')
    assert (caught.value.msg, caught.value.pos) == ("Expecting property name enclosed in double quotes", 8)


@pytest.mark.parametrize("text", [bytearray(b'{"a":1}'), memoryview(b'{"a":1}'), None, 1])
def test_loads_of_other_types_like_json(text):
    assert_loads_like_json(text)  # bytearray is accepted, memoryview and the rest raise TypeError


# --- real resources -------------------------------------------------------------------------------

def _resource_texts():
    for path in sorted(extdata("fhir-r4-examples").rglob("*.json")):
        yield path.name, path.read_text(encoding="utf-8")
    synthea = sorted(extdata("synthea").rglob("*.json"))[:20]
    for path in synthea:  # whole Bundles, and each entry the way a bulk export writes it
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for index, entry in enumerate(bundle.get("entry") or []):
            yield f"{path.name}#{index}", json.dumps(entry.get("resource"))


def test_real_resources_byte_for_byte():
    compared = 0
    for name, text in _resource_texts():
        assert repr(fastjson.loads(text)) == repr(json.loads(text)), name
        value = json.loads(text)
        assert fastjson.dumps(value) == std_dumps(value), name
        compared += 1
    assert compared > 500

