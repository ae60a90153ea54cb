"""The parser's and date parser's fast paths give what the general code gives, for any input.

The references below are the straightforward implementations the fast paths replaced (split every
component into sub-components, unescape each; parse a DTM on every call): property tests compare them
on generated text full of delimiters, escapes, explicit nulls and date-like strings.
"""

from __future__ import annotations

import calendar

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2.parse import NULL, Delimiters, Field, Repetition, parse_message, unescape

STANDARD = Delimiters()
CUSTOM = Delimiters("#", "*", "@", "!", "$")  # field, component, repetition, escape, sub-component


def _alphabet(d: Delimiters) -> str:
    return f'ab1 ."XFSTR{d.component}{d.repetition}{d.escape}{d.subcomponent}'


def _raw_text(d: Delimiters):
    # Delimiter-heavy text, with explicit nulls and escape sequences spliced in.
    e = d.escape
    pieces = st.sampled_from(["", NULL, f"{e}F{e}", f"{e}X41{e}", f"{e}.br{e}"])
    return st.lists(st.one_of(st.text(_alphabet(d), max_size=6), pieces), max_size=6).map("".join)


def _ref_parts(raw: str, d: Delimiters) -> list[list[str]]:
    return [[unescape(sub, d) for sub in comp.split(d.subcomponent)] for comp in raw.split(d.component)]


def _ref_component(raw: str, d: Delimiters, i: int, sub: int = 1) -> str:
    parts = _ref_parts(raw, d)
    if i < 1 or i > len(parts) or sub < 1 or sub > len(parts[i - 1]):
        return ""
    value = parts[i - 1][sub - 1]
    return "" if value == NULL else value


_QUERIES = st.lists(st.tuples(st.integers(-1, 8), st.integers(-1, 4)), min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), d=st.sampled_from([STANDARD, CUSTOM]))
def test_component_access_in_any_order_equals_the_full_split(data, d):
    raw = data.draw(_raw_text(d))
    queries = data.draw(_QUERIES)
    rep = Repetition(raw, d)  # one object: the cached state of earlier queries must not change answers
    for i, sub in queries:
        assert rep.component(i, sub) == _ref_component(raw, d, i, sub)
    parts = _ref_parts(raw, d)
    assert rep.components == [_ref_component(raw, d, i + 1) for i in range(len(parts))]
    n = data.draw(st.integers(0, 20))
    padded = rep.padded(n)
    assert len(padded) >= n
    assert padded == [_ref_component(raw, d, i + 1) for i in range(len(padded))]
    assert rep.value == _ref_component(raw, d, 1)
    for i in range(0, len(parts) + 2):
        assert rep.subcomponents(i) == (list(parts[i - 1]) if 1 <= i <= len(parts) else [])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), d=st.sampled_from([STANDARD, CUSTOM]))
def test_field_is_its_first_repetition(data, d):
    reps_raw = data.draw(st.lists(_raw_text(d), min_size=1, max_size=4))
    raw = d.repetition.join(reps_raw)
    field = Field(raw, d)
    # The general path: one Repetition per part of the split, the empty ones left out.
    general = [Repetition(p, d) for p in (raw.split(d.repetition) if raw else [raw])]
    kept = [r for r in general if r]
    assert [r.raw for r in field.repetitions] == [r.raw for r in kept]
    assert [r.components for r in field.repetitions] == [r.components for r in kept]
    assert (field.first.raw if field.first is not None else None) == (kept[0].raw if kept else None)
    assert bool(field) == any(general)
    assert field.raw == raw
    for i, sub in data.draw(_QUERIES):
        assert field.component(i, sub) == general[0].component(i, sub)
    assert field.value == general[0].value
    assert field.text() == general[0].text()


def test_empty_fields_share_one_object_and_read_as_empty():
    msg = parse_message("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||||")
    pid = msg.segment("PID")
    for n in (2, 3, 4, 5, 40):
        f = pid.field(n)
        assert f.value == "" and f.repetitions == [] and not f and f.first is None and f.raw == ""
        assert f.component(3, 2) == "" and f.text() == ""
    assert pid.field(3) is pid.field(40)
    assert msg.msh.field(1).value == "|" and msg.msh.field(2).value == "^~\\&"
    assert msg.msh.field(2).component(2) == ""


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_segment_value_equals_field_value_in_any_order(data):
    fields = data.draw(st.lists(_raw_text(STANDARD).map(lambda t: t.replace("|", "")), max_size=12))
    name = data.draw(st.sampled_from(["PID", "OBX", "ZPI"]))
    msh = "MSH|^~\\&|" + "|".join(fields)
    text = msh + "\r" + name + "|" + "|".join(fields)
    try:
        msg = parse_message(text)
    except RecordError:
        return
    order = data.draw(st.permutations(list(range(-1, len(fields) + 4))))
    fresh = parse_message(text)  # Fields made in another order, for the reference answers
    for seg, ref in zip(msg.all_segments, fresh.all_segments):
        for n in order:
            if data.draw(st.booleans()):
                seg.field(n)  # sometimes the Field exists already (cached), sometimes not
            assert seg.value(n) == ref.field(n).value


# --- DTM -----------------------------------------------------------------------------------------

def _ref_parse_dtm(value: str, field: str):
    def invalid():
        return RecordError("INVALID_DATE", f"{field} is not a valid HL7 date/time")

    digits_set = frozenset("0123456789")
    v = value.strip()
    offset = None
    cut = max(v.rfind("+"), v.rfind("-"))
    if cut >= 4:
        tz, v = v[cut:], v[:cut]
        digits = tz[1:]
        if len(digits) != 4 or not set(digits) <= digits_set:
            raise invalid()
        hh, mm = int(digits[:2]), int(digits[2:])
        if hh > 14 or mm > 59 or (hh == 14 and mm):
            raise invalid()
        offset = f"{tz[0]}{digits[:2]}:{digits[2:]}"
    fraction = ""
    if "." in v:
        v, fraction = v.split(".", 1)
        if len(v) != 14 or not fraction or not set(fraction) <= digits_set:
            raise invalid()
    if len(v) not in (4, 6, 8, 10, 12, 14) or not set(v) <= digits_set:
        raise invalid()
    parts = [v[0:4]] + [v[i:i + 2] for i in range(4, len(v), 2)]
    year = int(parts[0])
    if year < 1:
        raise invalid()
    if len(parts) > 1 and not 1 <= int(parts[1]) <= 12:
        raise invalid()
    if len(parts) > 2 and not 1 <= int(parts[2]) <= calendar.monthrange(year, int(parts[1]))[1]:
        raise invalid()
    if len(parts) > 3 and int(parts[3]) > 23:
        raise invalid()
    if len(parts) > 4 and int(parts[4]) > 59:
        raise invalid()
    if len(parts) > 5 and int(parts[5]) > 59:
        raise invalid()
    return parts, fraction, offset


def _ref_datetime(value, field, tz=None):
    if not value or not value.strip():
        return None
    parts, fraction, offset = _ref_parse_dtm(value, field)
    if len(parts) <= 3:
        return "-".join(parts[:3])
    offset = offset or tz
    if offset is None:
        return "-".join(parts[:3])
    hh, mm, ss = (parts + ["00", "00"])[3:6]
    frac = f".{fraction}" if fraction else ""
    return f"{'-'.join(parts[:3])}T{hh}:{mm}:{ss}{frac}{offset}"


def _ref_date(value, field):
    if not value or not value.strip():
        return None
    return "-".join(_ref_parse_dtm(value, field)[0][:3])


def _ref_instant(value, field, tz=None):
    if not value or not value.strip():
        return None
    parts, _, offset = _ref_parse_dtm(value, field)
    if len(parts) < 4 or not (offset or tz):
        return None
    return _ref_datetime(value, field, tz)


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except RecordError as exc:
        return ("error", exc.code, exc.reason)


_DTM_LIKE = st.one_of(
    st.text("0123456789+-. \u00b2\u0663", max_size=24),
    st.builds(lambda d, t, f, z: d + t + f + z,
              st.sampled_from(["2024", "202402", "20240229", "20230229", "19000229", "20001231", "00000101",
                               "20241301"]),
              st.sampled_from(["", "12", "1230", "123045", "2460", "235960", "1"]),
              st.sampled_from(["", ".1", ".1234", ".", ".x"]),
              st.sampled_from(["", "+0800", "-0500", "+1400", "+1401", "-1500", "+08", "+08:00", "+0860"])),
)


@settings(max_examples=600, deadline=None)
@given(value=_DTM_LIKE, tz=st.sampled_from([None, "+08:00", "-05:00", ""]), field=st.sampled_from(["PID-7", "OBX-14"]))
def test_memoised_dtm_equals_parsing_every_time(value, tz, field):
    for _ in range(2):  # the second call answers from the memo
        assert _outcome(dt.fhir_datetime, value, field, tz) == _outcome(_ref_datetime, value, field, tz)
        assert _outcome(dt.fhir_date, value, field) == _outcome(_ref_date, value, field)
        assert _outcome(dt.fhir_instant, value, field, tz) == _outcome(_ref_instant, value, field, tz)
