"""PHI scan: does any curated value equal a direct identifier held in silver?

`direct_identifiers` input: silver.patient (`resource` JSON). Output: one column `value`, the names,
identifier values, phone numbers, e-mails, street lines and full birth dates of every Patient.
`scan` input: a curated table and the identifiers; output: (column, hits) for each string column with
at least one value equal to an identifier.
"""

from __future__ import annotations

import json

from pyspark.sql import functions as F

from transforms.arrow import map_rows

__all__ = ["direct_identifiers", "identifier_values", "scan"]

#: Shorter strings (initials, "Li") collide with codes by chance; they are checked by the k-anonymity
#: and allow-list policy instead.
MIN_LENGTH = 3


def identifier_values(patient: dict) -> set[str]:
    """The direct identifiers of one Patient resource."""
    values: set[str] = set()
    for name in patient.get("name") or []:
        values.update(filter(None, [name.get("family"), name.get("text"), *(name.get("given") or [])]))
    for identifier in patient.get("identifier") or []:
        values.add(identifier.get("value"))
    for telecom in patient.get("telecom") or []:
        values.add(telecom.get("value"))
    for address in patient.get("address") or []:
        values.update(address.get("line") or [])
        values.add(address.get("text"))
    birth = patient.get("birthDate")
    if birth and len(birth) >= 10:
        values.add(birth[:10])
    return {v.strip() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_LENGTH}


def direct_identifiers(silver_patient):
    """silver.patient -> distinct identifier values (column `value`)."""

    def rows(row):
        for value in identifier_values(json.loads(row["resource"])):
            yield {"value": value}

    return map_rows(silver_patient.select("resource"), rows, [("value", "string")]).distinct()


def scan(table, identifiers):
    """(column, hits) for every string column of `table` holding an identifier value."""
    columns = [name for name, kind in table.dtypes if kind == "string"]
    if not columns:
        return table.sparkSession.createDataFrame([], "column string, hits long")
    stacked = None
    for name in columns:
        part = table.select(F.lit(name).alias("column"), F.trim(F.col(f"`{name}`")).alias("value")).filter(F.col("value").isNotNull())
        stacked = part if stacked is None else stacked.unionByName(part)
    return stacked.join(identifiers, "value", "inner").groupBy("column").agg(F.count(F.lit(1)).alias("hits"))
