"""The quality stage's runner: Great Expectations suites from ``expectations/`` on silver and gold tables.

Each table ``<layer>.<table>`` has one suite, ``expectations/<layer>.<table>.json``, in Great
Expectations 1.x ``ExpectationSuite`` JSON. Every expectation carries ``meta.severity``:

- ``critical``: a failure stops publication of this run's curated tables (`QualityReport.raise_if_critical`);
- ``warning``: reported, publication goes on.

`validate_tables` runs each suite through a GE checkpoint in a file context rooted at
``reports/gx/`` (stored once, and stored again only when the suite file changes); Data Docs are
rendered into ``reports/data_docs/`` once per call (one page per table and run, listed on
``index.html``). A carelake summary per table goes to ``reports/validation/<run_id>/<table>.json``.

The suite runs with counts only (GE's ``BASIC`` result format, no failing-row queries); the ids of up
to `SAMPLE_IDS` failing rows are then fetched for the failed expectations alone, by validating those
again with ``SUMMARY`` and ``unexpected_index_column_names`` (GE's own failing-row query, in a suite
that is not stored).

PHI: silver holds identified records, so no field value may reach a report. GE is asked to
``exclude_unexpected_values`` (no unexpected values in results, stored results or Data Docs) and to
return only the ``id_column`` of failing rows; carelake's JSON holds only `ExpectationOutcome` fields
(counts and ids). What still reaches GE's own stores under ``reports/gx/``: counts, and the
``observed_value`` of aggregate expectations (row counts, column sets; a min/max/mean expectation would
expose a value, so suites on phi tables should not use them). Failing-row ids are in carelake's JSON
only, not in GE's stored results or Data Docs.

Great Expectations is imported on first use, not at import, so DAG files can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carelake.errors import ConfigError, QualityGateError

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from pyspark.sql import DataFrame

__all__ = [
    "SEVERITIES",
    "CRITICAL",
    "WARNING",
    "SAMPLE_IDS",
    "ExpectationOutcome",
    "QualityReport",
    "load_suite",
    "suites_for",
    "validate_tables",
    "build_data_docs",
    "load_report",
    "purge_results",
    "as_utc",
    "import_in_background",
]

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)
SAMPLE_IDS = 5
"""How many ids of failing rows an outcome keeps: enough to start an investigation, no more."""

_SITE = "carelake"
_DATASOURCE = "carelake"
_BATCH = "whole_dataframe"
_ORIGINAL_ID = "carelake_expectation_id"
#: meta of an expectation run in another form (`_as_run`): the suite's own type and column, for reports
_RUNS_FOR = "carelake_runs_for"
_UNIQUE = "expect_column_values_to_be_unique"
# Table names become file names under reports/: keep them to <layer>.<table>, nothing that climbs out.
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")


# --- suites ---------------------------------------------------------------------------------------


def _gx():
    # GE reads GX_ANALYTICS_ENABLED when a context starts; carelake runs offline, so default it off.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def import_in_background() -> threading.Thread:
    """Start importing Great Expectations in a daemon thread; return the thread.

    The import is 5-9 s of single-threaded Python (GE, scipy, sqlalchemy, altair). A run that normalizes
    before it validates starts it once the records are mapped (`carelake.normalize.run`): the rest of
    normalize is engine work, which leaves the GIL and part of a core free, so the import no longer holds
    up the validate stage. Not earlier: while UDF workers map, the import's hold on the GIL delays the
    client threads that feed them (ingest took 5-7 s longer, measured). A failed import is left for the
    validate stage to raise, with its own message.
    """
    def run() -> None:
        with contextlib.suppress(Exception):
            _gx()

    thread = threading.Thread(target=run, name="carelake-gx-import", daemon=True)
    thread.start()
    return thread


def load_suite(path: Path | str) -> ExpectationSuite:
    """Load one suite file with GE's own deserialisation, after checking what GE lets slip.

    Raises `ConfigError` naming the file (and the expectation's index) when the JSON is malformed, the
    suite's ``name`` differs from the file name, an expectation type is unknown, its kwargs are invalid,
    or ``meta.severity`` is missing or not one of `SEVERITIES`.
    """
    _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite, ExpectationSuiteSchema
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: expectation suite file not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ConfigError(f"{path}: expected a JSON object with 'name' and an 'expectations' list")
    expected_name = path.name.removesuffix(".json")
    if data.get("name") != expected_name:
        # GE keys results and Data Docs by suite name: a copied file with a stale name would file one
        # table's results under another's.
        raise ConfigError(f"{path}: suite name {data.get('name')!r} must match the file name, {expected_name!r}")
    if not data["expectations"]:
        raise ConfigError(f"{path}: the suite has no expectations; every table needs at least one")

    for index, raw in enumerate(data["expectations"]):
        where = f"{path}: expectation #{index}"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise ConfigError(f"{where}: expected an object with a 'type' (e.g. \"expect_column_values_to_not_be_null\")")
        where += f" ({raw['type']})"
        severity = (raw.get("meta") or {}).get("severity")
        if severity not in SEVERITIES:
            found = "is missing" if severity is None else f"is {severity!r}"
            raise ConfigError(f"{where}: meta.severity {found}; set it to \"critical\" or \"warning\"")
        if raw.get("severity") not in (None, severity):
            raise ConfigError(f"{where}: 'severity' {raw['severity']!r} contradicts meta.severity {severity!r}; keep meta.severity only")
        # GE 1.x has its own severity field (default critical); mirror ours so GE's renderings agree.
        raw["severity"] = severity
        try:
            ExpectationConfiguration(**raw).to_domain_obj()
        except Exception as exc:  # unknown type, bad kwargs: GE raises several unrelated classes
            raise ConfigError(f"{where}: {_first_line(exc)}") from exc

    try:
        loaded = ExpectationSuiteSchema().load(data)
        suite = ExpectationSuite(**loaded)
    except Exception as exc:
        raise ConfigError(f"{path}: not a Great Expectations suite: {_first_line(exc)}") from exc
    # ExpectationSuite logs and drops an expectation it cannot build instead of raising.
    if len(suite.expectations) != len(data["expectations"]):
        raise ConfigError(f"{path}: Great Expectations dropped {len(data['expectations']) - len(suite.expectations)} expectation(s) while loading; see the log")
    return suite


def suites_for(tables: Iterable[str], suites_dir: Path | str) -> dict[str, ExpectationSuite]:
    """The suite of each table, loaded from ``suites_dir/<table>.json``; every table must have one."""
    suites_dir = Path(suites_dir)
    tables = list(tables)
    bad = [t for t in tables if not _TABLE_NAME.match(t)]
    if bad:
        raise ConfigError(f"table names must look like <layer>.<table> (lower case): {', '.join(map(repr, bad))}")
    missing = [t for t in tables if not (suites_dir / f"{t}.json").is_file()]
    if missing:
        files = ", ".join(str(suites_dir / f"{t}.json") for t in missing)
        raise ConfigError(f"no expectation suite for {', '.join(missing)}: expected {files}; every table needs one")
    return {t: load_suite(suites_dir / f"{t}.json") for t in tables}


# --- report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result on one table: counts and failing-row ids, never field values."""

    table: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    sample_ids: tuple[str, ...] = ()
    notes: str | None = None
    error: str | None = None
    """GE's exception when the expectation could not be evaluated (e.g. a missing column)."""

    def describe(self) -> str:
        """``gold.patient expect_column_values_to_be_null(national_id): 12 of 40 rows (sample ids: ...)``."""
        head = f"{self.table} {self.expectation}" + (f"({self.column})" if self.column else "")
        if self.error:
            return f"{head}: could not be evaluated: {self.error}"
        if self.unexpected_count is None:
            return f"{head}: {'passed' if self.success else 'failed'}"
        text = f"{head}: {self.unexpected_count} of {self.element_count} rows"
        if self.sample_ids:
            text += f" (sample ids: {', '.join(self.sample_ids)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "expectation": self.expectation,
            "column": self.column,
            "severity": self.severity,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "sample_ids": list(self.sample_ids),
            "notes": self.notes,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectationOutcome:
        return cls(**{**data, "sample_ids": tuple(data.get("sample_ids") or ())})


@dataclass
class QualityReport:
    """The outcome of one validation run over some tables."""

    run_id: str
    results: list[ExpectationOutcome] = field(default_factory=list)
    data_docs_index: Path | None = None

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == CRITICAL]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed expectations of severity warning."""
        return [r for r in self.results if not r.success and r.severity == WARNING]

    @property
    def verdict(self) -> str:
        """``fail`` on any critical failure, else ``warn`` on any failed warning, else ``pass``."""
        if self.critical_failures:
            return "fail"
        return "warn" if self.warnings else "pass"

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(r.table for r in self.results))

    def raise_if_critical(self) -> None:
        """Raise `QualityGateError` naming every failed critical expectation, if there is one."""
        failures = self.critical_failures
        if not failures:
            return
        what = "critical expectation failed" if len(failures) == 1 else f"{len(failures)} critical expectations failed"
        raise QualityGateError(
            f"{what}: {'; '.join(f.describe() for f in failures)} — this run's curated tables were not published"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "verdict": self.verdict,
            "critical_failures": len(self.critical_failures),
            "warnings": len(self.warnings),
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
            "results": [r.to_dict() for r in self.results],
        }


def load_report(reports_dir: Path | str, run_id: str) -> QualityReport:
    """Read back a run's report from ``reports_dir/validation/<run_id>/`` (for `carelake quality`)."""
    reports_dir = Path(reports_dir)
    run_dir = reports_dir / "validation" / _check_run_id(run_id)
    if not run_dir.is_dir():
        raise ConfigError(f"no validation results for run {run_id!r} under {run_dir.parent}")
    results: list[ExpectationOutcome] = []
    for path in sorted(run_dir.glob("*.json")):
        results += [ExpectationOutcome.from_dict(r) for r in json.loads(path.read_text(encoding="utf-8"))["results"]]
    index = reports_dir / "data_docs" / "index.html"
    return QualityReport(run_id=run_id, results=results, data_docs_index=index if index.exists() else None)


def purge_results(reports_dir: Path | str, *, before: dt.datetime) -> dict[str, int]:
    """Forget the stored results of validations run before `before` (UTC when it carries no zone).

    Each validated table of each run leaves a result in GE's store and a page in Data Docs, and every
    run lists the store and rebuilds the index over all of it: without a limit, each run costs more
    than the one before (docs/performance.md). The results go from GE's store through its API; a run's
    own summary (``reports_dir/validation/<run_id>/``, which `load_report` reads) goes once none of
    its results is kept. Data Docs drops the pages of removed results at its next build (its index
    builder cleans pages whose result is gone; see `_forget_run`). -> {"results": results removed,
    "runs": run summaries removed}.
    """
    reports_dir = Path(reports_dir).resolve()
    if not (reports_dir / "gx").is_dir():  # nothing validated here yet: make no GE project either
        return {"results": 0, "runs": 0}
    store = _context(reports_dir).validation_results_store
    before = as_utc(before)
    removed, purged, kept = 0, set(), set()
    for key in store.list_keys():
        if as_utc(key.run_id.run_time) < before:
            store.remove_key(key)
            removed += 1
            purged.add(key.run_id.run_name)
        else:
            kept.add(key.run_id.run_name)
    runs = 0
    for run_id in sorted(r for r in purged - kept if r and _RUN_ID.match(r)):
        folder = reports_dir / "validation" / run_id
        if folder.is_dir():
            shutil.rmtree(folder)
            runs += 1
    return {"results": removed, "runs": runs}


def as_utc(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC; without a zone (or with one that gives no offset) it is taken as UTC: GE stores
    UTC times, and a time read back from a store path, or Airflow's, may carry its zone differently."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


# --- running --------------------------------------------------------------------------------------


def validate_tables(
    tables: Mapping[str, DataFrame],
    *,
    suites_dir: Path | str,
    reports_dir: Path | str,
    run_id: str,
    id_column: str | Callable[[str, DataFrame], str] = "id",
    step: Callable[[str], Any] | None = None,
    docs: list | None = None,
) -> QualityReport:
    """Run each table's suite on its DataFrame; write JSON results and Data Docs under `reports_dir`.

    One GE context serves every table of the call, and Data Docs are built once at the end for all of
    them (GE's per-checkpoint `UpdateDataDocsAction` re-rendered the site index after every table: a
    fixed cost per table that grew with the number of stored results). `id_column` may be a function
    of (table, DataFrame); `step(table)`, if given, is a context manager around each table's validation
    (the runners' progress lines), yielding a dict whose "detail" it may fill in.

    Every suite is loaded before any table is validated, so a broken suite stops the run at once.
    Re-running a `run_id` replaces that run's results for these tables (JSON and Data Docs); other
    run ids accumulate in Data Docs. Does not raise on failed expectations: call
    `QualityReport.raise_if_critical` on the result. Not safe for two processes on one `reports_dir`.

    With a list as `docs`, the Data Docs pages are not built here: the call adds what they need to the
    list and `build_data_docs` builds them later, once for several calls (a run's stages).
    """
    from carelake.engine import get_spark

    _check_run_id(run_id)
    suites = suites_for(tables, suites_dir)
    # GE's Spark datasource takes whatever session is active and starts a local JVM one if there is
    # none; make sure it finds carelake's.
    get_spark()
    reports_dir = Path(reports_dir).resolve()
    context = _context(reports_dir)
    run_dir = reports_dir / "validation" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    results: list[ExpectationOutcome] = []
    identifiers: list = []
    # Listed once per call, not per table: the store lists every stored result (it grows with each run).
    stored = context.validation_results_store.list_keys()
    for table, df in tables.items():
        column = id_column(table, df) if callable(id_column) else id_column
        with (step(table) if step is not None else contextlib.nullcontext({})) as note:
            _forget_run(context, stored, suite_name=table, run_id=run_id)
            outcomes, ge_summary, ids = _validate_one(context, table, df, suites[table], run_id=run_id, id_column=column)
            failed = [o for o in outcomes if not o.success]
            if isinstance(note, dict):
                note["detail"] = "fail" if any(o.severity == CRITICAL for o in failed) else ("warn" if failed else "pass")
        identifiers += ids
        results += outcomes
        _write_json(run_dir / f"{table}.json", {
            "run_id": run_id,
            "table": table,
            "suite": table,
            "success": all(o.success for o in outcomes),
            "statistics": ge_summary,
            "results": [o.to_dict() for o in outcomes],
        })
        log.info("validated %s: %d expectations, %d failed", table, len(outcomes), sum(not o.success for o in outcomes))
    if docs is not None:
        docs += identifiers
    else:  # the pages of this call's results and suites, and the index, once (what UpdateDataDocsAction did per table)
        _render_data_docs(context, identifiers)
    return QualityReport(run_id=run_id, results=results, data_docs_index=reports_dir / "data_docs" / "index.html")


def build_data_docs(reports_dir: Path | str, identifiers: list) -> None:
    """Render the Data Docs pages of `identifiers` (gathered by `validate_tables(..., docs=...)`) and
    the site index under ``reports_dir/data_docs``. A site build costs seconds whatever it holds (the
    index lists every stored result), so a run builds once, after its last validation."""
    if identifiers:
        _render_data_docs(_context(Path(reports_dir).resolve()), identifiers)


def _render_data_docs(context, identifiers: list) -> None:
    if identifiers:
        context.build_data_docs(site_names=[_SITE], resource_identifiers=identifiers, build_index=True)


def _context(reports_dir: Path):
    """The GE file context at ``reports_dir/gx``, set up once: our Data Docs site, no progress bars."""
    gx = _gx()
    context = gx.get_context(mode="file", project_root_dir=str(reports_dir))
    changed = False
    # carelake shows its own progress; GE's tqdm "Calculating Metrics" bars would interleave with it.
    # Validator reads metric_calculations over globally, so both are set.
    if dict(context.variables.progress_bars or {}) != {"globally": False, "metric_calculations": False}:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        changed = True
    if context.variables.analytics_enabled is not False:
        context.variables.analytics_enabled = False
        changed = True
    # GE reads and parses this file at every access to a context variable, some forty times per suite
    # run (about 10 % of GE's own time per suite); carelake keeps no variables there
    reread = bool(context.variables.config_variables_file_path)
    if reread:
        context.variables.config_variables_file_path = None
        changed = True
    if changed:
        context.variables.save()
    if reread:  # the open context still reads the file: its configuration providers are built at start
        context = gx.get_context(mode="file", project_root_dir=str(reports_dir))
    sites = context.variables.data_docs_sites or {}
    if "local_site" in sites:
        # GE's default site under gx/uncommitted would be a second, stale copy of the docs.
        context.delete_data_docs_site("local_site")
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        # Relative to gx/, so a reports directory can be moved or mounted elsewhere.
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": "../data_docs/"},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    if _SITE not in sites:
        context.add_data_docs_site(_SITE, site)
    elif dict(sites[_SITE]) != site:
        context.update_data_docs_site(_SITE, site)
    return context


# What the checkpoint asks for: counts only. GE's SUMMARY format runs two more queries per row-level
# expectation, passing or not: the failing rows' values and their ids (each a filter over the whole
# table, since a passing expectation has no row to stop a LIMIT early), about a third of its Spark
# time. BASIC keeps element_count and unexpected_count; a partial_unexpected_count of 0 turns its one
# remaining row query (the failing values) into LIMIT 0, which the engine answers without a scan.
# Sample ids are then fetched for failed expectations only (_failing_ids), with _result_format.
_COUNTS_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}


def _result_format(df: DataFrame, id_column: str) -> dict[str, Any]:
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": SAMPLE_IDS,
        # No field value in results, GE's stores or Data Docs: values of failing rows may be PHI.
        "exclude_unexpected_values": True,
        # The query embeds the expectation's condition, not data, but it is noise for quality officers.
        "return_unexpected_index_query": False,
    }
    # GE fails every row-level expectation if an index column is missing, so only ask when it exists.
    if id_column in df.columns:
        result_format["unexpected_index_column_names"] = [id_column]
    return result_format


def _validate_one(context, table: str, df: DataFrame, suite, *, run_id: str, id_column: str):
    gx = _gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    datasource = _get_or_add(lambda: context.data_sources.get(_DATASOURCE), lambda: context.data_sources.add_spark(name=_DATASOURCE))
    asset = _get_or_add(lambda: datasource.get_asset(table), lambda: datasource.add_dataframe_asset(name=table))
    batch = _get_or_add(lambda: asset.get_batch_definition(_BATCH), lambda: asset.add_batch_definition_whole_dataframe(_BATCH))
    suite = _as_run(suite)
    checkpoint = _stored_checkpoint(context, table, batch, suite)
    if checkpoint is None:
        # One add_or_update, the checkpoint's: it stores its validation definition, which stores the
        # suite (calling the three factories in turn wrote the suite three times).
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=table,
            validation_definitions=[gx.ValidationDefinition(name=table, data=batch, suite=suite)],
            actions=[],  # Data Docs are built once per validate_tables call
            result_format=_COUNTS_FORMAT,
        ))
    suite = checkpoint.validation_definitions[0].suite  # as stored, with the ids the results carry
    run = RunIdentifier(run_name=run_id, run_time=dt.datetime.now(dt.timezone.utc))
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run)
    ((result_id, suite_result),) = result.run_results.items()
    # GE groups results by metric domain; reports read better in the suite file's order.
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    ordered = sorted(suite_result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    samples = _failing_ids(batch, df, [r for r in ordered if not r.success], id_column)
    outcomes = [_outcome(table, r, id_column, samples.get(r.expectation_config.id, ())) for r in ordered]
    if any(o.unexpected_count is not None and o.element_count is None for o in outcomes):
        # a uniqueness check run as a query (`_as_run`) counts failing rows only: the table's rows are
        # what every row-level expectation reports
        rows = next((o.element_count for o in outcomes if o.element_count is not None), None)
        rows = df.count() if rows is None else rows
        outcomes = [dataclasses.replace(o, element_count=rows) if o.unexpected_count is not None and o.element_count is None
                    else o for o in outcomes]
    return outcomes, dict(suite_result.statistics), [result_id, ExpectationSuiteIdentifier(name=suite_result.suite_name)]


def _as_run(suite):
    """`suite` with each plain ``expect_column_values_to_be_unique`` (no `mostly`, no row condition) as
    GE's UnexpectedRowsExpectation over the rows whose value occurs twice, found by grouping.

    GE's Spark uniqueness check counts each value's rows in a window over the whole table, which sorts
    every row: on gold.observation at 7.6 M rows, 11.7 s and a 3.3 GiB peak for that suite alone,
    against 5.2 s and 1.4 GiB grouping. The rows it finds are the same (every row whose non-null value
    another row has); the outcome is reported under the suite's own type and column (`_outcome`)."""
    gx = _gx()

    def as_run(expectation):
        if not (isinstance(expectation, gx.expectations.ExpectColumnValuesToBeUnique) and expectation.mostly == 1
                and not expectation.row_condition):
            return expectation
        column = f"`{expectation.column.replace('`', '``')}`"
        query = (f"SELECT {column} FROM {{batch}} WHERE {column} IN (SELECT {column} FROM {{batch}} "
                 f"WHERE {column} IS NOT NULL GROUP BY {column} HAVING count(*) > 1)")
        return gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=query, severity=expectation.severity,
            description=f"Values of {expectation.column} are unique ({_UNIQUE}, run as a GROUP BY)",
            meta={**(expectation.meta or {}), _RUNS_FOR: {"type": _UNIQUE, "column": expectation.column}})

    expectations = [as_run(e) for e in suite.expectations]
    if all(a is b for a, b in zip(expectations, suite.expectations)):
        return suite
    return gx.ExpectationSuite(name=suite.name, expectations=expectations, meta=suite.meta, notes=suite.notes,
                               suite_parameters=suite.suite_parameters)


def _stored_checkpoint(context, table: str, batch, suite):
    """`table`'s stored checkpoint when it already runs `suite` (the file's expectations, in order) on
    `batch` with the counts-only format and no actions; None when anything differs or cannot be read.

    Storing them again cost 0.1-0.25 CPU s per table and run (GE matches every expectation against
    every stored one with pydantic), and gave unchanged expectations new ids on every run (GE's
    expectation equality includes the id). Reusing the stored objects keeps the ids of an unchanged
    suite, as GE's add_or_update means to.
    """
    try:
        checkpoint = context.checkpoints.get(table)
        (definition,) = checkpoint.validation_definitions
        current = (
            checkpoint.actions == []
            and checkpoint.result_format == _COUNTS_FORMAT
            and definition.name == table
            and definition.data.id == batch.id
            and _same_suite(definition.suite, suite)
        )
    except Exception:  # not stored yet, or a store GE cannot read back: store it again, as before
        return None
    return checkpoint if current else None


def _same_suite(stored, suite) -> bool:
    """GE's own equality of suites and expectations, less the ids its store assigns."""
    ignore = {"id", "rendered_content"}
    return (stored.name == suite.name and stored.meta == suite.meta and stored.notes == suite.notes
            and stored.suite_parameters == suite.suite_parameters
            and [e.dict(exclude=ignore) for e in stored.expectations] == [e.dict(exclude=ignore) for e in suite.expectations])


def _failing_ids(batch_definition, df: DataFrame, failed: list, id_column: str) -> dict[str, tuple[str, ...]]:
    """Sample ids of the failed row-level expectations of one table, by expectation id.

    Those expectations are validated again, on their own, with the result format the whole suite
    used to run with (`_result_format`): GE's same failing-row query (filter, LIMIT `SAMPLE_IDS`,
    no order, so which failing rows are sampled may vary between runs, as it always did), but only
    where there is a failure to show. Expectations that could
    not be evaluated, or without failing rows (table-level ones), have no ids to fetch.
    """
    gx = _gx()

    if id_column not in df.columns:
        return {}
    samples = {r.expectation_config.id: _duplicated_ids(df, (r.expectation_config.meta or {})[_RUNS_FOR]["column"], id_column)
               for r in failed if _RUNS_FOR in (r.expectation_config.meta or {})}
    wanted = [r for r in failed if (r.result or {}).get("unexpected_count") and not (r.exception_info or {}).get("raised_exception")]
    if not wanted:
        return samples
    expectations = []
    for r in wanted:
        # a fresh copy (GE refuses an expectation of another suite), carrying the original id in its
        # meta to match the results back (GE orders results by metric domain, not as given)
        expectation = r.expectation_config.to_domain_obj()
        expectation.id = None
        expectation.meta = {**(expectation.meta or {}), _ORIGINAL_ID: r.expectation_config.id}
        expectations.append(expectation)
    # Not added to the context: this suite's results are read here and never stored.
    suite = gx.ExpectationSuite(name="carelake-samples", expectations=expectations)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format=_result_format(df, id_column))
    return samples | {(r.expectation_config.meta or {}).get(_ORIGINAL_ID): _sample_ids(r.result or {}, id_column) for r in result.results}


def _duplicated_ids(df: DataFrame, column: str, id_column: str) -> tuple[str, ...]:
    """Ids of up to `SAMPLE_IDS` rows whose `column` value another row has (a failed uniqueness check)."""
    from pyspark.sql import functions as F

    twice = df.filter(F.col(column).isNotNull()).groupBy(column).count().filter("count > 1").select(column)
    rows = df.join(twice, column, "left_semi").select(id_column).filter(F.col(id_column).isNotNull()).limit(SAMPLE_IDS)
    return tuple(dict.fromkeys(str(r[0]) for r in rows.collect()))


def _get_or_add(get, add):
    # Data source, asset and batch definition persist in gx/great_expectations.yml across runs.
    try:
        return get()
    except LookupError:  # GE's not-found for all three (KeyError, LookupError)
        return add()


def _forget_run(context, stored: list, *, suite_name: str, run_id: str) -> None:
    """Drop earlier results of this suite under this run id (among the `stored` keys), so a rerun
    replaces rather than adds.

    The Data Docs index builder then removes the orphaned HTML pages itself (skip_and_clean_missing).
    """
    store = context.validation_results_store
    for key in stored:
        if key.expectation_suite_identifier.name == suite_name and key.run_id.run_name == run_id:
            store.remove_key(key)


def _outcome(table: str, result, id_column: str, sample_ids: tuple[str, ...] = ()) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = config.kwargs or {}
    meta = config.meta or {}
    stats = result.result or {}
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ", ".join(kwargs["column_list"])
    elif column is None and "column_A" in kwargs:
        column = f"{kwargs['column_A']}, {kwargs['column_B']}"
    error = None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        error = _first_line(info.get("exception_message") or "exception")
    runs_for = meta.get(_RUNS_FOR)
    return ExpectationOutcome(
        table=table,
        expectation=runs_for["type"] if runs_for else config.type,
        column=runs_for["column"] if runs_for else column,
        severity=meta.get("severity", CRITICAL),
        success=bool(result.success),
        unexpected_count=stats.get("observed_value") if runs_for else stats.get("unexpected_count"),
        element_count=stats.get("element_count"),
        # fetched by _failing_ids (the suite runs without GE's failing-row queries); a passing
        # expectation has none
        sample_ids=(sample_ids or _sample_ids(stats, id_column)) if not result.success else (),
        notes=meta.get("notes"),
        error=error,
    )


def _sample_ids(stats: Mapping[str, Any], id_column: str) -> tuple[str, ...]:
    """Ids of failing rows from GE's ``partial_unexpected_index_list``, and nothing else from it.

    With ``exclude_unexpected_values`` GE returns ``[{id_column: [ids...]}]``; without it, one dict per
    row that also holds the failing value. Only `id_column` is read, whichever shape comes back.
    """
    ids: list[str] = []
    for entry in stats.get("partial_unexpected_index_list") or ():
        if not isinstance(entry, Mapping):
            continue
        value = entry.get(id_column)
        for item in value if isinstance(value, list) else [value]:
            # A null id (e.g. the failure of "id is not null") identifies nothing.
            if item is not None and str(item) not in ids:
                ids.append(str(item))
    return tuple(ids[:SAMPLE_IDS])


# --- helpers --------------------------------------------------------------------------------------


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r} must be letters, digits and . _ : + - (it names a directory under reports/)")
    return run_id


def _write_json(path: Path, data: Any) -> None:
    # Write then rename: a reader (CLI, Airflow sensor) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
