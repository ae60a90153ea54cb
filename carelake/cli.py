"""The `carelake` command line."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from pathlib import Path

import click

from carelake.errors import CarelakeError

__all__ = ["main"]

_WORKDIR = click.option("--workdir", type=click.Path(path_type=Path), default=None,
                        help="Working directory holding the zones (default: $CARELAKE_HOME, else ./carelake-home).")


def _workdir(value: Path | None) -> Path:
    from carelake.lake import default_workdir

    return value or default_workdir()


def _quiet_libraries() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.basicConfig(level=os.environ.get("CARELAKE_LOG_LEVEL", "WARNING"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="carelake")
def cli() -> None:
    """carelake: regional hospital feeds -> FHIR R4 -> de-identified Delta tables."""
    _quiet_libraries()


def _finish(summary, workdir: Path) -> None:
    from carelake.console import print_summary
    from carelake.engine import get_spark
    from carelake.lake import Lake
    from carelake.config import load_config
    from carelake.pipeline import summarize

    config = load_config(workdir / "conf") if (workdir / "conf" / "lake.yaml").exists() else load_config(None)
    print_summary(summary.to_dict(), summarize(Lake.from_config(config, workdir), get_spark()))


@cli.command()
@_WORKDIR
@click.option("--hospitals", type=click.IntRange(1, 26), default=3, show_default=True, help="Synthetic hospitals.")
@click.option("--patients", type=click.IntRange(1), default=1000, show_default=True, help="Persons in the synthetic region.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generator: same seed, same data.")
def demo(workdir, hospitals, patients, seed):
    """Generate synthetic feeds for several hospitals and run every stage on the embedded engine."""
    from carelake.context import Progress
    from carelake.demo import run_demo

    from carelake.keys import KEY_ENV

    workdir = _workdir(workdir).resolve()
    if not os.environ.get(KEY_ENV):
        click.echo(f"Note: {KEY_ENV} is not set, so the demo makes a throw-away key; its pseudonyms cannot be "
                   "reproduced. Set the variable for stable pseudonyms (`carelake run` refuses to run without it).", err=True)
    summary, _ = run_demo(workdir, hospitals=hospitals, patients=patients, seed=seed, progress=Progress())
    _finish(summary, workdir)
    click.echo(f"Working directory: {workdir}  (try: carelake tables --workdir {workdir})")
    sys.exit(summary.exit_code)


@cli.command()
@click.option("--conf", "conf_dir", type=click.Path(path_type=Path), default=None,
              help="Configuration folder (default: $CARELAKE_CONF, else ./conf, else the project's conf/).")
@_WORKDIR
@click.option("--stage", "stages", multiple=True, help="Stage to run (repeatable; default all): ingest, normalize, validate, curate, marts.")
@click.option("--feed", "feeds", multiple=True, metavar="HOSPITAL=KIND:PATH",
              help="Ad-hoc input read in place instead of conf/hospitals (repeatable; KIND: hl7v2, csv, fhir, jdbc, fhir-rest). See docs/feeds.md.")
@click.option("--full", is_flag=True, help="normalize: map every bronze record again, not only those not yet "
              "normalized with the current mapping (a changed mapping is detected by itself).")
def run(conf_dir, workdir, stages, feeds, full):
    """Run pipeline stages over a conf directory. Needs CARELAKE_DEID_KEY: no key, no run."""
    from carelake.context import Progress
    from carelake.pipeline import run_pipeline

    workdir = _workdir(workdir).resolve()
    if feeds:
        from carelake.adhoc import adhoc_config

        conf_dir = adhoc_config(conf_dir, list(feeds))
    summary = run_pipeline(conf_dir, workdir, list(stages) or None, progress=Progress(), full=full)
    _finish(summary, workdir)
    sys.exit(summary.exit_code)


@cli.command()
@_WORKDIR
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.option("--describe", is_flag=True, help="Show each curated table's columns from the data dictionary.")
def tables(workdir, as_json, describe):
    """List every table with its zone, path and row count (--describe: its documentation)."""
    from carelake.config import load_config
    from carelake.lake import Lake

    workdir = _workdir(workdir).resolve()
    config = load_config(workdir / "conf") if (workdir / "conf" / "lake.yaml").exists() else load_config(None)
    if describe:
        from carelake.dictionary import print_tables

        return print_tables(config, as_json=as_json)
    found = [t.__dict__ for t in Lake.from_config(config, workdir).tables()]
    if as_json:
        click.echo(json.dumps(found, indent=None))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("zone", "table", "rows", "version", "path")
    for t in found:
        table.add_row(t["zone"], t["name"], str(t["rows"]), str(t["version"]), t["path"])
    Console().print(table)


@cli.command()
@click.argument("query")
@_WORKDIR
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def sql(query, workdir, fmt):
    """Run a SQL query over the curated tables, registered by name (patient, encounter, ...)."""
    from carelake.query import run_sql

    workdir = _workdir(workdir).resolve()
    columns, rows = run_sql(query, workdir)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns)
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        Console().print(table)


def _register_subcommands() -> None:
    from carelake.convert import convert
    from carelake.view_cli import view

    cli.add_command(convert)
    cli.add_command(view)
    from carelake.quality_cli import quality, quarantine
    cli.add_command(quality); cli.add_command(quarantine)
    from carelake.lake_cli import lake; cli.add_command(lake)  # noqa: E702 history and restore


_register_subcommands()


def main() -> None:
    try:
        cli(standalone_mode=False)
    except CarelakeError as exc:
        click.echo(f"carelake: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
