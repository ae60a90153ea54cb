"""`carelake view run`: evaluate a SQL-on-FHIR v2 ViewDefinition over FHIR files, in pure Python.

No engine and no lake: what a data engineer uses to try a view on an export before it goes to conf/views/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["view"]


@click.group()
def view() -> None:
    """SQL-on-FHIR v2 ViewDefinitions."""


def _load_view(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or data.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise click.ClickException(f"{path}: expected a ViewDefinition (an object with resourceType ViewDefinition)")
    return data


@view.command("run")
@click.option("--view", "view_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ViewDefinition JSON file.")
@click.option("--resources", required=True, type=click.Path(exists=True, path_type=Path),
              help="An NDJSON file, a Bundle or resource JSON file, or a folder of them.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True,
              help="json: one JSON array of row objects; csv: a header and one line per row.")
def run(view_file: Path, resources: Path, fmt: str) -> None:
    """Evaluate a ViewDefinition over FHIR resources and print the rows."""
    from transforms.sqlonfhir import FhirPathError, ResourceFileError, ViewError, compile_view, load_resources, rows_to_csv

    definition = _load_view(view_file)
    try:
        compiled = compile_view(definition)
    except (ViewError, FhirPathError) as exc:
        raise click.ClickException(f"{view_file}: invalid ViewDefinition: {exc}") from None
    try:
        rows = list(compiled.evaluate_many(load_resources(resources)))
    except ResourceFileError as exc:
        raise click.ClickException(str(exc)) from None
    except (ViewError, FhirPathError) as exc:
        raise click.ClickException(f"{view_file}: the view failed on a resource: {exc}") from None
    if fmt == "csv":
        sys.stdout.write(rows_to_csv(compiled.columns, rows))
    else:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, default=str) + "\n")
