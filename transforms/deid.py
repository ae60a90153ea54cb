"""curate, part 2: flat view rows -> de-identified rows, by the policy in conf/deid.yaml.

Input columns: the columns a table's policy names (view columns plus hospital and person_key).
Output columns: one per policy line that is not ``drop``, named by its ``as`` (else the input name), in
policy order. Anything the policy does not name is dropped: the policy is an allow-list, and ``drop``
lines only document on purpose what would be dropped anyway (free text, names, street lines, ...).

Actions (see conf/deid.yaml): keep, drop, pseudonym (HMAC-SHA256, 32 hex chars), date_shift (a date
moved by a per-person number of days derived from HMAC(key, person_key)), year, month, birth_year,
age_band, postal3, region.

`deidentify` runs every action as built-in column expressions (keyed hashing included), so the curated
tables are made inside the engine without a Python pass per row; `_apply` is the per-value reference
the tests compare it with (see the comment above `hmac_pads` for how the key reaches the engine).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = ["Policy", "deidentify", "pseudonym", "shift_days", "ACTIONS", "output_columns", "PERSON_COLUMN",
           "hmac_pads", "with_key", "hmac_hex"]

ACTIONS = ("keep", "drop", "pseudonym", "date_shift", "year", "month", "birth_year", "age_band", "postal3", "region")

#: The column whose value a date shift is keyed on, so every date of one person moves by the same days.
PERSON_COLUMN = "person_key"


@dataclass(frozen=True)
class Policy:
    """The de-identification settings every table shares."""

    key: bytes
    as_of: date
    top_code: int = 90
    postal_keep: int = 3
    restricted_prefixes: tuple[str, ...] = ()
    regions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (region id, postal prefixes)
    shift_range: int = 30  # date_shift moves dates by -shift_range..+shift_range days

    def region_of(self, postal: str | None) -> str | None:
        if not postal:
            return None
        for region, prefixes in self.regions:
            if any(postal.startswith(p) for p in prefixes):
                return region
        return "other"


def pseudonym(key: bytes, value: str) -> str:
    """Keyed pseudonym: the same key and value give the same 32 hex chars, in any run or hospital."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def shift_days(key: bytes, person: str, shift_range: int) -> int:
    """Days in [-shift_range, +shift_range] for one person: the same for every date of that person.

    A separate HMAC domain ("date-shift|") keeps the shift unrelated to the person's pseudonym.
    """
    if shift_range <= 0:
        return 0
    digest = hmac.new(key, f"date-shift|{person}".encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % (2 * shift_range + 1) - shift_range


#: What `_age` reads: a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, then anything). The same rule
#: is written with engine built-ins in `_age_column`, so both sides agree on every string.
_BIRTH = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")
#: `_shift` moves calendar dates only: the first 10 characters must be YYYY-MM-DD (and a real day).
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: Whitespace trimmed off postal codes: ASCII only, as the engine's trim below (Python's strip() would
#: also remove Unicode spaces, which Spark's functions do not).
_SPACES = " \t\n\r\f\v"


def _age(birth: str, as_of: date) -> int | None:
    match = _BIRTH.match(birth)
    # a month needs both digits where the text is that long (int() would read "5-" as an error too)
    if match is None or (len(birth) >= 7 and match.end() < 7) or (len(birth) >= 10 and match.end() < 10):
        return None
    year = int(birth[:4])
    month = int(birth[5:7]) if len(birth) >= 7 else 1
    day = int(birth[8:10]) if len(birth) >= 10 else 1
    return as_of.year - year - ((as_of.month, as_of.day) < (month, day))


def _shift(text: str, days: int) -> str | None:
    # Only the date part survives: a time of day (and its offset) narrows an event to the minute.
    if not _DAY.fullmatch(text[:10]):
        return None
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:  # not a day of the calendar (2024-02-30)
        return None
    return (day + timedelta(days=days)).isoformat()


def _apply(action: str, value, policy: Policy, person: str | None = None):
    if value is None or value == "":
        return None
    if action == "keep":
        return value
    text = str(value)
    if action == "pseudonym":
        return pseudonym(policy.key, text)
    if action == "date_shift":
        # No person, no consistent shift: publishing the true date would be worse than nothing.
        return _shift(text, shift_days(policy.key, person, policy.shift_range)) if person else None
    if action == "year":
        return text[:4]
    if action == "month":
        return text[:7] if len(text) >= 7 else None
    if action in ("birth_year", "age_band"):
        age = _age(text, policy.as_of)
        if age is None or age < 0:
            return None
        if age >= policy.top_code:
            return None if action == "birth_year" else f"{policy.top_code}+"
        if action == "birth_year":
            return text[:4]
        low = age - age % 5
        return f"{low}-{low + 4}"
    if action == "postal3":
        prefix = text.strip(_SPACES)[: policy.postal_keep]
        return "0" * policy.postal_keep if prefix in policy.restricted_prefixes else prefix
    if action == "region":
        return policy.region_of(text.strip(_SPACES))
    raise ValueError(f"unknown de-identification action {action!r}; known: {', '.join(ACTIONS)}")


def _lines(table_policy: dict) -> list[tuple[str, str, str]]:
    return [(line["column"], line["action"], line.get("as", line["column"])) for line in table_policy["columns"]]


def output_columns(table_policy: dict, input_types: dict[str, str]) -> list[tuple[str, str]]:
    """(name, Spark type) of the de-identified output of one table's policy."""
    out = []
    for column, action, name in _lines(table_policy):
        if action == "drop":
            continue
        out.append((name, input_types.get(column, "string") if action == "keep" else "string"))
    return out


# -- in the engine ---------------------------------------------------------------------------------
#
# De-identification runs as built-in column expressions, not per row in Python: `_apply` above stays the
# reference (and what the naive baseline runs), and tests/transforms/test_deid.py checks with hypothesis
# that both give the same value for the same input.
#
# HMAC-SHA256 (RFC 2104) with built-ins: sha256((K ^ opad) || sha256((K ^ ipad) || message)), K the key
# padded to the 64-byte block. The two padded keys are key material (either gives back the key), so
# they are not written as literals into the expressions, where they would show in EXPLAIN output, in the
# text of analysis errors and in the engine's query logs. They come in as the two binary columns of a
# one-row DataFrame cross-joined (broadcast) to the rows: the Spark Connect plan carries them as the
# bytes of a local relation, sent to the engine with the query (over loopback for the embedded engine;
# use TLS towards a remote cluster) and shown nowhere as text. The trade-off: whoever can read the
# plan on the wire or the engine's memory can read the key, exactly as with the Python path, where the
# key sat in the pickled UDF sent to the same engine.

_IPAD, _OPAD = "_deid_ipad", "_deid_opad"
_BLOCK = 64  # SHA-256 block size in bytes


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(K ^ ipad, K ^ opad) of RFC 2104 for SHA-256."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def with_key(df, key: bytes):
    """`df` plus the two pad columns that `hmac_hex` needs (see the comment above)."""
    from pyspark.sql import functions as F

    pads = df.sparkSession.createDataFrame([hmac_pads(key)], f"{_IPAD} binary, {_OPAD} binary")
    # the one-row side first: Sail's cross join collects its left input and streams the right one, so
    # `df` on the left would be held in memory whole (and lose its partitioning)
    return F.broadcast(pads).crossJoin(df).select(*df.columns, _IPAD, _OPAD)


def hmac_hex(message):
    """HMAC-SHA256 of a string Column (UTF-8) as 64 hex chars, on a DataFrame made by `with_key`."""
    from pyspark.sql import functions as F

    inner = F.unhex(F.sha2(F.concat(F.col(_IPAD), F.encode(message, "UTF-8")), 256))
    return F.sha2(F.concat(F.col(_OPAD), inner), 256)


def _shift_days_column(person, shift_range: int):
    """`shift_days` with built-ins: the first 8 bytes of the HMAC, big-endian, modulo 2r+1, minus r.

    The 64-bit number is taken as two 32-bit halves, (hi * 2^32 + lo) mod m computed as
    ((hi mod m) * (2^32 mod m) + lo mod m) mod m, so nothing overflows a long."""
    from pyspark.sql import functions as F

    if shift_range <= 0:
        return F.lit(0)
    m = 2 * shift_range + 1
    digest = hmac_hex(F.concat(F.lit("date-shift|"), person))
    hi = F.conv(F.substring(digest, 1, 8), 16, 10).cast("long")
    lo = F.conv(F.substring(digest, 9, 8), 16, 10).cast("long")
    return ((hi % m) * (2**32 % m) + lo % m) % m - shift_range


def _age_column(text, as_of: date):
    """`_age` with built-ins: null unless the text starts as a FHIR date (see `_BIRTH`)."""
    from pyspark.sql import functions as F

    n = F.length(text)
    valid = (text.rlike("^[0-9]{4}") & ((n < 7) | F.substring(text, 1, 7).rlike("^[0-9]{4}-[0-9]{2}$"))
             & ((n < 10) | F.substring(text, 1, 10).rlike("^[0-9]{4}-[0-9]{2}-[0-9]{2}$")))
    year = F.substring(text, 1, 4).cast("int")
    month = F.when(n >= 7, F.substring(text, 6, 2).cast("int")).otherwise(F.lit(1))
    day = F.when(n >= 10, F.substring(text, 9, 2).cast("int")).otherwise(F.lit(1))
    before_birthday = (F.lit(as_of.month) < month) | ((F.lit(as_of.month) == month) & (F.lit(as_of.day) < day))
    return F.when(valid, F.lit(as_of.year) - year - F.when(before_birthday, 1).otherwise(0))


def _trimmed(text):
    from pyspark.sql import functions as F

    return F.regexp_replace(text, "^[ \\t\\n\\r\\f\\v]+|[ \\t\\n\\r\\f\\v]+$", "")


def _column(action: str, value, kind: str, policy: Policy, person):
    """The Column that `_apply(action, value, policy, person)` computes row by row."""
    from pyspark.sql import functions as F

    text = value if kind == "string" else value.cast("string")
    empty = value.isNull() | (text == "") if kind == "string" else value.isNull()
    if action == "keep":
        # only a string can be "" (the Python path compares the value itself with "")
        return F.when(~empty, value) if kind == "string" else value
    if action == "pseudonym":
        out = F.substring(hmac_hex(text), 1, 32)
    elif action == "date_shift":
        day = F.substring(text, 1, 10)
        # try_cast: a day not in the calendar (2024-02-30) is null, never an error that would quote it
        real = F.when(day.rlike("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), day.try_cast("date"))
        has_person = person.isNotNull() & (person.cast("string") != "")
        out = F.when(has_person, F.date_add(real, _shift_days_column(person.cast("string"), policy.shift_range)).cast("string"))
    elif action == "year":
        out = F.substring(text, 1, 4)
    elif action == "month":
        out = F.when(F.length(text) >= 7, F.substring(text, 1, 7))
    elif action in ("birth_year", "age_band"):
        age = _age_column(text, policy.as_of)
        top = F.lit(None) if action == "birth_year" else F.lit(f"{policy.top_code}+")
        low = age - age % 5
        kept = F.substring(text, 1, 4) if action == "birth_year" else F.concat(low.cast("string"), F.lit("-"), (low + 4).cast("string"))
        out = F.when(age.isNull() | (age < 0), F.lit(None)).when(age >= policy.top_code, top).otherwise(kept)
    elif action == "postal3":
        prefix = F.substring(_trimmed(text), 1, policy.postal_keep)
        restricted = prefix.isin(*policy.restricted_prefixes) if policy.restricted_prefixes else F.lit(False)
        out = F.when(restricted, F.lit("0" * policy.postal_keep)).otherwise(prefix)
    elif action == "region":
        postal = _trimmed(text)
        out = F.when(postal == "", F.lit(None))
        for region, prefixes in policy.regions:
            if prefixes:
                matches = [F.substring(postal, 1, len(p)) == F.lit(p) for p in prefixes]
                hit = matches[0]
                for m in matches[1:]:
                    hit = hit | m
                out = out.when(hit, F.lit(region))
        out = out.otherwise(F.lit("other"))
    else:
        raise ValueError(f"unknown de-identification action {action!r}; known: {', '.join(ACTIONS)}")
    return F.when(~empty, out).cast("string")


def deidentify(df, table_policy: dict, policy: Policy):
    """Rows of a view -> rows the curated zone may hold (see the module docstring), with built-in
    expressions only (no Python per row)."""
    from pyspark.sql import functions as F

    lines = _lines(table_policy)
    for column, action, _ in lines:
        if action not in ACTIONS:
            raise ValueError(f"unknown de-identification action {action!r} for column {column}; known: {', '.join(ACTIONS)}")
        if column not in df.columns:
            raise ValueError(f"de-identification policy names column {column!r}, which the view does not produce ({', '.join(df.columns)})")
    if any(action == "date_shift" for _, action, _ in lines) and PERSON_COLUMN not in df.columns:
        raise ValueError(f"date_shift needs the {PERSON_COLUMN} column to shift every date of a person alike; the input has none")
    kept = [(column, action, name) for column, action, name in lines if action != "drop"]
    types = dict(df.dtypes)
    keyed = any(action in ("pseudonym", "date_shift") for _, action, _ in kept)
    source = with_key(df, policy.key) if keyed else df
    person = F.col(PERSON_COLUMN) if PERSON_COLUMN in df.columns else F.lit(None).cast("string")
    return source.select(*[_column(action, F.col(column), types[column], policy, person).alias(name)
                           for column, action, name in kept])
