"""The data dictionary: every table and column, its meaning, FHIR source, de-identification treatment,
data category and sensitivity grade, generated from conf/ (views, deid.yaml, grades.yaml) and the mart
definitions, so it cannot drift from what the pipeline does.

``python -m carelake.dictionary --write`` regenerates docs/data-dictionary.md; a test checks that the
committed file matches conf/. `check_grades` is the curate and marts stages' grade gate.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from carelake.config import PROJECT_ROOT, Config, load_config
from carelake.errors import ConfigError, PrivacyGateError

__all__ = ["ColumnDoc", "load_grades", "curated_columns", "phi_columns", "check_grades", "render_markdown", "print_tables",
           "DICTIONARY_PATH", "main"]

DICTIONARY_PATH = PROJECT_ROOT / "docs" / "data-dictionary.md"

_PASSTHROUGH = {
    "hospital": ("Hospital that sent the record (its id in conf/hospitals/).", "silver: the sending hospital"),
    "person_key": ("Person key from linkage: the same for every record of a person, in any hospital.",
                   "phi.person_xref (linkage on the national id)"),
}


@dataclass(frozen=True)
class ColumnDoc:
    table: str
    column: str
    type: str
    description: str
    source: str
    treatment: str
    category: str
    grade: int


def load_grades(config: Config) -> dict:
    """conf/grades.yaml of the config's folder, else the project's (a conf made before grades existed)."""
    path = Path(config.conf_dir) / "grades.yaml"
    if not path.exists():
        path = PROJECT_ROOT / "conf" / "grades.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from None
    grades = {int(g["grade"]) for g in data.get("scale") or []}
    if not grades:
        raise ConfigError(f"{path}: 'scale' is empty; list the grades (e.g. the five of GB/T 39725-2020)")
    for layer, ceiling in (data.get("ceilings") or {}).items():
        if int(ceiling) not in grades:
            raise ConfigError(f"{path}: ceilings.{layer} is {ceiling}, which is not a grade of the scale {sorted(grades)}")
    data["_path"] = str(path)
    return data


def _entry(grades: dict, section: str, key: str, where: str) -> tuple[str, int]:
    value = (grades.get(section) or {}).get(key)
    if not value or len(value) < 2:
        raise ConfigError(f"{grades['_path']}: {section}.{key} has no [category, grade]; every column needs one ({where})")
    category, grade = str(value[0]), int(value[1])
    if category not in (grades.get("categories") or {}):
        raise ConfigError(f"{grades['_path']}: {section}.{key}: unknown category {category!r}; known: {', '.join(grades.get('categories') or {})}")
    return category, grade


def _view_entry(grades: dict, view: str, column: str) -> tuple[str, int]:
    return _entry({**grades, "views": (grades.get("views") or {}).get(view) or {}}, "views", column, f"view {view}")


def _treatment(action: str, deid: dict) -> str:
    postal = deid.get("postal") or {}
    keep = int(postal.get("keep", 3))
    restricted = ", ".join(str(p) for p in postal.get("restricted_prefixes") or []) or "none"
    top = int((deid.get("age") or {}).get("top_code", 90))
    shift = int((deid.get("date_shift") or {}).get("range_days", 30))
    return {
        "keep": "kept as is",
        "pseudonym": "keyed pseudonym: HMAC-SHA256 of the value, 32 hex chars",
        "date_shift": f"date shifted by a per-person number of days in [-{shift}, +{shift}] (keyed)",
        "year": "truncated to the year",
        "month": "truncated to the month",
        "birth_year": f"year of birth; null at age {top} and over",
        "age_band": f"5-year band of the age at the run's reference date; {top}+ at {top} and over",
        "postal3": f"first {keep} characters; restricted prefixes ({restricted}) become {'0' * keep}",
        "region": "region of conf/regions.yaml the postal code falls in; other when none",
    }.get(action, action)


def _view_docs(view: dict) -> dict[str, tuple[str, str, str]]:
    """column -> (description, FHIRPath source, Spark type) of a ViewDefinition."""
    from transforms.views import view_columns

    types = dict(view_columns(view))
    docs = {}

    def walk(selects):
        for select in selects or []:
            for column in select.get("column") or []:
                docs[column["name"]] = (column.get("description", ""), f"{view.get('resource')}: {column.get('path', '')}",
                                        types.get(column["name"], "string"))
            walk(select.get("select"))
            walk(select.get("unionAll"))

    walk(view.get("select"))
    return docs


def curated_columns(config: Config, *, layers: tuple[str, ...] = ("gold", "marts")) -> list[ColumnDoc]:
    """Every column of every curated table, in table and policy order."""
    from carelake.curate import DERIVED, kanon_settings

    grades = load_grades(config)
    deid = config.deid
    out = []
    kanon = kanon_settings(config)
    if "gold" in layers:
        for name, policy in (deid.get("tables") or {}).items():
            source = policy.get("source", name)
            if source not in config.views:
                raise ConfigError(f"conf/deid.yaml: table {name} uses view {source!r}, which is not in conf/views/")
            view = config.views[source]
            docs = _view_docs(view)
            for line in policy.get("columns") or []:
                column, action = line["column"], line["action"]
                if action == "drop":
                    continue
                if column in docs:
                    description, origin, kind = docs[column]
                    category, grade = _view_entry(grades, source, column)
                elif column in _PASSTHROUGH:
                    (description, origin), kind = _PASSTHROUGH[column], "string"
                    category, grade = _entry(grades, "passthrough", column, f"gold.{name}")
                elif column in DERIVED:
                    _, description, origin = DERIVED[column]
                    kind = "boolean"
                    category, grade = _entry(grades, "derived", column, f"gold.{name}")
                else:
                    raise ConfigError(f"conf/deid.yaml: table {name} names column {column!r}, which view {source!r} does not produce")
                treatment = _treatment(action, deid)
                if action != "keep":
                    if action not in (grades.get("actions") or {}):
                        raise ConfigError(f"{grades['_path']}: actions.{action} has no grade")
                    grade = int(grades["actions"][action])
                    kind = "string"
                out_name = line.get("as", column)
                description = line.get("description", description)
                if kanon and kanon["table"] == name and out_name in kanon["quasi_identifiers"]:
                    k = kanon["k"]
                    steps = [s for s in kanon["ladder"] if s.column == out_name]
                    treatment += (f"; k-anonymity (k={k}): generalized ({steps[0].to}) in groups of fewer than {k} persons"
                                  if steps else f"; k-anonymity (k={k}): null when still in a group of fewer than {k} persons after the ladder")
                out.append(ColumnDoc(f"gold.{name}", out_name, kind, description, origin, treatment, category, grade))
    if "marts" in layers:
        from carelake.marts import MARTS

        category, grade = str(grades["marts"][0]), int(grades["marts"][1])
        for name, mart in MARTS.items():
            for column, description in mart.columns.items():
                out.append(ColumnDoc(f"marts.{name}", column, _mart_type(column), description,
                                     f"gold.{', gold.'.join(mart.needs)}", "aggregate; counts of 1-10 suppressed",
                                     category, grade))
    return out


def _mart_type(column: str) -> str:
    if column == "suppressed":
        return "boolean"
    if column.endswith(("_rate", "_share")) or column == "prevalence":
        return "double"
    if column in ("encounters", "persons", "persons_with_condition", "population", "results", "abnormal", "stays", "readmissions"):
        return "long"
    return "string"


def phi_columns(config: Config) -> list[ColumnDoc]:
    """Every column of the restricted zone's tables and of the views' rows (staged there)."""
    grades = load_grades(config)
    out = []
    for table, columns in (grades.get("phi_tables") or {}).items():
        for column, (category, grade, description) in columns.items():
            out.append(ColumnDoc(table, column, "", description, "", "restricted zone only", str(category), int(grade)))
    for name, view in sorted(config.views.items()):
        for column, (description, origin, kind) in _view_docs(view).items():
            category, grade = _view_entry(grades, name, column)
            out.append(ColumnDoc(f"view {name}", column, kind, description, origin, "see the gold table", category, grade))
    return out


def check_grades(config: Config, *, layer: str, columns: dict[str, list[str]] | None = None) -> None:
    """Fail when a column of `layer` is graded above the layer's ceiling, or (given the staged
    `columns`, table -> names) a staged column has no grade at all."""
    grades = load_grades(config)
    ceiling = int((grades.get("ceilings") or {}).get(layer, max(int(g["grade"]) for g in grades["scale"])))
    docs = curated_columns(config, layers=(layer,))
    names = {int(g["grade"]): g.get("name", "") for g in grades["scale"]}
    over = [d for d in docs if d.grade > ceiling]
    if over:
        listed = ", ".join(f"{d.table}.{d.column} (grade {d.grade}, {names.get(d.grade, '')})" for d in over)
        raise PrivacyGateError(f"grade check: {listed} above the {layer} ceiling of grade {ceiling} "
                               f"({grades['_path']} ceilings.{layer}); drop or generalize these columns in conf/deid.yaml; "
                               "nothing was published")
    if columns:
        known = {(d.table, d.column) for d in docs}
        ungraded = [f"{t}.{c}" for t, cs in columns.items() for c in cs if (t, c) not in known]
        if ungraded:
            raise PrivacyGateError(f"grade check: {', '.join(ungraded)} carry no grade in the data dictionary; "
                                   "declare them (conf/deid.yaml, conf/grades.yaml, carelake/marts.py); nothing was published")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(config: Config) -> str:
    """docs/data-dictionary.md for `config`."""
    from carelake.marts import MARTS

    grades = load_grades(config)
    lines = [
        "# Data dictionary",
        "",
        "<!-- generated by `python -m carelake.dictionary --write` from conf/ (views, deid.yaml, grades.yaml) "
        "and carelake/marts.py; do not edit by hand -->",
        "",
        "Every table and column of carelake: what it means, where it comes from in FHIR, how it is "
        "de-identified, its data category and its sensitivity grade. Analysts see the curated zone "
        "(`gold.*`, `marts.*`); the restricted (phi) zone is listed for data engineers and auditors.",
        "",
        "## Sensitivity grades",
        "",
        "| grade | name | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| {g['grade']} | {_cell(g.get('name', ''))} | {_cell(g.get('description', ''))} |" for g in grades["scale"]]
    lines += ["", "Ceilings: " + ", ".join(f"`{layer}` tables hold no column above grade {c}" for layer, c in (grades.get("ceilings") or {}).items()) + ".",
              "", "## Data categories", "", "| category | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in (grades.get("categories") or {}).items()]
    lines += ["", "## Curated zone: gold tables", ""]
    docs = curated_columns(config)
    for table in dict.fromkeys(d.table for d in docs):
        short = table.split(".", 1)[1]
        if table.startswith("gold."):
            source = (config.deid.get("tables") or {})[short].get("source", short)
            view = config.views[source]
            about = f"{view.get('title', '')}. {view.get('description', '')} View: `conf/views/{source}.json`."
        else:
            if table == f"marts.{next(iter(MARTS))}":
                lines += ["## Curated zone: regional marts", "",
                          "Counts of 1 to 10 are suppressed: the row keeps its dimensions, its counts and rates are "
                          "null and `suppressed` is true. Zero is published.", ""]
            about = MARTS[short].description
        lines += [f"### {table}", "", _cell(about).strip(), "",
                  "| column | type | meaning | FHIR source | de-identification | category | grade |", "|---|---|---|---|---|---|---|"]
        for d in (d for d in docs if d.table == table):
            lines.append(f"| `{d.column}` | {d.type} | {_cell(d.description)} | {_cell(d.source)} | {_cell(d.treatment)} | {d.category} | {d.grade} |")
        lines.append("")
    lines += ["## Restricted (phi) zone", "",
              "Never visible to analysts. The views' rows exist only in the phi zone's staging area, between "
              "evaluation and de-identification.", ""]
    docs = phi_columns(config)
    for table in dict.fromkeys(d.table for d in docs):
        lines += [f"### {table}", "", "| column | type | meaning | FHIR source | category | grade |", "|---|---|---|---|---|---|"]
        for d in (d for d in docs if d.table == table):
            lines.append(f"| `{d.column}` | {d.type} | {_cell(d.description)} | {_cell(d.source)} | {d.category} | {d.grade} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carelake.dictionary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default=None, help="conf folder (default: the project's)")
    parser.add_argument("--write", action="store_true", help=f"write {DICTIONARY_PATH}")
    args = parser.parse_args(argv)
    text = render_markdown(load_config(args.conf or PROJECT_ROOT / "conf"))
    if args.write:
        DICTIONARY_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def print_tables(config: Config, *, as_json: bool = False) -> None:
    """`carelake tables --describe`: the curated tables' columns with meaning, treatment and grade."""
    import json

    docs = curated_columns(config)
    if as_json:
        print(json.dumps([d.__dict__ for d in docs], ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for table in dict.fromkeys(d.table for d in docs):
        out = Table("column", "type", "meaning", "de-identification", "grade", title=table, title_justify="left")
        for d in (d for d in docs if d.table == table):
            out.add_row(d.column, d.type, d.description, d.treatment, f"{d.grade} ({d.category})")
        console.print(out)
