"""curate, part 2: flat view rows -> de-identified rows, by the policy in conf/deid.yaml.

Input columns: the columns a table's policy names (view columns plus hospital and person_key).
Output columns: one per policy line that is not ``drop``, named by its ``as`` (else the input name), in
policy order. Anything the policy does not name is dropped: the policy is an allow-list, and ``drop``
lines only document on purpose what would be dropped anyway (free text, names, street lines, ...).

Actions (see conf/deid.yaml): keep, drop, pseudonym (HMAC-SHA256, 32 hex chars), date_shift (a date
moved by a per-person number of days derived from HMAC(key, person_key)), year, month, birth_year,
age_band, postal3, region.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, timedelta

from transforms.arrow import map_rows

__all__ = ["Policy", "deidentify", "pseudonym", "shift_days", "ACTIONS", "output_columns", "PERSON_COLUMN"]

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


def _age(birth: str, as_of: date) -> int | None:
    try:
        year = int(birth[:4])
        month = int(birth[5:7]) if len(birth) >= 7 else 1
        day = int(birth[8:10]) if len(birth) >= 10 else 1
    except ValueError:
        return None
    return as_of.year - year - ((as_of.month, as_of.day) < (month, day))


def _shift(text: str, days: int) -> str | None:
    # Only the date part survives: a time of day (and its offset) narrows an event to the minute.
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
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
        prefix = text.strip()[: policy.postal_keep]
        return "0" * policy.postal_keep if prefix in policy.restricted_prefixes else prefix
    if action == "region":
        return policy.region_of(text.strip())
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


def deidentify(df, table_policy: dict, policy: Policy):
    """Rows of a view -> rows the curated zone may hold (see the module docstring)."""
    lines = _lines(table_policy)
    for column, action, _ in lines:
        if action not in ACTIONS:
            raise ValueError(f"unknown de-identification action {action!r} for column {column}; known: {', '.join(ACTIONS)}")
        if column not in df.columns:
            raise ValueError(f"de-identification policy names column {column!r}, which the view does not produce ({', '.join(df.columns)})")
    if any(action == "date_shift" for _, action, _ in lines) and PERSON_COLUMN not in df.columns:
        raise ValueError(f"date_shift needs the {PERSON_COLUMN} column to shift every date of a person alike; the input has none")
    kept = [(column, action, name) for column, action, name in lines if action != "drop"]
    out = output_columns(table_policy, dict(df.dtypes))
    shifts = any(action == "date_shift" for _, action, _ in kept)

    def rows(row: dict):
        person = row.get(PERSON_COLUMN) if shifts else None
        yield {name: _apply(action, row[column], policy, person) for column, action, name in kept}

    needed = sorted({column for column, _, _ in kept} | ({PERSON_COLUMN} if shifts else set()))
    return map_rows(df.select(*needed), rows, out)
