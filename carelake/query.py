"""Query the curated zone by table name: what analysts use through `carelake sql`."""

from __future__ import annotations

from pathlib import Path

from carelake.config import load_config
from carelake.engine import get_spark
from carelake.lake import Lake

__all__ = ["register_curated", "run_sql"]


def register_curated(spark, lake: Lake) -> list[str]:
    """Register every curated table as a temporary view by its short name (gold.patient -> patient)."""
    names = []
    for table in lake.tables(zones=("curated",)):
        short = table.name.split(".", 1)[1]
        spark.read.format("delta").load(table.path).createOrReplaceTempView(short)
        names.append(short)
    return names


def run_sql(query: str, workdir: Path) -> tuple[list[str], list[tuple]]:
    """Columns and rows of `query` over the curated tables of `workdir`; only the curated zone is visible."""
    config = load_config(workdir / "conf") if (workdir / "conf" / "lake.yaml").exists() else load_config(None)
    spark = get_spark(config.engine)
    register_curated(spark, Lake.from_config(config, workdir))
    df = spark.sql(query)
    return df.columns, [tuple(r) for r in df.collect()]
