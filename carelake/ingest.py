"""ingest runner: what every configured feed delivered -> bronze.records (MERGE on record_id).

File feeds (hl7v2, csv, fhir) are listed here and split into records inside the engine
(`transforms.ingest`). A jdbc feed reads its database incrementally (`carelake.feeds.jdbc`). A
fhir-rest feed first pulls its FHIR server into landing as NDJSON (`carelake.feeds.fhir_rest`); those
files are then split like a fhir feed's (bronze feed ``fhir``) and counted under the fhir-rest feed.
A feed path that is absolute is read in place, outside the landing zone (ad-hoc runs, external data).
"""

from __future__ import annotations

import glob as globlib
import json
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Window
from pyspark.sql import functions as F

from carelake.config import Feed
from carelake.context import RunContext
from carelake.errors import ConfigError
from transforms.ingest import BRONZE_COLUMNS, split_files

__all__ = ["run", "landing_files", "feed_paths", "FILE_SCHEMA"]

FILE_SCHEMA = "hospital string, feed string, path string, source string, received_at string, entity string, options string"
_BRONZE_NAMES = [name for name, _ in BRONZE_COLUMNS]


def _received_at(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_csv_header(folder: Path, entity: str, mapping: dict, mapping_name: str) -> None:
    """Fail before any work when a CSV's columns do not match its mapping (names the file and columns)."""
    from transforms.csv_feed import CsvLayoutError, read_csv_records

    try:
        next(iter(read_csv_records(folder, mapping)), None)
    except CsvLayoutError as exc:
        raise ConfigError(f"{exc} (mapping {mapping_name!r}, conf/csv_mappings/{mapping_name}.yaml)") from None


def feed_paths(pattern: str, landing: Path) -> list[Path]:
    """Files (or, without glob characters, the folder) a feed path names: under landing, or in place when absolute."""
    if Path(pattern).is_absolute():
        return sorted(Path(p) for p in globlib.glob(pattern, recursive=True))
    return sorted(landing.glob(pattern))


def _size(row: dict, landing: Path) -> int:
    """Bytes of a landing file row (a csv row names its folder; its source is the entity's file)."""
    path = Path(row["path"])
    return (path if path.is_file() else landing / row["source"]).stat().st_size


def _source(path: Path, landing: Path) -> str:
    """How bronze names a file: relative to landing, else its absolute path (read in place)."""
    try:
        return str(path.relative_to(landing))
    except ValueError:
        return str(path)


def landing_files(feeds: list[Feed], landing: Path, csv_mappings: dict[str, dict], *,
                  received_between: tuple[datetime, datetime] | None = None) -> list[dict]:
    """One row per delivered file to read (see `transforms.ingest` for the columns)."""
    rows = []
    for feed in feeds:
        base = {"hospital": feed.hospital, "feed": feed.kind, "entity": None, "options": None}
        if feed.kind in ("jdbc", "fhir-rest"):  # not files: read or pulled by ingest itself
            continue
        if feed.kind == "csv":
            folder = Path(feed.path) if Path(feed.path).is_absolute() else landing / feed.path
            mapping = csv_mappings[feed.mapping]
            for entity, spec in (mapping.get("entities") or {}).items():
                path = folder / spec["file"]
                if not path.exists():
                    continue
                single = {**mapping, "entities": {entity: spec}}
                _check_csv_header(folder, entity, single, feed.mapping)
                rows.append({**base, "path": str(folder), "source": _source(path, landing),
                             "received_at": _received_at(path), "entity": entity, "options": json.dumps(single)})
            continue
        options = {k: v for k, v in feed.options.items() if k == "reference_files"}
        for path in feed_paths(feed.path, landing):
            if path.is_file():
                rows.append({**base, "path": str(path), "source": _source(path, landing), "received_at": _received_at(path),
                             "options": json.dumps(options) if options else None})
    if received_between:  # files received (modified) in [start, end): one Airflow data interval
        start, end = (t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for t in received_between)
        rows = [r for r in rows if start <= r["received_at"] < end]
    return rows


def run(ctx: RunContext, *, hospitals: list[str] | None = None,
        received_between: tuple[datetime, datetime] | None = None) -> dict:
    """Ingest every feed (or those of `hospitals`); returns records read, new and skipped per feed."""
    lake, spark = ctx.lake, ctx.spark
    feeds = [f for f in ctx.config.feeds if hospitals is None or f.hospital in hospitals]
    pulls, pulled = {}, {}
    for feed in (f for f in feeds if f.kind == "fhir-rest"):
        from carelake.feeds.fhir_rest import pull

        with ctx.progress.step(f"ingest: pull {feed.name} from its FHIR server") as note:
            pulls[feed.name] = pull(ctx, feed)
            note["detail"] = f"{sum(pulls[feed.name].resources.values())} resources in {len(pulls[feed.name].files)} files"
    with ctx.progress.step("ingest: list landing files") as note:
        files = landing_files(feeds, lake.landing, ctx.config.csv_mappings, received_between=received_between)
        # a pull is this run's delivery, whatever the data interval: the server's marks are its increment
        for feed in (f for f in feeds if f.kind == "fhir-rest"):
            for path in pulls[feed.name].files:
                row = {"hospital": feed.hospital, "feed": "fhir", "path": str(path), "source": _source(path, lake.landing),
                       "received_at": _received_at(path), "entity": None, "options": None}
                files.append(row)
                pulled[row["source"]] = feed.name
        lake.check_landing_files(files)  # too big or unreadable: refused by name before any write
        # Biggest first: each file is one task of the split, and a big file started last is the run's tail.
        files.sort(key=lambda row: _size(row, lake.landing), reverse=True)
        note["detail"] = f"{len(files)} files from {len(feeds)} feeds"
    parts = []
    if files:
        with ctx.progress.step("ingest: split files into records"):
            records = split_files(spark.createDataFrame(files, FILE_SCHEMA), max_record_bytes=lake.limits.max_record_bytes)
            parts.append(lake.materialize(spark, records, "staging.ingest_batch"))
    jdbc = {}
    for index, feed in enumerate(f for f in feeds if f.kind == "jdbc"):
        from carelake.feeds.jdbc import read_feed

        with ctx.progress.step(f"ingest: read {feed.name} from its database") as note:
            table, jdbc[feed.name] = read_feed(ctx, feed)
            if table is not None:  # read once: the database may change while the run counts
                parts.append(lake.materialize(spark, table, f"staging.jdbc_batch_{index}"))
            note["detail"] = f"{jdbc[feed.name]['rows']} rows"
    if not parts:
        for feed in (f for f in feeds if f.kind == "fhir-rest"):
            _commit_pull(ctx, feed, pulls[feed.name])  # nothing new, but a bulk export's time still moves on
        # a pull that found nothing new still says so; file feeds with no files keep the old, empty answer
        empty = {f.name: {"read": 0, "new": 0} for f in feeds if f.kind == "fhir-rest"}
        return {"files": 0, "feeds": empty, **({"fhir_rest": {n: p.summary(lake.landing) for n, p in pulls.items()}} if pulls else {})}
    staged = parts[0]
    for part in parts[1:]:
        staged = staged.unionByName(part.select(*_BRONZE_NAMES))
    with ctx.progress.step("ingest: count and deduplicate records") as note:
        feed_name = F.concat_ws("/", "hospital", "feed")
        if pulled:  # bronze says fhir (the records are FHIR resources); the summary names the feed that pulled them
            label = F.lit(None).cast("string")
            for name in sorted(set(pulled.values())):
                label = F.when(F.col("source").isin([s for s, n in pulled.items() if n == name]), F.lit(name)).otherwise(label)
            feed_name = F.coalesce(label, feed_name)
        feed_name = feed_name.alias("feed_name")
        skipped_rows = staged.filter(F.col("format").startswith("skipped:"))
        skipped: dict = {}
        for r in skipped_rows.groupBy(feed_name, "format").count().collect():
            skipped.setdefault(r["feed_name"], {})[r["format"].removeprefix("skipped:")] = r["count"]
        records = staged.filter(~F.col("format").startswith("skipped:"))
        read = {r["feed_name"]: r["count"] for r in records.groupBy(feed_name).count().collect()}
        # a record delivered twice in one batch is kept once: the first delivery wins. Counting the
        # distinct ids first spares the sort of every payload by id when (as usual) no record repeats.
        batch = records
        if records.select("record_id").distinct().count() < sum(read.values()):
            first = Window.partitionBy("record_id").orderBy("received_at", "source", "position")
            batch = records.withColumn("_n", F.row_number().over(first)).filter("_n = 1").drop("_n")
        known = lake.read(spark, "bronze.records").select("record_id") if lake.exists("bronze.records") else None
        if known is None and batch is records:
            added = dict(read)
        else:
            new = batch if known is None else batch.join(known, "record_id", "left_anti")
            added = {r["feed_name"]: r["count"] for r in new.groupBy(feed_name).count().collect()}
        note["detail"] = f"{sum(read.values())} records"
    with ctx.progress.step("ingest: merge into bronze") as note:
        lake.merge(spark, batch, "bronze.records", keys=["record_id"], partition_by=["hospital"], update=False)
        note["detail"] = f"{sum(added.values())} new"
    for feed in (f for f in feeds if f.kind == "jdbc"):
        from carelake.feeds.jdbc import commit_watermarks

        commit_watermarks(ctx, feed, jdbc[feed.name])  # only once the rows are safely in bronze
    for feed in (f for f in feeds if f.kind == "fhir-rest"):
        _commit_pull(ctx, feed, pulls[feed.name])
    names = {f.name for f in feeds}
    feeds_out = {name: {"read": read.get(name, 0), "new": added.get(name, 0), **({"skipped": skipped[name]} if name in skipped else {})}
                 for name in sorted(set(read) | names)}
    out = {"files": len(files), "feeds": feeds_out}
    if jdbc:
        out["jdbc"] = {name: {k: v for k, v in state.items() if k != "pending"} for name, state in jdbc.items()}
    if pulls:
        out["fhir_rest"] = {name: result.summary(lake.landing) for name, result in pulls.items()}
    return out


def _commit_pull(ctx: RunContext, feed: Feed, result) -> None:
    from carelake.feeds.state import commit_marks

    commit_marks(ctx, feed, result.pending, result.rows_per_mark())
