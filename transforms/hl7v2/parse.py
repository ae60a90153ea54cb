"""Parse one HL7 v2 message (ER7, "pipe" encoding) into segments, fields, repetitions and components.

Delimiters come from MSH-1/MSH-2 of each message, so any encoding characters a sender picked work.
Fields are split eagerly into their raw text but decoded lazily: a mapping reads a dozen fields of a
message with hundreds, and the pipeline parses millions of messages.

Numbering follows the standard: fields, components and sub-components are 1-based and MSH-1 is the
field separator itself, so ``msg.segment("MSH").field(9)`` is the message type in every version.

Everything here is plain string slicing with no regular expressions that can backtrack, so any input
(including the fuzzer-made files of the nHapi corpus) is handled in time linear in its length;
the only exception raised is `RecordError` with code ``PARSE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from transforms.errors import RecordError

__all__ = ["Delimiters", "Message", "Segment", "Field", "Repetition", "parse_message", "unescape"]

#: HL7 "explicit null": the sender says the value was deleted. Mappings treat it as absent.
NULL = '""'


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


def _is_delimiter_char(ch: str) -> bool:
    # Letters, digits and white space would make ordinary content ambiguous; the standard forbids them.
    return not (ch.isalnum() or ch.isspace()) and ch.isprintable()


def _delimiters(header: str) -> Delimiters:
    if len(header) < 8 or not header.startswith("MSH"):
        raise RecordError("PARSE", "MSH segment is truncated (no MSH-1/MSH-2)")
    sep = header[3]
    end = header.find(sep, 4)
    return _delimiters_of(sep, header[4:] if end < 0 else header[4:end])


# Memoised: a feed sends the same MSH-1/MSH-2 in every message. Only valid delimiter sets are kept
# (an exception is not cached), so the keys are a handful of short punctuation strings.
@lru_cache(maxsize=256)
def _delimiters_of(sep: str, enc: str) -> Delimiters:
    if not _is_delimiter_char(sep):
        raise RecordError("PARSE", "MSH-1 field separator is not a valid delimiter")
    # MSH-2 holds component, repetition, escape, sub-component and (v2.7+) truncation characters.
    # Two sender habits are tolerated: a doubled escape character (from JSON-escaped templates) and
    # v2.1-era headers without a sub-component character (which then gets the standard "&").
    if len(enc) == 5 and enc[2] == enc[3]:
        enc = enc[:3] + enc[4:]
    if len(enc) == 3 and "&" not in sep + enc:
        enc += "&"
    if not 4 <= len(enc) <= 5:
        raise RecordError("PARSE", "MSH-2 encoding characters must be 4 or 5 characters")
    chars = sep + enc
    if len(set(chars)) != len(chars) or not all(_is_delimiter_char(c) for c in enc):
        raise RecordError("PARSE", "MSH-2 encoding characters are repeated or not valid delimiters")
    return Delimiters(sep, enc[0], enc[1], enc[2], enc[3])


def _decode_hex(hexdigits: str) -> str | None:
    if len(hexdigits) % 2 or not hexdigits:
        return None
    try:
        raw = bytes.fromhex(hexdigits)
    except ValueError:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def unescape(text: str, d: Delimiters) -> str:
    """Resolve escape sequences in one (sub-)component: delimiters, hex data, line breaks.

    Formatting (\\H\\, \\N\\, \\.sp\\ ...) and character-set switches are dropped; an unknown or
    unterminated sequence is kept literally, so nothing the sender wrote is lost.
    """
    esc = d.escape
    if esc not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end < 0:
            out.append(text[i:])
            break
        seq = text[i + 1:end]
        replacement = _ESCAPES.get(seq)
        if replacement is not None:
            out.append(getattr(d, replacement) if replacement in _DELIM_NAMES else replacement)
        elif seq[:1] == "X" and (decoded := _decode_hex(seq[1:])) is not None:
            out.append(decoded)
        elif seq[:1] in ("C", "M", "Z") or seq.startswith((".sp", ".in", ".ti", ".sk", ".fi", ".nf", ".ce")):
            if seq.startswith(".sp"):
                out.append("\n")
        else:
            out.append(text[i:end + 1])
        i = end + 1
    return "".join(out)


_DELIM_NAMES = {"field", "component", "subcomponent", "repetition", "escape"}
_ESCAPES = {
    "F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape",
    ".br": "\n", "H": "", "N": "",
}


class Repetition:
    """One occurrence of a field: components of sub-components, each unescaped."""

    # Mappings read component(i) (sub-component 1) a hundred times per message and rarely anything
    # else, so that is kept apart (`_first`, the explicit null already made "") from the full
    # component/sub-component split (`_subs`), which is only built when something asks for it.
    __slots__ = ("_raw", "_d", "_first", "_subs")

    def __init__(self, raw: str, d: Delimiters):
        self._raw = raw
        self._d = d
        self._first: list[str] | None = None
        self._subs: list[list[str]] | None = None

    @property
    def raw(self) -> str:
        return self._raw

    def _split_first(self) -> list[str]:
        raw, d = self._raw, self._d
        if d.escape not in raw and d.subcomponent not in raw:
            # Nothing to unescape and no sub-components: each component is its own sub-component 1,
            # exactly what the general split below gives, without a list per component.
            first = raw.split(d.component)
            if NULL in raw:  # only then can a component be the explicit null
                first = ["" if c == NULL else c for c in first]
        else:
            first = ["" if s[0] == NULL else s[0] for s in self._parts()]
        self._first = first
        return first

    def _parts(self) -> list[list[str]]:
        if self._subs is None:
            d = self._d
            self._subs = [
                [unescape(sub, d) for sub in comp.split(d.subcomponent)]
                for comp in self._raw.split(d.component)
            ]
        return self._subs

    def _set_literal(self, raw: str) -> None:
        """MSH-1/MSH-2: the delimiters themselves, one component, neither split nor unescaped."""
        self._subs = [[raw]]
        self._first = ["" if raw == NULL else raw]

    def component(self, i: int, sub: int = 1) -> str:
        """Component ``i`` (sub-component ``sub``), 1-based; "" when absent or the explicit null."""
        first = self._first
        if first is None:
            first = self._split_first()
        if sub == 1:
            return first[i - 1] if 0 < i <= len(first) else ""
        if self._subs is None:
            return ""  # no sub-component character in the text: every component has only sub-component 1
        parts = self._subs
        if i < 1 or i > len(parts) or sub < 1 or sub > len(parts[i - 1]):
            return ""
        value = parts[i - 1][sub - 1]
        return "" if value == NULL else value

    def subcomponents(self, i: int) -> list[str]:
        parts = self._parts()
        return list(parts[i - 1]) if 1 <= i <= len(parts) else []

    @property
    def components(self) -> list[str]:
        first = self._first
        if first is None:
            first = self._split_first()
        return list(first)

    def padded(self, n: int) -> list[str]:
        """Components 1..n at least, each as `component` gives it (sub-component 1, null made ""), ""
        past the last one: one call for a data type read component by component. Read-only: the
        list may be this repetition's own."""
        first = self._first
        if first is None:
            first = self._split_first()
        short = n - len(first)
        return first + [""] * short if short > 0 else first

    @property
    def value(self) -> str:
        first = self._first
        if first is None:
            first = self._split_first()
        return first[0]  # a split gives at least one component

    def text(self) -> str:
        """The whole repetition decoded as text (components joined with the component character)."""
        return unescape(self._raw, self._d) if self._raw != NULL else ""

    def __bool__(self) -> bool:
        return bool(self._raw) and self._raw != NULL


class Field(Repetition):
    """A field: its repetitions; component access reads the first repetition.

    The field is itself its first repetition (component access reads ``_raw``, the first repetition's
    text): most fields have one repetition, and a message's mappings touch dozens of fields, so this
    saves a second object per field. ``raw`` is still the whole field.
    """

    __slots__ = ("_whole", "_reps")

    def __init__(self, raw: str, d: Delimiters, split: bool = True):
        self._whole = raw
        self._d = d
        self._first = None
        self._subs = None
        if split and raw and d.repetition in raw:
            parts = raw.split(d.repetition)
            self._raw = parts[0]
            self._reps: list[Repetition] | None = [Repetition(p, d) for p in parts]
        else:  # one repetition, the whole field: the field itself stands for it
            self._raw = raw
            self._reps = None

    @property
    def raw(self) -> str:
        return self._whole

    @property
    def repetitions(self) -> list[Repetition]:
        """Non-empty repetitions only: an empty one carries nothing a mapping can use."""
        reps = self._reps
        if reps is None:
            return [self] if self._raw and self._raw != NULL else []
        return [r for r in reps if r]

    @property
    def first(self) -> Repetition | None:
        """The first non-empty repetition (``repetitions[0]``), or None."""
        reps = self._reps
        if reps is None:
            return self if self._raw and self._raw != NULL else None
        for r in reps:
            if r:
                return r
        return None

    def __bool__(self) -> bool:
        reps = self._reps
        if reps is None:
            return bool(self._raw) and self._raw != NULL
        return any(reps)


class Segment:
    """One segment; `field(n)` uses the standard's numbering (for MSH, MSH-1 is the separator)."""

    __slots__ = ("name", "_fields", "_d", "_cache", "_empty")

    def __init__(self, name: str, fields: list[str], d: Delimiters, empty: Field | None = None):
        self.name = name
        self._fields = fields  # _fields[n] is field n for all segments (MSH included, see _split)
        self._d = d
        self._cache: dict[int, Field] = {}
        # Half the fields a mapping reads are empty: they all share one empty Field of the message
        # (a Field is never changed once made, and an empty one decodes to "" whatever is asked).
        self._empty = empty if empty is not None else Field("", d)

    def field(self, n: int) -> Field:
        f = self._cache.get(n)
        if f is None:
            fields = self._fields
            raw = fields[n] if 0 < n < len(fields) else ""
            if not raw:  # checked first: half the fields a mapping asks for are empty
                return self._empty
            if n < 3 and self.name == "MSH":
                # MSH-1 and MSH-2 are the delimiters themselves and must not be split or unescaped.
                f = Field(raw, self._d, split=False)
                f._set_literal(raw)
            else:
                f = Field(raw, self._d)
            self._cache[n] = f
        return f

    def value(self, n: int) -> str:
        """``field(n).value``: component 1 of the first repetition. Most fields a mapping reads whole are
        plain text (a code, an id, a date); those are returned as they are, without making a Field."""
        f = self._cache.get(n)
        if f is None:
            fields = self._fields
            raw = fields[n] if 0 < n < len(fields) else ""
            if not raw:
                return ""
            d = self._d
            if (d.component not in raw and d.repetition not in raw and d.escape not in raw
                    and d.subcomponent not in raw and raw != NULL and not (self.name == "MSH" and n in (1, 2))):
                return raw  # nothing to split, unescape or null: the value is the text
            f = self.field(n)
        return f.value

    def __len__(self) -> int:
        return len(self._fields) - 1

    @property
    def fields(self) -> tuple[str, ...]:
        """The raw fields as split (index 0 is the segment name): with `delimiters`, all a segment is."""
        return tuple(self._fields)

    @property
    def delimiters(self) -> Delimiters:
        return self._d

    @property
    def raw(self) -> str:
        """The segment as sent (after line joining), for keys; never for messages or logs."""
        return self._d.field.join(self._fields)

    def __repr__(self) -> str:  # never shows values: they may be PHI
        return f"<Segment {self.name} with {len(self)} fields>"


class Message:
    """A parsed message: its delimiters and segments in order."""

    def __init__(self, segments: list[Segment], delimiters: Delimiters):
        self._segments = segments
        self.delimiters = delimiters
        self._type: str | None = None  # MSH-9 as ``ADT^A01``; the mappings ask for it per segment

    @property
    def all_segments(self) -> list[Segment]:
        return list(self._segments)

    def segments(self, name: str) -> list[Segment]:
        return [s for s in self._segments if s.name == name]

    def segment(self, name: str) -> Segment | None:
        for s in self._segments:
            if s.name == name:
                return s
        return None

    @property
    def msh(self) -> Segment:
        return self._segments[0]

    @property
    def type(self) -> str:
        """Message code and trigger event, e.g. ``ADT^A01`` (``ADT`` when the trigger is missing)."""
        t = self._type
        if t is None:
            f = self.msh.field(9)
            code, trigger = f.component(1).strip().upper(), f.component(2).strip().upper()
            t = self._type = f"{code}^{trigger}" if trigger else code
        return t

    @property
    def version(self) -> str:
        return self.msh.field(12).component(1).strip()

    @property
    def control_id(self) -> str:
        return self.msh.value(10).strip()

    def __repr__(self) -> str:
        return f"<Message {self.type} with {len(self._segments)} segments>"


# Memoised: a message is a dozen lines of a few segment names. Wrapped text lines are asked about too,
# so a key can be three characters of free text (possibly PHI): bounded, in memory only, never logged.
@lru_cache(maxsize=1024)
def _valid_segment_name(name: str) -> bool:
    return (
        len(name) == 3 and name.isascii() and name[0].isalpha()
        and all(c.isupper() or c.isdigit() for c in name)
    )


def _split_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [line for line in text.split("\r") if line.strip()]


def parse_message(text: str) -> Message:
    """Parse one message; raise `RecordError` (PARSE) for anything that is not an HL7 v2 message."""
    if not isinstance(text, str):
        raise RecordError("PARSE", "message is not text")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.lstrip("\x0b \t\r\n")
    if not text.startswith("MSH"):
        raise RecordError("PARSE", "message does not start with an MSH segment")
    lines = _split_lines(text)
    d = _delimiters(lines[0])
    segments: list[Segment] = []
    empty = Field("", d)
    sep = d.field
    for line in lines:
        line = line.rstrip("\x1c")
        name = line[:3]
        if _valid_segment_name(name) and line[3:4] in (sep, ""):  # not line[3:]: that copies the line
            parts = line.split(sep)
            if name == "MSH":
                # "MSH|^~\&|A" splits to [MSH, ^~\&, A]; insert MSH-1 so that index == field number.
                parts = [name, sep] + parts[1:]
            segments.append(Segment(name, parts, d, empty))
        elif segments:
            # A line that is not a segment is text the sender wrapped: keep it in the previous field.
            prev = segments[-1]
            prev._fields[-1] = prev._fields[-1] + "\n" + line
            prev._cache.clear()
        else:  # pragma: no cover - the first line starts with MSH
            raise RecordError("PARSE", "message does not start with an MSH segment")
    msh = segments[0]
    if msh.name != "MSH" or len(msh) < 9:
        raise RecordError("PARSE", "MSH segment is truncated (fewer than 9 fields)")
    if not msh.field(9).component(1).strip():
        raise RecordError("PARSE", "MSH-9 message type is empty")
    return Message(segments, d)
