"""Zones, table paths and Delta I/O.

A table is named ``<layer>.<name>``; the layer decides its zone and folder:

============  ========  ====================
layer         zone      folder
============  ========  ====================
bronze        phi       phi/bronze/<name>
silver        phi       phi/silver/<name>
phi           phi       phi/<name>  (quarantine, person_xref, record_status, audit)
staging       phi       phi/_staging/<name>  (gold before the quality gate lets it out)
gold          curated   curated/gold/<name>
marts         curated   curated/marts/<name>
============  ========  ====================

Writes are idempotent: `merge` upserts on a key and rewrites a row only when it changed; `overwrite`
replaces a whole table or one partition. Each write is one Delta commit, so a process killed at any
point leaves every table at its last committed version (see docs/reliability.md).

Several runs may write the same table at once (ingest DAGs of different hospitals): a write that loses
the race for a Delta commit is retried with jittered exponential backoff (`Limits.write_retries`).
Staging tables are private to a run: a Lake made with `scope` (`Lake.for_run`) resolves
``staging.<name>`` under ``phi/_staging/<scope>/``, so concurrent runs never overwrite each other's
intermediate tables; the pipeline removes the folder when the run ends.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from carelake.config import Config
from carelake.errors import ConfigError, LandingFileError, WriteConflictError

__all__ = ["Lake", "TableInfo", "Limits", "LAYERS", "default_workdir", "is_commit_conflict", "FAULT_ENV"]

log = logging.getLogger(__name__)

#: Fault injection for the crash tests: ``<point>@<table>`` (``*`` for any table), optionally
#: ``#<n>`` for the n-th matching write (1-based). Points: ``before_write``, ``during_write`` (a timer
#: fires ``CARELAKE_FAULT_DELAY`` seconds into the write), ``after_write``. The process kills itself
#: with SIGKILL, as the kernel's OOM killer or a node loss would: no cleanup, no atexit.
FAULT_ENV = "CARELAKE_FAULT"

LAYERS = {
    "bronze": ("phi", "bronze"),
    "silver": ("phi", "silver"),
    "phi": ("phi", ""),
    "staging": ("phi", "_staging"),
    "gold": ("curated", "gold"),
    "marts": ("curated", "marts"),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def default_workdir() -> Path:
    return Path(os.environ.get("CARELAKE_HOME") or "carelake-home")


@dataclass(frozen=True)
class Limits:
    """Resource limits and write retries (conf/lake.yaml ``limits``)."""

    #: a record (HL7 v2 message, CSV row, FHIR resource) larger than this is kept in bronze as a marker
    #: and quarantined with TOO_LARGE: one giant message must not take a run down
    max_record_bytes: int = 4 * 1024 * 1024
    #: a landing file larger than this is refused before any work, naming the file
    max_file_bytes: int = 2 * 1024 * 1024 * 1024
    #: attempts for a write that loses a concurrent Delta commit race
    write_retries: int = 8
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 20.0
    #: staging folders of runs that died are swept when older than this
    staging_ttl_hours: float = 24.0
    #: a MERGE source with more rows than this is merged in pieces of at most about this many rows: the
    #: engine holds a MERGE's source in memory (a hash join's build side cannot spill), and a 520,000-row
    #: silver MERGE outgrew the default 1.5 GiB engine pool
    merge_batch_rows: int = 200_000
    #: the size a written Delta data file aims at (Sail's ``targetFileSize``): Sail's writer holds a whole
    #: file in memory, as one row group, until the file is done, so this bounds the memory of a write.
    #: Rewriting 4.9 M Observations peaked at 2.5 GiB with Sail's own file size, at 1.4 GiB with 16 MiB
    target_file_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "conf/lake.yaml") -> "Limits":
        data = data or {}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) under 'limits': {', '.join(unknown)}; known: {', '.join(known)}")
        values = {}
        for name, value in data.items():
            kind = type(getattr(cls, name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{where}: limits.{name} must be a positive number, found {value!r}")
            values[name] = kind(value)
        return cls(**values)


@dataclass(frozen=True)
class TableInfo:
    name: str
    zone: str
    path: str
    rows: int
    version: int


@dataclass(frozen=True)
class Lake:
    """The zones of one working directory, as `conf/lake.yaml` lays them out."""

    workdir: Path
    zones: dict[str, str]
    limits: Limits = field(default_factory=Limits)
    #: the run whose staging tables this Lake resolves; None: the shared ``phi/_staging/<name>``
    scope: str | None = None
    #: (table, version) of every commit made through this Lake, for the audit
    writes: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: Config, workdir: Path | str | None = None, *, run_id: str | None = None) -> "Lake":
        lake_yaml = Path(config.conf_dir) / "lake.yaml"
        data = (yaml.safe_load(lake_yaml.read_text(encoding="utf-8")) or {}) if lake_yaml.exists() else {}
        limits = Limits.from_dict(data.get("limits") if isinstance(data, dict) else None, str(lake_yaml))
        lake = cls(Path(workdir or default_workdir()).resolve(), dict(config.zones), limits)
        return lake.for_run(run_id) if run_id else lake

    def for_run(self, run_id: str) -> "Lake":
        """This lake with staging private to `run_id` (plus a random suffix: two tasks of one Airflow run
        may run at once)."""
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", run_id)[-80:]
        return Lake(self.workdir, self.zones, self.limits, f"{safe}-{uuid.uuid4().hex[:8]}")

    def zone(self, zone: str) -> Path:
        if zone not in self.zones:
            raise ConfigError(f"unknown zone {zone!r}; zones: {', '.join(self.zones)}")
        value = str(self.zones[zone])
        if "://" in value:
            if not value.startswith("file://"):
                raise ConfigError(f"zone {zone}: {value!r} — only local paths and file:// URIs are supported by the "
                                  "embedded engine; mount object storage or run on a Spark cluster")
            value = value[len("file://"):]
        root = Path(value).expanduser()
        return root if root.is_absolute() else self.workdir / root

    @property
    def staging_root(self) -> Path:
        return self.zone("phi") / "_staging"

    @property
    def landing(self) -> Path:
        return self.zone("landing")

    @property
    def reports(self) -> Path:
        return self.zone("reports")

    def zone_of(self, table: str) -> str:
        layer, _ = self._split(table)
        return LAYERS[layer][0]

    def path(self, table: str) -> Path:
        """Folder of `table`; a curated table can never resolve inside the phi zone, nor the reverse."""
        layer, name = self._split(table)
        zone, folder = LAYERS[layer]
        path = self.zone(zone) / folder / name
        if layer == "staging" and self.scope:
            path = self.staging_root / self.scope / name
        other = self.zone("phi" if zone == "curated" else "curated").resolve()
        if other == path.resolve() or other in path.resolve().parents:
            raise ConfigError(f"table {table} would be written inside the {('phi' if zone == 'curated' else 'curated')} zone ({path}); give the zones separate roots in conf/lake.yaml")
        return path

    def exists(self, table: str) -> bool:
        return (self.path(table) / "_delta_log").is_dir()

    @staticmethod
    def _split(table: str) -> tuple[str, str]:
        layer, _, name = table.partition(".")
        if layer not in LAYERS or not _NAME.match(name):
            raise ValueError(f"table name {table!r} must be <layer>.<name> with layer one of {', '.join(LAYERS)}")
        return layer, name

    # -- reading and writing ------------------------------------------------------------------

    def read(self, spark, table: str, *, version: int | None = None):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(str(self.path(table)))

    def overwrite(self, df, table: str, *, partition_by: list[str] | None = None, replace_where: str | None = None) -> None:
        """Replace the table (or, with `replace_where`, the rows of one partition) by `df`."""
        def write():
            writer = self._writer(df, "overwrite", partition_by).option("overwriteSchema", "true")
            if replace_where and self.exists(table):
                writer = writer.option("replaceWhere", replace_where)
            writer.save(str(self.path(table)))

        self._commit(table, write)

    def materialize(self, spark, df, table: str):
        """Write `df` over `table` (a staging table, mostly) and return the table as read back: `df` is
        evaluated once, and what reads the result runs on files whose row counts the engine's planner
        knows (it builds a join's hash table from the smaller side only when it knows both)."""
        self.overwrite(df, table)
        return self.read(spark, table)

    def _writer(self, df, mode: str, partition_by: list[str] | None):
        # Sail's option; JVM Spark's Delta writer ignores options it does not read (not run here: no Delta jars)
        writer = df.write.format("delta").option("targetFileSize", self.limits.target_file_bytes).mode(mode)
        return writer.partitionBy(*partition_by) if partition_by else writer

    def merge(self, spark, df, table: str, *, keys: list[str], partition_by: list[str] | None = None,
              delete_when: str | None = None, insert_when: str | None = None, update: bool = True,
              stage: bool = False) -> None:
        """Upsert `df` into `table` on `keys`; a matched row is rewritten only when a column changed.

        `df` must hold each key once. `delete_when` / `insert_when` are SQL conditions on the source
        (alias ``s``) that delete matched rows or limit which unmatched rows are inserted. A source of more
        than `limits.merge_batch_rows` rows is merged in pieces by a hash of the keys, so the engine's
        memory for a MERGE does not grow with the source. `stage` evaluates `df` into a staging table
        first, once: for a source with its own sort or window, which inside the MERGE's query competes
        with the MERGE's join for the engine's memory.

        A source of several pieces that is also a large part of the table (`_rewrites`: a re-map after a
        mapping change, every record again) writes only its new and changed rows, in at most one commit
        (`_rewrite`): nothing when nothing changed. Each piece of a MERGE reads the whole table and
        rewrites every data file it matches, which the pieces' hash spreads over all files, so pieces
        cost the table's size each (a re-map of 4,000 patients: 11.1 s for silver.observation's four
        pieces).
        """
        path = str(self.path(table))
        rows = df.alias("s").filter(insert_when).select(*df.columns) if insert_when else df

        def create() -> bool:
            # mode "error", not "overwrite": when another run creates the table first, its rows must
            # not be replaced; we lose the race, see "already exists" and MERGE instead
            try:
                self._writer(rows, "error", partition_by).save(path)
                return True
            except Exception as exc:
                if "already exists" in str(exc):
                    return False
                raise

        if not self.exists(table) and self._commit(table, create):
            return
        if insert_when:
            df = self._relevant(spark, df, table, keys=keys, insert_when=insert_when)
        source = self._stage(df) if stage else None
        try:
            staged = self.read(spark, source) if source else df
            rows_in = staged.count()
            pieces = -(-rows_in // self.limits.merge_batch_rows)
            if pieces > 1 and source is None:  # computed once, read by every piece
                source = self._stage(df)
                staged = self.read(spark, source)
            if pieces <= 1:
                self._merge_statement(spark, staged, table, keys=keys, delete_when=delete_when, insert_when=insert_when, update=update)
                return
            if (not delete_when and not insert_when and self._rewrites(spark, rows_in, table)
                    and self._rewrite(spark, staged, table, keys=keys, partition_by=partition_by, update=update)):
                return
            from pyspark.sql import functions as F

            # Each piece is its own commit: a run that dies between two leaves some pieces merged, which
            # a rerun's MERGE of the same rows changes no further.
            bucket = F.pmod(F.xxhash64(*[F.col(f"`{k}`") for k in keys]), F.lit(pieces))
            for piece in range(pieces):
                self._merge_statement(spark, staged.filter(bucket == piece), table, keys=keys, delete_when=delete_when,
                                      insert_when=insert_when, update=update)
        finally:
            if source:
                shutil.rmtree(self.path(source), ignore_errors=True)

    def _relevant(self, spark, df, table: str, *, keys: list[str], insert_when: str):
        """The rows of a MERGE source that can change `table`: those `insert_when` admits, and those whose
        key the table holds (a source row that is neither matches nothing and is not inserted).

        Only for a table small enough to hold its keys in a join (`merge_batch_rows`): then a source of
        every record (normalize's outcomes into phi.quarantine, 20 M rows at 100,000 patients) shrinks
        to the quarantined records, one MERGE instead of a hundred pieces that each scan the source."""
        from pyspark.sql import functions as F

        current = self.read(spark, table)
        if current.count() > self.limits.merge_batch_rows:
            return df
        admitted = F.expr(f"coalesce(({insert_when}), false)")
        rows = df.alias("s")
        return rows.filter(admitted).select(*df.columns).unionByName(
            rows.filter(~admitted).join(current.select(*keys), keys, "left_semi").select(*df.columns))

    def _rewrites(self, spark, rows_in: int, table: str) -> bool:
        """Whether `merge` tries `_rewrite` for a source of `rows_in` rows instead of merging it in pieces:
        when the source holds at least a quarter as many rows as the table."""
        return rows_in * 4 >= self.read(spark, table).count()

    def _rewrite(self, spark, source, table: str, *, keys: list[str], partition_by: list[str] | None, update: bool) -> bool:
        """What the MERGE of `source` gives, in at most one commit, writing as little as it can; False
        (nothing written) when that would need a join with more than `limits.merge_batch_rows` keys.

        An aggregation over the keys of both (it spills) finds the keys whose source row changes the
        table: new keys and, with `update`, keys whose row differs (by two hashes of the whole row, so
        the rows themselves are never sorted or held: a window over table and source, 15 M
        Observations with their JSON at 100,000 patients, spilled runs whose merge outgrew the pool).
        Those keys are staged, so the joins that pick rows build their hash tables from a small table.
        None: nothing is written (a re-map whose mappers give the same resources). At most
        `merge_batch_rows`: their rows go in one MERGE (without `update`, an append). Else, with
        `update`, when the table rows the source leaves alone are that few: the source and those rows
        are written as the table's new version."""
        from pyspark.sql import functions as F

        current = self.read(spark, table)
        cols = [F.col(f"`{k}`") for k in keys]
        # a null leaves Spark's row hashes unchanged: hash each column's null flag too, so that values
        # moving between columns change the hash
        parts = [x for c in current.columns for x in (F.col(f"`{c}`"), F.col(f"`{c}`").isNull())] if update else [F.lit(0)]

        def tagged(df, in_table: int):
            return df.select(*cols, F.xxhash64(*parts).alias("_h1"), F.hash(*parts).alias("_h2"),
                             F.lit(in_table).alias("_t"), F.lit(1 - in_table).alias("_s"))

        per_key = tagged(current, 1).unionByName(tagged(source, 0)).groupBy(*cols).agg(
            F.max("_t").alias("t"), F.max("_s").alias("s"),
            ((F.min("_h1") != F.max("_h1")) | (F.min("_h2") != F.max("_h2"))).alias("differs"))
        changes = (F.col("s") == 1) & ((F.col("t") == 0) | F.col("differs"))
        kind = F.when(changes, F.lit("change")).when((F.col("t") == 1) & (F.col("s") == 0), F.lit("alone"))
        name = self._stage(per_key.select(*cols, kind.alias("_kind")).filter(F.col("_kind").isNotNull()))
        try:
            staged = self.read(spark, name)
            counts = {r["_kind"]: r["count"] for r in staged.groupBy("_kind").count().collect()}
            limit = self.limits.merge_batch_rows
            if not counts.get("change"):
                return True
            if counts["change"] <= limit:
                picked = source.join(staged.filter("_kind = 'change'").select(*keys), keys, "left_semi").select(*current.columns)
                if update:
                    self._merge_statement(spark, picked, table, keys=keys, delete_when=None, insert_when=None, update=True)
                else:
                    self._append(picked, table, partition_by)
                return True
            if not update or counts.get("alone", 0) > limit:
                return False
            alone = current.join(staged.filter("_kind = 'alone'").select(*keys), keys, "left_semi")
            # the table's files are read while its new version is written: the old files stay on disk
            # (a Delta overwrite only marks them removed), so the read sees a fixed version
            self.overwrite(source.select(*current.columns).unionByName(alone), table, partition_by=partition_by)
            return True
        finally:
            shutil.rmtree(self.path(name), ignore_errors=True)

    def _append(self, rows, table: str, partition_by: list[str] | None) -> None:
        """Append `rows` to `table` in one commit."""
        def write():
            self._writer(rows, "append", partition_by).save(str(self.path(table)))

        self._commit(table, write)

    def _stage(self, df) -> str:
        """Write `df` to a new staging table of its own; its name."""
        name = f"staging.merge_source_{uuid.uuid4().hex[:12]}"
        self.overwrite(df, name)
        return name

    def _merge_statement(self, spark, df, table: str, *, keys: list[str], delete_when: str | None, insert_when: str | None,
                         update: bool) -> None:
        view = f"carelake_src_{uuid.uuid4().hex[:12]}"
        df.createOrReplaceTempView(view)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in df.columns if c not in keys)
        clauses = []
        if delete_when:
            clauses.append(f"WHEN MATCHED AND ({delete_when}) THEN DELETE")
        if update and changed:
            clauses.append(f"WHEN MATCHED AND ({changed}) THEN UPDATE SET *")
        clauses.append(f"WHEN NOT MATCHED {('AND (' + insert_when + ')') if insert_when else ''} THEN INSERT *")
        statement = f"MERGE INTO delta.`{self.path(table)}` AS t USING {view} AS s ON {on} " + " ".join(clauses)
        try:
            self._commit(table, lambda: spark.sql(statement).collect())
        finally:
            spark.catalog.dropTempView(view)

    def _commit(self, table: str, write):
        """Run `write` (one Delta commit), retrying when a concurrent writer committed first."""
        limits = self.limits
        _fault("before_write", table)
        for attempt in range(1, limits.write_retries + 1):
            timer = _fault_timer("during_write", table)
            try:
                result = write()
                break
            except Exception as exc:
                if not is_commit_conflict(exc):
                    raise
                if attempt == limits.write_retries:
                    raise WriteConflictError(
                        f"{table}: {attempt} attempts lost a concurrent Delta commit; another writer keeps changing "
                        f"the table — rerun, or raise limits.write_retries in conf/lake.yaml") from None
                # full jitter: concurrent losers must not retry in lock step
                delay = random.uniform(0, min(limits.retry_max_seconds, limits.retry_base_seconds * 2 ** (attempt - 1)))
                log.info("%s: concurrent commit, retry %d/%d in %.2fs", table, attempt, limits.write_retries - 1, delay)
                time.sleep(delay)
            finally:
                if timer is not None and timer.is_alive():
                    # the write beat the timer: die now, so that the kill the test asked for happens
                    timer.cancel()
                    _die()
        self._record_write(table)
        _fault("after_write", table)
        return result

    def _record_write(self, table: str) -> None:
        try:
            from deltalake import DeltaTable

            version = DeltaTable(str(self.path(table))).version()
        except Exception:  # the audit is best effort; the commit itself succeeded
            version = None
        self.writes.append((table, version))

    def drop_staging(self) -> None:
        """Remove this run's staging folder (a Lake without a scope owns none)."""
        if self.scope:
            shutil.rmtree(self.staging_root / self.scope, ignore_errors=True)

    def sweep_staging(self, *, now: float | None = None) -> list[str]:
        """Remove staging folders of runs that died more than `limits.staging_ttl_hours` ago."""
        root, removed = self.staging_root, []
        if not root.is_dir():
            return removed
        cutoff = (now or time.time()) - self.limits.staging_ttl_hours * 3600
        for folder in root.iterdir():
            if folder.is_dir() and not (folder / "_delta_log").exists() and folder.name != self.scope:
                newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
                if newest < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder.name)
        return removed

    def check_landing_files(self, files: list[dict]) -> None:
        """Refuse, before any work, a landing file that is too big or cannot be read, naming it."""
        limit = self.limits.max_file_bytes
        for row in files:
            path = Path(row["path"])
            targets = [path] if path.is_file() else [self.landing / row["source"]]
            for target in targets:
                try:
                    size = target.stat().st_size
                    with open(target, "rb") as handle:
                        handle.read(1)
                except OSError as exc:
                    raise LandingFileError(f"landing file {row['source']} cannot be read ({exc.strerror or type(exc).__name__}); "
                                           "fix its permissions or remove it, then rerun — nothing was ingested") from None
                if size > limit:
                    raise LandingFileError(f"landing file {row['source']} is {size:,} bytes, over limits.max_file_bytes "
                                           f"({limit:,}) in conf/lake.yaml; split the delivery or raise the limit — nothing was ingested")

    # -- listing ------------------------------------------------------------------------------

    def tables(self, zones: tuple[str, ...] = ("phi", "curated")) -> list[TableInfo]:
        """Every Delta table in `zones`, with row counts read from the Delta log (no engine needed)."""
        from deltalake import DeltaTable

        found = []
        for zone in zones:
            root = self.zone(zone)
            if not root.exists():
                continue
            for log in sorted(root.rglob("_delta_log")):
                folder = log.parent
                relative = folder.relative_to(root).parts
                if relative and relative[0] == "_staging":
                    continue
                name = _table_name(zone, relative)
                table = DeltaTable(str(folder))
                found.append(TableInfo(name, zone, str(folder), _row_count(table), table.version()))
        return found


def is_commit_conflict(exc: BaseException) -> bool:
    """A write that lost a concurrent commit: Sail says ``Failed to commit transaction`` (a
    SparkRuntimeException); Delta on JVM Spark raises its Concurrent*Exception classes."""
    text = f"{type(exc).__name__}: {exc}"
    return "Failed to commit transaction" in text or any(
        marker in text for marker in ("ConcurrentAppendException", "ConcurrentDeleteReadException",
                                      "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
                                      "MetadataChangedException", "ProtocolChangedException", "DELTA_CONCURRENT_"))


def _fault_matches(point: str, table: str) -> bool:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return False
    for one in spec.split(","):
        where, _, nth = one.partition("#")
        want_point, _, want_table = where.partition("@")
        if want_point != point or want_table not in ("*", table):
            continue
        key = f"{FAULT_ENV}_SEEN_{one}"
        seen = int(os.environ.get(key, "0")) + 1
        os.environ[key] = str(seen)
        if seen == int(nth or 1):
            return True
    return False


def _die() -> None:
    log.warning("fault injection: SIGKILL")
    os.kill(os.getpid(), signal.SIGKILL)


def _fault(point: str, table: str) -> None:
    if _fault_matches(point, table):
        _die()


def _fault_timer(point: str, table: str):
    if not _fault_matches(point, table):
        return None
    timer = threading.Timer(float(os.environ.get("CARELAKE_FAULT_DELAY", "0.05")), _die)
    timer.daemon = True
    timer.start()
    return timer


def _table_name(zone: str, parts: tuple[str, ...]) -> str:
    if len(parts) == 2 and parts[0] in LAYERS:
        return f"{parts[0]}.{parts[1]}"
    return f"{'phi' if zone == 'phi' else 'curated'}.{'/'.join(parts)}"


def _row_count(table) -> int:
    """Rows from the file statistics in the Delta log; scans only when a writer left no statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    actions = pa.table(table.get_add_actions(flatten=True))
    if "num_records" in actions.column_names and actions.column("num_records").null_count == 0:
        return int(pc.sum(actions.column("num_records")).as_py() or 0)
    return table.to_pyarrow_dataset().count_rows()
