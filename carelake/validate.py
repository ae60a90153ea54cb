"""validate runner: the Great Expectations suites of expectations/ on silver (stage `validate`), and on
staged gold and marts before they are published (called by the curate and marts runners)."""

from __future__ import annotations

from carelake.context import RunContext
from carelake.quality import QualityReport, validate_tables

__all__ = ["run", "validate", "id_column_of"]


def id_column_of(table: str, columns: list[str]) -> str:
    """The column whose values may be shown for failing rows: a resource id or a pseudonym, never PHI."""
    if table.startswith("silver."):
        return "id"
    for column in columns:
        if column.endswith("_id"):
            return column
    return "id"


def validate(ctx: RunContext, tables: dict, *, stage: str, id_column: str | None = "auto") -> QualityReport:
    """Validate `tables` (name -> DataFrame); record the outcome in the run's results under `quality`."""
    reports = ctx.lake.reports
    merged = QualityReport(run_id=ctx.run_id)
    for name, df in tables.items():
        with ctx.progress.step(f"{stage}: validate {name}") as note:
            column = id_column_of(name, df.columns) if id_column == "auto" else (id_column or "id")
            report = validate_tables({name: df}, suites_dir=ctx.config.expectations_dir, reports_dir=reports,
                                     run_id=ctx.run_id, id_column=column)
            merged.results += report.results
            merged.data_docs_index = report.data_docs_index
            note["detail"] = report.verdict
    quality = ctx.results.setdefault("quality", {"tables": {}})
    for name in tables:
        outcomes = [r for r in merged.results if r.table == name]
        failed = [r for r in outcomes if not r.success]
        quality["tables"][name] = {
            "verdict": "fail" if any(r.severity == "critical" for r in failed) else ("warn" if failed else "pass"),
            "expectations": len(outcomes),
            "critical_failed": sum(r.severity == "critical" for r in failed),
            "warnings_failed": sum(r.severity != "critical" for r in failed),
            "failures": [r.describe() for r in failed],
        }
    quality["data_docs"] = str(merged.data_docs_index) if merged.data_docs_index else None
    return merged


def run(ctx: RunContext) -> dict:
    """Validate every silver table; a critical failure stops the run before anything is curated."""
    lake, spark = ctx.lake, ctx.spark
    tables = {t.name: lake.read(spark, t.name) for t in lake.tables(zones=("phi",)) if t.name.startswith("silver.")}
    report = validate(ctx, tables, stage="validate")
    report.raise_if_critical()
    return {"verdict": report.verdict, "tables": len(tables)}
