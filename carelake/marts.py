"""marts runner: published gold -> regional marts, validated before they are published."""

from __future__ import annotations

from carelake.context import RunContext
from carelake.curate import publish
from transforms.marts import encounters_by_region_month

__all__ = ["run", "MARTS"]

#: mart name -> builder over the published gold tables
MARTS = {
    "encounters_by_region_month": lambda gold: encounters_by_region_month(gold["encounter"], gold["patient"]),
}


def run(ctx: RunContext) -> dict:
    from carelake.validate import validate

    lake, spark = ctx.lake, ctx.spark
    gold = {name: lake.read(spark, f"gold.{name}") for name in ("encounter", "patient") if lake.exists(f"gold.{name}")}
    if len(gold) < 2:
        return {"marts": {}, "skipped": "gold.encounter and gold.patient are not published yet"}
    counts = {}
    for name, build in MARTS.items():
        with ctx.progress.step(f"marts: {name}") as note:
            lake.overwrite(build(gold), f"staging.marts_{name}")
            counts[name] = lake.read(spark, f"staging.marts_{name}").count()
            note["detail"] = f"{counts[name]} rows"
    staged = {f"marts.{name}": lake.read(spark, f"staging.marts_{name}") for name in counts}
    report = validate(ctx, staged, stage="marts", id_column=None)
    report.raise_if_critical()
    with ctx.progress.step("marts: publish"):
        publish(ctx, list(counts), "marts")
    return {"marts": counts, "verdict": report.verdict}
