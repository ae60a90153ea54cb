"""JSON text on the per-record hot paths: msgspec's speed, the standard library's exact results.

`dumps(obj)` is ``json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))`` and
`loads(text)` is ``json.loads(text)``: the same text, the same objects, the same exceptions. msgspec does
the work (per FHIR resource, dumps about 3x and loads about 2.5x cheaper); where it would disagree with
the standard library, the standard library does it instead. The disagreements, each pinned by a test in
tests/transforms/test_fastjson.py:

dumps
- floats whose ``repr`` has an exponent, i.e. below 1e-4 or from 1e16 up in magnitude: msgspec writes
  ``1e16``, ``1e-7``, ``0.00001`` where json writes ``1e+16``, ``1e-07``, ``1e-05``;
- NaN and the infinities: msgspec writes ``null``, json ``NaN``, ``Infinity``, ``-Infinity``;
- msgspec raises where json does not: non-str dict keys (json writes int, float, bool and None keys as
  strings), lone surrogates in strings, subclasses of str, int and float; and integers beyond 64 bits
  have no msgpack form (used to find the floats). Circular containers: json's ValueError, not msgspec's.
loads
- msgspec refuses what json accepts: ``NaN``, ``Infinity``, numbers beyond the float range (``1e400``
  is inf), lone surrogate escapes, bytes with a BOM or in UTF-16/32, raw surrogates in a str;
- invalid JSON: msgspec's own error; json then raises its `json.JSONDecodeError` (message, position).

`dumps` takes JSON data (dicts, lists, tuples, str, int, float, bool, None), which is all its callers
pass. Other objects that json.dumps refuses with TypeError but msgspec can encode (datetime, date,
UUID, Decimal, bytes, set, dataclass, Enum) are written by msgspec instead of raising: ruling them out
would need a walk over every value, which costs as much as the stdlib encoder.
"""

from __future__ import annotations

import json
from struct import Struct

import msgspec

__all__ = ["dumps", "dumps_utf8", "loads"]

_encode = msgspec.json.Encoder(order="sorted").encode
_encode_msgpack = msgspec.msgpack.Encoder().encode
_decode = msgspec.json.Decoder().decode
_FLOAT64 = b"\xcb"  # msgpack's float 64 marker, followed by the 8 bytes of the double; msgspec writes every float so
_unpack_double = Struct(">d").unpack_from


def _floats_as_repr(obj) -> bool:
    """Whether msgspec would write every float in `obj` the way json.dumps does (`float.__repr__`).

    They agree exactly when repr needs no exponent (0, or 1e-4 <= |x| < 1e16). Finding the floats in
    the msgpack form is a C-speed byte search, far cheaper than a walk over the object in Python. The
    marker byte can also occur inside a string or an integer; such a false hit is read as a float too,
    which at worst sends the object to the stdlib encoder.
    """
    packed = _encode_msgpack(obj)
    end = len(packed) - 8  # a real marker has its 8 bytes after it
    at = packed.find(_FLOAT64, 0, end)
    while at >= 0:
        value = _unpack_double(packed, at + 1)[0]
        if value != 0.0 and not 1e-4 <= abs(value) < 1e16:  # NaN fails the range test too
            return False
        at = packed.find(_FLOAT64, at + 1, end)
    return True


def dumps(obj, *, plain_floats: bool = False) -> str:
    """``json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))``, faster.

    `plain_floats`: the caller knows that every float in `obj` is 0 or has 1e-4 <= |x| < 1e16 (as a
    compiled `transforms.fast_validate` check finds), so the search for other floats is skipped.
    """
    text = _msgspec_text(obj, plain_floats)
    if text is not None:
        return text.decode("utf-8")
    return _std_dumps(obj)


def dumps_utf8(obj, *, plain_floats: bool = False) -> bytes:
    """`dumps(obj)` encoded as UTF-8: msgspec's own bytes, for a caller that writes them into an Arrow
    string column, which would otherwise encode the decoded text again (per FHIR resource 0.3-0.7 us to
    decode and 0.5-1.5 us more for `pa.array` to take a str than bytes). Raises UnicodeEncodeError
    where the text holds a lone surrogate, which UTF-8 cannot hold."""
    text = _msgspec_text(obj, plain_floats)
    if text is not None:
        return text
    return _std_dumps(obj).encode("utf-8")


def _std_dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _msgspec_text(obj, plain_floats: bool) -> bytes | None:
    """msgspec's UTF-8 text of `obj` where it is json's text byte for byte; None where json must write it."""
    try:
        text = _encode(obj)
        if plain_floats or _floats_as_repr(obj):
            return text
    except Exception:  # something msgspec refuses (see the module docstring): json decides, and raises its own error
        pass
    return None


def loads(text):
    """``json.loads(text)``, faster for str and bytes."""
    if type(text) is str or type(text) is bytes:  # json.loads refuses memoryview, msgspec would not
        try:
            return _decode(text)
        except Exception:  # invalid for msgspec: json either accepts it (NaN, BOM, ...) or raises its own error
            pass
    return json.loads(text)
