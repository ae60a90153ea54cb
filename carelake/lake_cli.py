"""`carelake lake ...`: table history and restore (disaster recovery, docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["lake"]


def _lake(workdir: Path | None):
    from carelake.config import load_config
    from carelake.lake import Lake, default_workdir

    workdir = (workdir or default_workdir()).resolve()
    config = load_config(workdir / "conf") if (workdir / "conf" / "lake.yaml").exists() else load_config(None)
    return Lake.from_config(config, workdir)


_WORKDIR = click.option("--workdir", type=click.Path(path_type=Path), default=None,
                        help="Working directory holding the zones (default: $CARELAKE_HOME, else ./carelake-home).")


@click.group()
def lake():
    """Table history and restore (time travel with delta-rs)."""


@lake.command("history")
@click.argument("table")
@_WORKDIR
def history_command(table, workdir):
    """List the versions of TABLE (e.g. silver.patient), newest first."""
    from carelake.restore import history

    for entry in history(_lake(workdir), table):
        click.echo(json.dumps(entry))


@lake.command("restore")
@click.argument("table")
@click.option("--version", "version", type=click.IntRange(0), required=True, help="The version to bring back.")
@_WORKDIR
def restore_command(table, version, workdir):
    """Restore TABLE to an earlier VERSION (a new commit; the history stays, so it can be undone)."""
    from carelake.restore import restore_table

    result = restore_table(_lake(workdir), table, version)
    click.echo(f"{table}: restored to version {result['restored_to']} (was {result['from_version']}, now version "
               f"{result['new_version']}); gold and marts derived from it: carelake run --stage curate --stage marts")
