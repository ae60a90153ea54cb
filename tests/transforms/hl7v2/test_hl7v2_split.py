"""split_messages: framing, separators, BOM, batches, charsets, junk."""

from __future__ import annotations

from transforms.hl7v2 import parse_message, split_messages

A = "MSH|^~\\&|S|F|R|RF|20240101||ADT^A01|1|P|2.5.1\rPID|1||M1^^^H^MR||Doe^Jane"
B = "MSH|^~\\&|S|F|R|RF|20240101||ADT^A08|2|P|2.5.1\rPID|1||M2^^^H^MR||Roe^Ann"


def test_single_message_cr():
    assert split_messages(A.encode()) == [A]


def test_lf_and_crlf_separators_are_normalised_to_cr():
    assert split_messages(A.replace("\r", "\n").encode()) == [A]
    assert split_messages(A.replace("\r", "\r\n").encode()) == [A]


def test_mixed_separators_and_blank_lines():
    data = (A.replace("\r", "\r\n") + "\n\n" + B.replace("\r", "\n") + "\r").encode()
    assert split_messages(data) == [A, B]


def test_utf8_bom_is_dropped():
    assert split_messages(b"\xef\xbb\xbf" + A.encode()) == [A]


def test_several_messages_start_at_each_msh():
    assert split_messages(f"{A}\r{B}\r".encode()) == [A, B]


def test_batch_envelopes_are_dropped_messages_kept():
    data = f"FHS|^~\\&|S\rBHS|^~\\&|S\r{A}\r{B}\rBTS|2\rFTS|1\r".encode()
    assert split_messages(data) == [A, B]


def test_mllp_framing():
    data = b"\x0b" + A.encode() + b"\x1c\r" + b"\x0b" + B.encode() + b"\r\x1c\r"
    assert split_messages(data) == [A, B]


def test_junk_before_first_msh_is_dropped():
    assert split_messages(b"export of 2024-01-01\r\nrows: 1\r\n" + A.encode()) == [A]


def test_comment_lines_of_test_corpora_are_dropped():
    data = f"/*\n * examples\n */\n{A}\n// second\n{B}\n".replace("\r", "\n").encode()
    assert split_messages(data) == [A, B]


def test_no_msh_is_returned_whole_for_quarantine():
    assert split_messages(b"not a message") == ["not a message"]
    assert split_messages(b"") == []
    assert split_messages(b"\r\n\r\n") == []


def _with_msh18(charset: str, name: str) -> str:
    return f"MSH|^~\\&|S|F|R|RF|20240101||ADT^A01|1|P|2.5.1||||||{charset}\rPID|1||M1^^^H^MR||{name}"


def test_gb18030_decoded_per_msh18():
    text = _with_msh18("GB18030", "王^小明")
    [out] = split_messages(text.encode("gb18030"))
    assert parse_message(out).segment("PID").field(5).component(1) == "王"
    assert out == text


def test_gb18030_spelled_as_in_table_0211():
    text = _with_msh18("GB 18030-2000", "张^伟")
    assert split_messages(text.encode("gb18030")) == [text]


def test_latin1_per_msh18():
    text = _with_msh18("8859/1", "Müller^Jürgen")
    assert split_messages(text.encode("latin-1")) == [text]


def test_unicode_utf8_per_msh18():
    text = _with_msh18("UNICODE UTF-8", "Łukasz^Ørsted")
    assert split_messages(text.encode("utf-8")) == [text]


def test_undeclared_charset_falls_back_to_utf8_then_latin1():
    text = _with_msh18("", "Müller^J")
    assert split_messages(text.encode("utf-8")) == [text]
    assert split_messages(text.encode("latin-1")) == [text]


def test_wrong_declaration_falls_back_instead_of_raising():
    text = _with_msh18("ASCII", "Müller^J")
    assert split_messages(text.encode("utf-8")) == [text]


def test_arbitrary_bytes_never_raise():
    for data in (b"\x00\xff\xfe", b"MSH", b"MSH|", b"\x0b\x1c", bytes(range(256)), b"MSH|^~\\&|" * 1000):
        assert isinstance(split_messages(data), list)
