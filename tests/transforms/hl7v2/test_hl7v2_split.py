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


_LINE_KINDS = [
    b"MSH|^~\\&|S|F|R|RF|20240101||ADT^A01|{n}|P|2.5.1", b"MSH|^~\\&|S|F|||||ORU^R01|{n}|P|2.5.1|||||UNICODE UTF-8",
    b"PID|1||M{n}^^^H^MR||Doe^Jane", b"OBX|1|NM|718-7^Hgb^LN||13.{n}|g/dL", b"PV1|1|I", b"", b"   ", b"\t",
    b"  PID|2||X", b"// comment {n}", b"/* block", b"still comment */", b"FHS|^~\\&", b"BHS|^~\\&", b"BTS|1", b"FTS|1",
    b"MSH", b"MSHX|not a header", b"MSH |x", b"junk before {n}", b"EVN|A01|2024", b"OBX|2|ST|x||caf\xc3\xa9", b"\x0c",
    b"NTE|1||trailing spaces   ", b"\x00",
]


def test_the_whole_buffer_split_gives_what_the_line_loop_gives(monkeypatch):
    """split_messages cuts plain files (every line a segment) with whole-buffer operations; on random
    files of plain and awkward lines it must give exactly what its line-by-line loop gives."""
    import random

    from transforms.hl7v2 import split as split_module

    rng = random.Random(7)
    plain = [k for k in _LINE_KINDS if k[:3] in (b"MSH", b"PID", b"OBX", b"PV1", b"EVN", b"NTE")
             and k not in (b"MSH", b"MSH |x", b"MSHX|not a header")] + [b""]  # empty lines are plain too
    files = []
    for n in range(1500):
        kinds = plain if n % 2 else _LINE_KINDS  # half the files plain: the fast path must take those
        lines = [rng.choice(kinds).replace(b"{n}", str(n).encode()) for _ in range(rng.randint(0, 12))]
        files.append(rng.choice([b"\n", b"\r", b"\r\n"]).join(lines) + rng.choice([b"", b"\n", b"\r\n\r\n"]))
    fast = [split_module.split_messages(data) for data in files]
    taken = sum(split_module._plain_messages(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")) is not None for data in files)
    monkeypatch.setattr(split_module, "_plain_messages", lambda data: None)
    assert [split_module.split_messages(data) for data in files] == fast
    assert taken > 400  # the fast path was really exercised


def test_an_msh18_with_a_nul_byte_is_an_unknown_charset_not_an_error():
    message = "MSH|^~\\&|S|F|R|RF|20240101||ADT^A01|1|P|2.5.1||||||utf\x008\rPID|1||M1^^^H^MR||Doe^Jane"
    assert split_messages(message.encode()) == [message]


def _random_files(seed: int, count: int, most_lines: int) -> list[bytes]:
    import random

    rng = random.Random(seed)
    files = []
    for n in range(count):
        lines = [rng.choice(_LINE_KINDS).replace(b"{n}", str(n).encode()) for _ in range(rng.randint(0, most_lines))]
        data = rng.choice([b"\n", b"\r", b"\r\n", b"\x1c\r\x0b"]).join(lines) + rng.choice([b"", b"\n", b"\r\n\r\n", b"\x1c\r"])
        files.append(rng.choice([b"", b"", b"\xef\xbb\xbf", b"\x0b"]) + data)
    return files


def test_a_file_read_in_blocks_gives_the_messages_of_the_whole_file():
    """split_file_messages cuts a file at message headers into pieces of about a block: on random files of
    plain and awkward lines (comments around headers, junk before the first message, batch segments,
    indented and false headers, MLLP frames, a BOM), every block size gives split_messages' messages."""
    import io

    from transforms.hl7v2 import split_file_messages

    files = _random_files(11, 600, 40) + [
        f"{A}\r{B}\r".encode(), b"\xef\xbb\xbf" + A.encode() + b"\r" + B.encode(),
        b"junk before\r\n" + A.encode() + b"\r\n" + B.encode(), f"/*\r{A}\r*/\r{B}".encode(),
        (A + "\r" + B).encode("utf-16"), b"not a message", b"",
    ]
    cut = 0
    for data in files:
        whole = split_messages(data)
        for block in (1, 7, 64, 500):
            assert list(split_file_messages(io.BytesIO(data), block_bytes=block)) == whole, (data, block)
        cut += len(whole) > 1
    assert cut > 150  # many files had something to cut


def test_a_file_is_read_a_block_at_a_time():
    """The first messages come out after a few blocks of a big file are read, not after all of it."""
    import io

    from transforms.hl7v2 import split_file_messages

    data = b"\r".join(f"{A}|{n}".encode() for n in range(2000))

    class Recorded(io.BytesIO):
        def read(self, size=-1):
            chunk = super().read(size)
            reads.append(len(chunk))
            return chunk

    reads: list[int] = []
    messages = split_file_messages(Recorded(data), block_bytes=4096)
    first = next(messages)
    assert first == f"{A}|0" and sum(reads) <= 3 * 4096 < len(data)
    assert [first, *messages] == split_messages(data)
    assert max(reads) <= 4096
