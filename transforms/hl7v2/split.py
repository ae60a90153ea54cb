"""Cut one delivered file into HL7 v2 message texts.

Interfaces deliver in many shapes: MLLP frames captured to disk, FHS/BHS batches, one message per file
or hundreds, CR, LF or CRLF between segments, a UTF-8 byte-order mark, a banner before the first
message. Splitting works on bytes because the character set is a property of each message (MSH-18),
not of the file; segment terminators and ``MSH`` at the start of a line are safe to find in bytes for
every character set HL7 allows for 8-bit transport (in GB18030 and Big5 the bytes ``|`` ``M`` ``S``
``H`` can be second bytes of a character, but never CR or LF, so a line still starts on a character).

Text that has no MSH at all is returned as one message so that parsing quarantines it: nothing a
hospital delivered disappears without a trace.
"""

from __future__ import annotations

import codecs
import itertools
import re
from typing import Iterator

__all__ = ["split_messages", "split_file_messages", "charset_codec", "BLOCK_BYTES"]

#: bytes `split_file_messages` reads at a time: a split task holds about this much of a file (and the
#: messages of one piece), whatever the file's size
BLOCK_BYTES = 16 * 2**20

_BATCH = (b"FHS", b"BHS", b"BTS", b"FTS")

#: MSH-18 values (HL7 table 0211) -> Python codec. Unknown values fall back to UTF-8 then Latin-1.
_CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/3": "iso8859-3", "8859/4": "iso8859-4",
    "8859/5": "iso8859-5", "8859/6": "iso8859-6", "8859/7": "iso8859-7", "8859/8": "iso8859-8",
    "8859/9": "iso8859-9", "8859/15": "iso8859-15",
    "UNICODE": "utf-8", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UTF8": "utf-8",
    "GB 18030-2000": "gb18030", "GB18030": "gb18030", "GB 18030": "gb18030", "GB2312": "gb18030",
    "GBK": "gb18030", "BIG-5": "big5", "BIG5": "big5", "CNS 11643-1992": "big5",
    "KS X 1001": "euc-kr", "ISO IR87": "iso2022_jp", "ISO IR159": "iso2022_jp_2", "ISO IR14": "shift_jis",
    "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
}


def charset_codec(msh18: str) -> str | None:
    """Python codec for an MSH-18 value, or None when it is empty or unknown."""
    name = msh18.strip().upper()
    if not name:
        return None
    codec = _CHARSETS.get(name)
    if codec is None:
        try:  # senders often write a plain codec name (utf-8, gbk, windows-1252)
            codec = codecs.lookup(name.lower()).name
        except (LookupError, ValueError):  # ValueError: a name with a NUL byte
            return None
    return codec


def _msh18(line: bytes) -> str:
    if len(line) < 4:
        return ""
    sep = line[3:4]
    fields = line.split(sep)
    # fields[0] is "MSH", fields[1] is MSH-2, so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return ""
    rep = fields[1][1:2] if len(fields[1]) > 1 else b"~"
    value = fields[17].split(rep)[0] if rep else fields[17]
    comp = fields[1][:1]
    if comp:
        value = value.split(comp)[0]
    return value.decode("latin-1")


def _decode(lines: list[bytes]) -> str:
    return _decode_joined(b"\r".join(lines), lines[0])


def _decode_joined(raw: bytes, first: bytes) -> str:
    """The text of a message: `raw` its segments joined by CR, `first` the first segment."""
    codec = charset_codec(_msh18(first)) if first.startswith(b"MSH") else None
    for candidate in (codec, "utf-8"):
        if candidate:
            try:
                return raw.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return raw.decode("latin-1")


def _is_msh(line: bytes) -> bool:
    return line.startswith(b"MSH") and len(line) > 3 and not line[3:4].isalnum() and line[3:4] not in b" \t"


def _is_batch(line: bytes) -> bool:
    return line[:3] in _BATCH and (len(line) == 3 or not line[3:4].isalnum())


# A line starting so is indented or blank (bytes.strip() strips \x0c too), a comment, or a batch segment.
_UNPLAIN_START = (b" ", b"\t", b"\x0c", b"//", b"/*", *_BATCH)
_UNPLAIN_LINE = re.compile(rb"\n(?:[ \t\x0c]|//|/\*|FHS|BHS|BTS|FTS)")  # one pass, not one per opener
# A line starting with MSH that `_is_msh` refuses: MSH alone, or followed by a letter, digit, space or tab.
_NOT_MSH = re.compile(rb"MSH(?:[A-Za-z0-9 \t\n]|\Z)")
_NOT_MSH_LINE = re.compile(rb"\nMSH(?:[A-Za-z0-9 \t\n]|\Z)")


def _plain_messages(data: bytes) -> list[bytes] | None:
    """Each message of `data` (lines separated by LF only), segments still separated by LF, when every
    line is plain: no indentation, no whitespace-only line, no comment, no batch segment, and every line
    starting with MSH starts a message. The loop in `split_messages` then keeps exactly the non-empty
    lines from the first MSH on, which whole-buffer operations find at a fraction of the cost of a loop
    round per segment. None for any other file: the loop decides.
    """
    if data.startswith(_UNPLAIN_START) or _UNPLAIN_LINE.search(data) is not None:
        return None
    start = 0 if data.startswith(b"MSH") else data.find(b"\nMSH") + 1
    if start == 0 and not data.startswith(b"MSH"):
        return None  # no message: the loop decides what to keep of the text
    text = data[start:].rstrip(b"\n")  # the loop drops what comes before the first MSH too
    while b"\n\n" in text:  # empty lines: the loop skips them
        text = text.replace(b"\n\n", b"\n")
    if _NOT_MSH.match(text) is not None or _NOT_MSH_LINE.search(text) is not None:
        return None
    bodies = text.split(b"\nMSH")
    return [bodies[0], *[b"MSH" + body for body in bodies[1:]]]


def split_messages(data: bytes) -> list[str]:
    """One file's bytes -> the text of each HL7 v2 message in it, segments separated by CR.

    Never raises: bytes that hold no message come back as one text for `parse_message` to reject.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data:
        return []
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # UTF-16 has NUL bytes between ASCII characters; recode once so the byte scan below works.
        data = data.decode("utf-16", errors="replace").encode("utf-8")
    # MLLP start block (VT) and end block (FS) only ever frame messages: treat them as line breaks.
    data = data.replace(b"\x0b", b"\n").replace(b"\x1c", b"\n").replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    plain = _plain_messages(data)
    if plain is not None:
        return [_decode_joined(message.replace(b"\n", b"\r"), message.split(b"\n", 1)[0]) for message in plain]
    lines = data.split(b"\n")

    messages: list[list[bytes]] = []
    preamble: list[bytes] = []
    in_comment = False
    for line in lines:
        stripped = line.strip()
        if in_comment:
            in_comment = b"*/" not in stripped
            continue
        if not stripped:
            continue
        # Test corpora (hapi's messages.txt) separate messages with // and /* */ comment lines;
        # no segment starts with "/", so dropping them cannot lose a real segment.
        if stripped.startswith(b"//"):
            continue
        if stripped.startswith(b"/*"):
            in_comment = b"*/" not in stripped[2:]
            continue
        line = line.lstrip(b" \t")
        if _is_msh(line):
            messages.append([line])
        elif _is_batch(line):
            continue
        elif messages:
            messages[-1].append(line)
        else:
            preamble.append(line)
    if not messages:
        if any(p.strip(b"\x00 \t") for p in preamble):
            return [_decode(preamble)]
        return []
    return [_decode(m) for m in messages]


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_LINE_BREAKS = b"\r\n\x0b\x1c"


def _line_start(buffer: bytes, at: int) -> bool:
    """Whether a line of `buffer` starts at `at` (a file's BOM is no part of its first line)."""
    return at == 0 or buffer[at - 1] in _LINE_BREAKS or (at == 3 and buffer.startswith(codecs.BOM_UTF8))


def _message_start(buffer: bytes, at: int) -> bool:
    """Whether an unindented line that `_is_msh` takes for a message header starts at `at`."""
    # "MSH" then a line break is a line of its own, which `_is_msh` refuses as too short
    return _line_start(buffer, at) and buffer[at + 3:at + 4] not in _LINE_BREAKS and _is_msh(buffer[at:at + 4])


def _in_comment(buffer: bytes, at: int) -> bool:
    """Whether `split_messages`' line loop is inside a /* comment where `at` starts a line: the last
    line before it that opens one (blanks before the /* allowed) has no */ after its opener."""
    opener = at
    while (opener := buffer.rfind(b"/*", 0, opener)) >= 0:
        start = opener
        while start > 0 and buffer[start - 1] in b" \t\x0c":
            start -= 1
        if _line_start(buffer, start):
            return buffer.find(b"*/", opener + 2, at) == -1
    return False


def _headers_before(buffer: bytes, end: int) -> Iterator[int]:
    """Where the message header lines of `buffer` before `end` start, last first (comments not looked at)."""
    at = end
    while (at := buffer.rfind(b"MSH", 0, at)) >= 0:
        if _message_start(buffer, at):
            yield at


def _cut(buffer: bytes, first: bool) -> int:
    """Where `buffer` may be cut so that `split_messages` of each side gives what it gives of the
    whole: the start of its last message header line, outside a /* comment and, in a file's first
    piece, with a message before it (text before a file's first message is dropped, so the first piece
    must hold one). 0 when there is no such place yet."""
    at = next(_headers_before(buffer, len(buffer)), -1)
    if at <= 0 or _in_comment(buffer, at):
        return 0
    if first:
        earlier = itertools.islice(_headers_before(buffer, at), 100)  # more than that in comments: no cut
        if all(_in_comment(buffer, e) for e in earlier):
            return 0
    return at


def split_file_messages(handle, *, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """`split_messages` of a whole file read from `handle` (binary), `block_bytes` at a time.

    The file is cut at message header lines into pieces of about `block_bytes`, each split as it comes,
    so memory follows the block size, not the file (a hospital's batch file may be gigabytes); the
    messages are those `split_messages` gives for the whole file. A UTF-16 file is read whole: its
    ASCII bytes are not found by a byte scan."""
    buffer = handle.read(block_bytes)
    if buffer.startswith(_UTF16_BOMS):
        yield from split_messages(buffer + handle.read())
        return
    first = True
    while block := handle.read(block_bytes):
        buffer += block
        cut = _cut(buffer, first)
        if cut:
            yield from split_messages(buffer[:cut])
            buffer, first = buffer[cut:], False
    yield from split_messages(buffer)
