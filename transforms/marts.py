"""marts: de-identified gold tables -> regional aggregates with small cells suppressed.

Every count between 1 and ``min_cell - 1`` persons would point at a handful of people, so such a row
keeps its dimensions, gets null counts and ``suppressed = true``.
"""

from __future__ import annotations

from pyspark.sql import functions as F

__all__ = ["encounters_by_region_month", "suppress_small_cells", "MIN_CELL"]

MIN_CELL = 11


def suppress_small_cells(df, count_columns: list[str], *, min_cell: int = MIN_CELL):
    """Null every count of a row where any count lies in 1..min_cell-1; add a `suppressed` flag."""
    small = None
    for column in count_columns:
        cond = (F.col(column) >= 1) & (F.col(column) < min_cell)
        small = cond if small is None else (small | cond)
    out = df.withColumn("suppressed", small)
    for column in count_columns:
        out = out.withColumn(column, F.when(F.col("suppressed"), F.lit(None).cast("long")).otherwise(F.col(column)))
    return out


def encounters_by_region_month(encounter, patient, *, min_cell: int = MIN_CELL):
    """Encounters per region and month.

    Input: gold.encounter (person_id, hospital, start_month), gold.patient (person_id, hospital,
    region). Output: region, month, encounters, persons, suppressed.
    The region is the one the hospital recorded for the person; a person without it counts as "unknown".
    """
    regions = patient.select("person_id", "hospital", "region").dropDuplicates(["person_id", "hospital"])
    joined = encounter.join(regions, ["person_id", "hospital"], "left")
    counts = (
        joined.filter(F.col("start_month").isNotNull())
        .groupBy(F.coalesce(F.col("region"), F.lit("unknown")).alias("region"), F.col("start_month").alias("month"))
        .agg(F.count(F.lit(1)).alias("encounters"), F.countDistinct("person_id").alias("persons"))
    )
    return suppress_small_cells(counts, ["encounters", "persons"], min_cell=min_cell).orderBy("region", "month")
