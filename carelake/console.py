"""Render a run summary for people: tables per zone, conservation per feed, quarantine, quality."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary"]


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in ("rows", "bronze", "normalized", "quarantined", "records", "failed") else "left")
    for row in rows:
        table.add_row(*[("" if v is None else str(v)) for v in row])
    return table


def print_summary(summary: dict, overview: dict, console: Console | None = None) -> None:
    """`summary`: RunSummary.to_dict(); `overview`: carelake.pipeline.summarize()."""
    console = console or Console()
    tables = overview["tables"]
    console.print(_table("Tables", ["zone", "table", "rows"], [[t["zone"], t["name"], t["rows"]] for t in tables]))
    conservation = (summary["results"].get("normalize") or {}).get("conservation") or {}
    if conservation:
        console.print(_table("Records per feed (bronze = normalized + quarantined)", ["feed", "bronze", "normalized", "quarantined", "balanced"],
                             [[f, c["bronze"], c["normalized"], c["quarantined"], "yes" if c["balanced"] else "NO"] for f, c in conservation.items()]))
    if overview["quarantine"]:
        console.print(_table("Quarantined records by reason", ["feed", "code", "reason", "records"],
                             [[q["feed"], q["error_code"], q["reason"], q["count"]] for q in overview["quarantine"]]))
    quality = summary["results"].get("quality") or {}
    if quality:
        rows = [[t, r["verdict"], r["critical_failed"], r["warnings_failed"], r["expectations"]] for t, r in sorted(quality.get("tables", {}).items())]
        console.print(_table("Validation (Great Expectations)", ["table", "verdict", "critical failed", "warnings failed", "expectations"], rows))
        if quality.get("data_docs"):
            console.print(f"Data Docs: {quality['data_docs']}")
    results = summary["results"]
    linkage = (results.get("normalize") or {}).get("linkage") or {}
    if linkage.get("persons") is not None:
        line = f"Person linkage: {linkage.get('patients')} hospital patients -> {linkage['persons']} persons"
        truth = linkage.get("ground_truth") or {}
        if truth.get("precision") is not None:
            line += f" (against the generator's ground truth: precision {truth['precision']:.3f}, recall {truth['recall']:.3f})"
        console.print(line)
    kanon = (results.get("curate") or {}).get("kanon") or {}
    if kanon:
        generalized = sum((kanon.get("generalized") or {}).values())
        console.print(f"k-anonymity (k={kanon['k']} on {', '.join(kanon['quasi_identifiers'])}) in {kanon['table']}: "
                      f"{kanon['unchanged']} records unchanged, {generalized} generalized, {kanon['suppressed']} suppressed")
    if results.get("report"):
        console.print(f"Run report: {results['report']}")
    if summary.get("error"):
        console.print(f"[bold red]Run stopped[/bold red] at {summary['error']}")
    else:
        console.print(f"[bold green]Run {summary['run_id']} succeeded[/bold green] in {summary['seconds']} s: stages {', '.join(summary['stages'])}")
