"""curate, part 3: the k-anonymity gate on the quasi-identifiers of a de-identified table.

Input columns: an id column (``person_id``; the group size counts distinct persons, since one person
has a row per hospital) and the quasi-identifier columns (e.g. birth_year, age_band, gender, postal3,
region of gold.patient); any other column passes through unchanged.
Output columns: the input columns, with the quasi-identifiers of records in groups of fewer than k
persons generalized step by step along the ladder, and ``kanon_step`` (int): 0 for a record left as it
was, i when ladder step i was the last one applied to it, len(ladder) + 1 when it was still in a small
group after the whole ladder and all its quasi-identifiers were suppressed (set to null).

Generalization is local: only records in small groups are touched, so a large group keeps its detail.
A generalized value is still a truthful, coarser value (a 20-year band holds the 5-year band).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import functions as F

__all__ = ["LadderStep", "k_anonymize", "small_groups", "GENERALIZERS", "STEP_COLUMN"]

STEP_COLUMN = "kanon_step"
_NULL_TOKEN = "\u0000"


def _to_null(column):
    return F.lit(None).cast("string")


def _band20(column):
    """"45-49" -> "40-59", "90+" -> "80+": 20-year bands that contain the 5-year bands of deid's age_band."""
    low = F.regexp_extract(column, r"^([0-9]+)", 1).cast("int")
    low20 = (F.floor(low / 20) * 20).cast("int")
    return (F.when(low.isNull(), F.lit(None).cast("string"))
            .when(low20 >= 80, F.lit("80+"))
            .otherwise(F.concat(low20.cast("string"), F.lit("-"), (low20 + 19).cast("string"))))


#: generalization name (conf/deid.yaml `kanon.ladder[].to`) -> column expression builder
GENERALIZERS = {"null": _to_null, "band20": _band20}


@dataclass(frozen=True)
class LadderStep:
    """Generalize `column` of the records still in small groups with the generalizer `to`."""

    column: str
    to: str = "null"


def _group_key(quasi_identifiers):
    return F.concat_ws("|", *[F.coalesce(F.col(f"`{c}`").cast("string"), F.lit(_NULL_TOKEN)) for c in quasi_identifiers])


def small_groups(df, quasi_identifiers: list[str], k: int, *, id_column: str = "person_id"):
    """`df` plus a boolean `_small`: the record's quasi-identifier group holds fewer than k persons.

    Null is a value of its own here, so records with a suppressed quasi-identifier group together.
    """
    keyed = df.withColumn("_qi", _group_key(quasi_identifiers))
    sizes = keyed.groupBy("_qi").agg(F.countDistinct(F.col(f"`{id_column}`")).alias("_persons"))
    return keyed.join(sizes, "_qi", "left").withColumn("_small", F.col("_persons") < F.lit(k)).drop("_qi", "_persons")


def k_anonymize(df, *, k: int, quasi_identifiers: list[str], ladder: list[LadderStep], id_column: str = "person_id"):
    """Generalize, then suppress, until every quasi-identifier group holds k persons or is all null.

    See the module docstring for the columns.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, found {k}")
    missing = [c for c in [id_column, *quasi_identifiers, *(s.column for s in ladder)] if c not in df.columns]
    if missing:
        raise ValueError(f"k-anonymity: column(s) {', '.join(missing)} not in the table ({', '.join(df.columns)})")
    for step in ladder:
        if step.column not in quasi_identifiers:
            raise ValueError(f"k-anonymity: ladder column {step.column!r} is not a quasi-identifier ({', '.join(quasi_identifiers)})")
        if step.to not in GENERALIZERS:
            raise ValueError(f"k-anonymity: unknown generalization {step.to!r} for {step.column}; known: {', '.join(GENERALIZERS)}")
    columns = list(df.columns)
    out = df.withColumn(STEP_COLUMN, F.lit(0))
    for number, step in enumerate(ladder, 1):
        marked = small_groups(out, quasi_identifiers, k, id_column=id_column)
        generalized = GENERALIZERS[step.to](F.col(f"`{step.column}`"))
        out = (marked.withColumn(step.column, F.when(F.col("_small"), generalized).otherwise(F.col(f"`{step.column}`")))
               .withColumn(STEP_COLUMN, F.when(F.col("_small"), F.lit(number)).otherwise(F.col(STEP_COLUMN)))
               .drop("_small"))
    marked = small_groups(out, quasi_identifiers, k, id_column=id_column)
    for column in quasi_identifiers:
        marked = marked.withColumn(column, F.when(F.col("_small"), F.lit(None).cast("string")).otherwise(F.col(f"`{column}`")))
    marked = marked.withColumn(STEP_COLUMN, F.when(F.col("_small"), F.lit(len(ladder) + 1)).otherwise(F.col(STEP_COLUMN)))
    return marked.select(*[F.col(f"`{c}`") for c in columns], F.col(STEP_COLUMN).cast("int").alias(STEP_COLUMN))
