"""curate, part 2: flat view rows -> de-identified rows, by the policy in conf/deid.yaml.

Input columns: the columns a table's policy names (view columns plus hospital and person_key).
Output columns: one per policy line, named by its ``as`` (else the input name), in policy order.
Anything the policy does not name is dropped: the policy is an allow-list.

Actions (see conf/deid.yaml): keep, pseudonym (HMAC-SHA256, 32 hex chars), year, month, birth_year,
age_band, postal3, region.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from transforms.arrow import map_rows

__all__ = ["Policy", "deidentify", "pseudonym", "ACTIONS", "output_columns"]

ACTIONS = ("keep", "pseudonym", "year", "month", "birth_year", "age_band", "postal3", "region")


@dataclass(frozen=True)
class Policy:
    """The de-identification settings every table shares."""

    key: bytes
    as_of: date
    top_code: int = 90
    postal_keep: int = 3
    restricted_prefixes: tuple[str, ...] = ()
    regions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (region id, postal prefixes)

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


def _age(birth: str, as_of: date) -> int | None:
    try:
        year = int(birth[:4])
        month = int(birth[5:7]) if len(birth) >= 7 else 1
        day = int(birth[8:10]) if len(birth) >= 10 else 1
    except ValueError:
        return None
    return as_of.year - year - ((as_of.month, as_of.day) < (month, day))


def _apply(action: str, value, policy: Policy):
    if value is None or value == "":
        return None
    if action == "keep":
        return value
    text = str(value)
    if action == "pseudonym":
        return pseudonym(policy.key, text)
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


def output_columns(table_policy: dict, input_types: dict[str, str]) -> list[tuple[str, str]]:
    """(name, Spark type) of the de-identified output of one table's policy."""
    out = []
    for line in table_policy["columns"]:
        kind = input_types.get(line["column"], "string") if line["action"] == "keep" else "string"
        out.append((line.get("as", line["column"]), kind))
    return out


def deidentify(df, table_policy: dict, policy: Policy):
    """Rows of a view -> rows the curated zone may hold (see the module docstring)."""
    lines = [(line["column"], line["action"], line.get("as", line["column"])) for line in table_policy["columns"]]
    for column, action, _ in lines:
        if action not in ACTIONS:
            raise ValueError(f"unknown de-identification action {action!r} for column {column}; known: {', '.join(ACTIONS)}")
        if column not in df.columns:
            raise ValueError(f"de-identification policy names column {column!r}, which the view does not produce ({', '.join(df.columns)})")
    out = output_columns(table_policy, dict(df.dtypes))

    def rows(row: dict):
        yield {name: _apply(action, row[column], policy) for column, action, name in lines}

    needed = sorted({column for column, _, _ in lines})
    return map_rows(df.select(*needed), rows, out)
