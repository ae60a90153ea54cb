"""parse_message: delimiters, numbering, repetitions, components, escapes, errors."""

from __future__ import annotations

import pytest

from transforms.errors import RecordError
from transforms.hl7v2 import message_type, parse_message

from hl7v2_messages import ADT_A01, msg


def test_msh_numbering_follows_the_standard():
    m = parse_message(ADT_A01)
    msh = m.segment("MSH")
    assert msh.field(1).value == "|"
    assert msh.field(2).value == "^~\\&"
    assert msh.field(3).value == "HIS"
    assert msh.field(9).component(2) == "A01"
    assert m.type == "ADT^A01" == message_type(ADT_A01)
    assert m.version == "2.5.1"
    assert m.control_id == "CTRL0001"


def test_repetitions_components_subcomponents():
    m = parse_message(msg("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5",
                          "PID|1||M1^^^HOSP&1.2.3&ISO^MR~N1^^^REG^NI||Doe^Jane"))
    pid = m.segments("PID")[0]
    reps = pid.field(3).repetitions
    assert [r.value for r in reps] == ["M1", "N1"]
    assert reps[0].component(4, 2) == "1.2.3"
    assert reps[1].component(5) == "NI"
    assert pid.field(5).component(2) == "Jane"
    assert pid.field(99).value == "" and pid.field(3).component(42) == ""


def test_custom_delimiters_from_msh():
    m = parse_message("MSH#*!?%#A#B#C#D#20240101##ADT*A08#1#P#2.4\rPID#1##M1*x*y%z!M2")
    assert m.type == "ADT^A08"
    f = m.segment("PID").field(3)
    assert [r.value for r in f.repetitions] == ["M1", "M2"]
    assert f.component(3, 2) == "z"


def test_escape_sequences():
    m = parse_message(msg("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5",
                          "OBX|1|FT|X||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41\\\\H\\bold\\N\\"))
    assert m.segment("OBX").field(5).value == "a|b^c&d~e\\f\ngAbold"


def test_unknown_or_unterminated_escape_is_kept():
    m = parse_message(msg("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5", "NTE|1||C:\\Q\\x and \\tail"))
    assert m.segment("NTE").field(3).value == "C:\\Q\\x and \\tail"


def test_explicit_null_is_empty():
    m = parse_message(msg("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5", 'PID|1||M1||""^""'))
    assert m.segment("PID").field(5).component(1) == ""


def test_z_segments_are_kept():
    m = parse_message(msg("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5", "ZPI|1|custom^value"))
    assert m.segment("ZPI").field(2).component(2) == "value"


def test_wrapped_line_is_kept_in_previous_field():
    m = parse_message("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rOBX|1|TX|X||first line\rsecond line")
    assert m.segment("OBX").field(5).value == "first line\nsecond line"


def test_lf_separators_and_bom_accepted():
    assert parse_message("\ufeff" + ADT_A01.replace("\r", "\n")).type == "ADT^A01"


@pytest.mark.parametrize("text", [
    "", "hello", "PID|1", "MSH", "MSH|", "MSH|^~\\&", "MSH|^|||||||ADT^A01", "MSHH0\r",
    "MSH|0000|||||||00|||2.8", "MSH a^~\\&|", "MSH|^^~\\&|A|B|C|D|E||ADT^A01",
    "MSH|^~\\&|A|B|C|D|E|F", "MSH|^~\\&|A|B|C|D|E|F||1|P|2.5",
])
def test_non_messages_raise_parse(text):
    with pytest.raises(RecordError) as err:
        parse_message(text)
    assert err.value.code == "PARSE"


def test_tolerated_header_variants():
    # doubled escape (JSON-escaped templates) and a v2.1 header without a sub-component character
    assert parse_message("MSH|^~\\\\&|A|B|C|D|E||ADT^A01|1|P|2.6").type == "ADT^A01"
    m = parse_message("MSH|^~\\|A|B|C|D|E||BAR^P01|1|P|2.1\rPID|||1&2")
    assert m.segment("PID").field(3).component(1, 2) == "2"
