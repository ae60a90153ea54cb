"""PHI scan: does any curated value hold a direct identifier held in silver?

`direct_identifiers` input: silver.patient or silver.related_person (`resource` JSON). Output: one
column `value`: the names, identifier values, phone numbers, e-mails and other telecom values, street
lines, address texts and full birth dates of every person resource, its contacts included.
`scan` input: a curated table and the identifiers; output: (column, hits) for each string column with
at least one value that equals an identifier or, for identifiers of `SUBSTRING_MIN` characters or more,
holds one as a whole word group or as a date or digit run inside a longer text (a birth date inside a
timestamp, a phone number inside a note).
"""

from __future__ import annotations

import re

from pyspark.sql import functions as F

from transforms import fastjson
from transforms.arrow import map_rows

__all__ = ["direct_identifiers", "identifier_values", "scan", "tokens", "MIN_LENGTH", "SUBSTRING_MIN"]

#: Shorter strings (initials, "Li") collide with codes by chance; they are checked by the k-anonymity
#: and allow-list policy instead.
MIN_LENGTH = 3
#: Identifiers this long are also looked for inside longer values. Shorter ones (given names such as
#: "Ana") would match ordinary words and codes, so they count only as a whole value.
SUBSTRING_MIN = 6
#: Word groups up to this many words are compared: street lines and phone numbers have 2 to 4.
MAX_WORDS = 4

_WORD_SPLIT = re.compile(r"[\s,;|()\[\]{}\"]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGITS = re.compile(r"\d{%d,}" % SUBSTRING_MIN)


def _person_values(resource: dict, values: set) -> None:
    for name in resource.get("name") or []:
        values.update(filter(None, [name.get("family"), name.get("text"), *(name.get("given") or [])]))
    for telecom in resource.get("telecom") or []:
        values.add(telecom.get("value"))  # phones, e-mails, fax, URLs alike
    for address in resource.get("address") or []:
        values.update(address.get("line") or [])
        values.add(address.get("text"))


def identifier_values(patient: dict) -> set[str]:
    """The direct identifiers of one Patient (or RelatedPerson) resource, its contacts included."""
    values: set = set()
    _person_values(patient, values)
    for contact in patient.get("contact") or []:
        name = contact.get("name")
        _person_values({"name": [name] if isinstance(name, dict) else [], "telecom": contact.get("telecom"),
                        "address": [contact["address"]] if isinstance(contact.get("address"), dict) else []}, values)
    for identifier in patient.get("identifier") or []:
        values.add(identifier.get("value"))
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 10:
        values.add(birth[:10])
    return {v.strip() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_LENGTH}


def tokens(value: str) -> set[str]:
    """What of `value` is compared with the identifiers: the whole (trimmed) value, and the word groups,
    dates and digit runs of at least SUBSTRING_MIN characters inside it."""
    text = value.strip()
    found = {text} if text else set()
    if len(text) <= SUBSTRING_MIN:
        return found
    words = [w for w in _WORD_SPLIT.split(text) if w]
    for size in range(1, MAX_WORDS + 1):
        for start in range(0, len(words) - size + 1):
            found.add(" ".join(words[start:start + size]))
    found.update(_DATE.findall(text))
    found.update(_DIGITS.findall(text))
    return {t for t in found if t == text or len(t) >= SUBSTRING_MIN}


def direct_identifiers(silver_patient):
    """silver.patient (or silver.related_person) -> distinct identifier values (column `value`)."""

    def rows(row):
        for value in identifier_values(fastjson.loads(row["resource"])):
            yield {"value": value}

    return map_rows(silver_patient.select("resource"), rows, [("value", "string")]).distinct()


def scan(table, identifiers):
    """(column, hits) for every string column of `table` holding an identifier; see the module docstring.

    A hit is a value (counted once per identifier it holds); the message built from it names only the
    column, never the value.
    """
    columns = [name for name, kind in table.dtypes if kind == "string"]
    if not columns:
        return table.sparkSession.createDataFrame([], "column string, hits long")
    stacked = None
    for name in columns:
        part = table.select(F.lit(name).alias("column"), F.col(f"`{name}`").alias("text")).filter(F.col("text").isNotNull())
        stacked = part if stacked is None else stacked.unionByName(part)

    def split(row):
        for token in tokens(row["text"]):
            yield {"column": row["column"], "value": token}

    found = map_rows(stacked.distinct(), split, [("column", "string"), ("value", "string")])
    return found.join(identifiers, "value", "inner").groupBy("column").agg(F.count(F.lit(1)).alias("hits"))
