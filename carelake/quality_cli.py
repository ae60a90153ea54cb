"""`carelake quality` and `carelake quarantine`: what the quality officer runs (see docs/quality.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from carelake.errors import ConfigError

__all__ = ["quality", "quarantine", "quality_summary", "latest_run"]

_WORKDIR = click.option("--workdir", type=click.Path(path_type=Path), default=None,
                        help="Working directory holding the zones (default: $CARELAKE_HOME, else ./carelake-home).")
_CONF = click.option("--conf", "conf_dir", type=click.Path(path_type=Path), default=None,
                     help="Configuration folder (default: <workdir>/conf if it has lake.yaml, else $CARELAKE_CONF, else ./conf).")


def _config(workdir: Path, conf_dir: Path | None):
    from carelake.config import load_config

    if conf_dir is None and (workdir / "conf" / "lake.yaml").exists():
        conf_dir = workdir / "conf"
    return load_config(conf_dir)


def _lake(workdir: Path | None, conf_dir: Path | None = None):
    from carelake.lake import Lake, default_workdir

    workdir = (workdir or default_workdir()).resolve()
    config = _config(workdir, conf_dir)
    return config, Lake.from_config(config, workdir)


def latest_run(reports: Path) -> str:
    """The run id of the newest run with a report (history), else with validation results."""
    from carelake.run_report import read_history

    runs = [r for r in read_history(reports) if r["scope"] == "run"] if (reports / "history").is_dir() else []
    if runs:
        return runs[-1]["run_id"]
    folders = sorted((p for p in (reports / "validation").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise ConfigError(f"no run has been validated yet: {reports / 'validation'} is empty; run `carelake run` first")
    return folders[-1].name


def quality_summary(reports: Path, run_id: str | None = None) -> dict:
    """The `carelake quality --json` document (every field is described in docs/quality.md)."""
    from carelake.quality import load_report
    from carelake.run_report import read_history, report_path

    run_id = run_id or latest_run(reports)
    runs = [r for r in read_history(reports) if r["scope"] == "run" and r["run_id"] == run_id] if (reports / "history").is_dir() else []
    report = load_report(reports, run_id) if (reports / "validation" / run_id).is_dir() else None
    status = runs[-1]["status"] if runs else None
    page = report_path(reports, run_id)
    data_json = page.with_name("report.json")
    details = json.loads(data_json.read_text(encoding="utf-8")) if data_json.exists() else {}
    results = report.results if report else []
    failures = [r for r in results if not r.success]
    tables: dict[str, dict] = {}
    for r in results:
        entry = tables.setdefault(r.table, {"verdict": "pass", "expectations": 0, "critical_failed": 0, "warnings_failed": 0})
        entry["expectations"] += 1
        if not r.success:
            entry["critical_failed" if r.severity == "critical" else "warnings_failed"] += 1
    for entry in tables.values():
        entry["verdict"] = "fail" if entry["critical_failed"] else ("warn" if entry["warnings_failed"] else "pass")
    return {
        "run_id": run_id,
        "verdict": report.verdict if report and results else "none",
        "status": status,
        "error": details.get("error"),
        "published": details.get("published"),
        "expectations": len(results),
        "critical_failures": [f.to_dict() for f in failures if f.severity == "critical"],
        "warnings": [f.to_dict() for f in failures if f.severity != "critical"],
        "tables": tables,
        "data_docs": str(reports / "data_docs" / "index.html") if (reports / "data_docs" / "index.html").exists() else None,
        "run_report": str(page) if page.exists() else None,
        "latest_report": str(reports / "latest.html") if (reports / "latest.html").exists() else None,
        "results_dir": str(reports / "validation" / run_id) if report else None,
    }


@click.command()
@click.option("--run", "run_id", default=None, help="Run id (default: the latest run).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields: docs/quality.md).")
@_WORKDIR
@_CONF
def quality(run_id, as_json, workdir, conf_dir):
    """A run's quality verdict, its failed expectations by severity, and where the Data Docs and the run report are.

    Exits 4 when the run's verdict is fail (a critical expectation failed), else 0.
    """
    _, lake = _lake(workdir, conf_dir)
    summary = quality_summary(Path(lake.reports), run_id)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        from rich.console import Console

        console = Console(highlight=False)
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(summary["verdict"], "white")
        console.print(f"run {summary['run_id']}: [bold {colour}]{summary['verdict'].upper()}[/] "
                      f"({summary['expectations']} expectations; {len(summary['critical_failures'])} critical, "
                      f"{len(summary['warnings'])} warning failed)" + (f"; run {summary['status']}" if summary["status"] else ""))
        for title, items in (("critical", summary["critical_failures"]), ("warning", summary["warnings"])):
            for f in items:
                head = f"{f['table']} {f['expectation']}" + (f"({f['column']})" if f["column"] else "")
                rows = f": {f['unexpected_count']} of {f['element_count']} rows" if f["unexpected_count"] is not None else ""
                ids = f" (sample ids: {', '.join(f['sample_ids'])})" if f["sample_ids"] else ""
                console.print(f"  [{'red' if title == 'critical' else 'yellow'}]{title}[/] {head}{rows}{ids}")
        for label, key in (("Data Docs", "data_docs"), ("run report", "run_report"), ("latest report", "latest_report")):
            if summary[key]:
                console.print(f"{label}: {summary[key]}")
    sys.exit(4 if summary["verdict"] == "fail" else 0)


@click.group()
def quarantine():
    """Inspect quarantined records and retry them after a mapping fix."""


def _context(workdir, conf_dir):
    from carelake.context import Progress, RunContext
    from carelake.engine import get_spark

    config, lake = _lake(workdir, conf_dir)
    return RunContext(config, lake, get_spark(config.engine), progress=Progress())


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@_WORKDIR
@_CONF
def list_(as_json, workdir, conf_dir):
    """Quarantined records by hospital, feed, stage, error code and reason."""
    from carelake.quarantine import counts

    rows = counts(_context(workdir, conf_dir))
    rows = [{k: r[k] for k in ("hospital", "feed", "stage", "error_code", "reason", "records")} for r in rows]
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("hospital", "feed", "stage", "code", "reason", "records")
    for r in rows:
        table.add_row(r["hospital"], r["feed"], r["stage"], r["error_code"], r["reason"], str(r["records"]))
    Console().print(table)
    click.echo(f"{sum(r['records'] for r in rows)} record(s) in quarantine")


@quarantine.command()
@click.option("--code", default=None, help="Only records quarantined with this error code (e.g. UNKNOWN_CODE).")
@click.option("--hospital", default=None, help="Only records of this hospital.")
@_WORKDIR
@_CONF
def retry(code, hospital, workdir, conf_dir):
    """Normalize quarantined records again (after fixing a mapping in conf/); then run validate, curate, marts."""
    from carelake.quarantine import retry as do_retry

    result = do_retry(_context(workdir, conf_dir), code=code, hospital=hospital)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "conservation"}))
    if result.get("recovered"):
        click.echo("Next: carelake run --stage validate --stage curate --stage marts", err=True)
