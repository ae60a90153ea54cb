"""ingest runner: landing files of every configured feed -> bronze.records (MERGE on record_id)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Window
from pyspark.sql import functions as F

from carelake.config import Feed
from carelake.context import RunContext
from carelake.errors import ConfigError
from transforms.ingest import split_files

__all__ = ["run", "landing_files", "FILE_SCHEMA"]

FILE_SCHEMA = "hospital string, feed string, path string, source string, received_at string, entity string, options string"


def _received_at(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_csv_header(folder: Path, entity: str, mapping: dict, mapping_name: str) -> None:
    """Fail before any work when a CSV's columns do not match its mapping (names the file and columns)."""
    from transforms.csv_feed import CsvLayoutError, read_csv_records

    try:
        next(iter(read_csv_records(folder, mapping)), None)
    except CsvLayoutError as exc:
        raise ConfigError(f"{exc} (mapping {mapping_name!r}, conf/csv_mappings/{mapping_name}.yaml)") from None


def landing_files(feeds: list[Feed], landing: Path, csv_mappings: dict[str, dict]) -> list[dict]:
    """One row per landing file to read (see `transforms.ingest` for the columns)."""
    rows = []
    for feed in feeds:
        base = {"hospital": feed.hospital, "feed": feed.kind, "entity": None, "options": None}
        if feed.kind == "csv":
            folder = landing / feed.path
            mapping = csv_mappings[feed.mapping]
            for entity, spec in (mapping.get("entities") or {}).items():
                path = folder / spec["file"]
                if not path.exists():
                    continue
                single = {**mapping, "entities": {entity: spec}}
                _check_csv_header(folder, entity, single, feed.mapping)
                rows.append({**base, "path": str(folder), "source": str(path.relative_to(landing)),
                             "received_at": _received_at(path), "entity": entity, "options": json.dumps(single)})
        else:
            for path in sorted(landing.glob(feed.path)):
                if path.is_file():
                    rows.append({**base, "path": str(path), "source": str(path.relative_to(landing)), "received_at": _received_at(path)})
    return rows


def run(ctx: RunContext, *, hospitals: list[str] | None = None) -> dict:
    """Ingest every feed (or those of `hospitals`); returns records read and new per feed."""
    lake, spark = ctx.lake, ctx.spark
    feeds = [f for f in ctx.config.feeds if hospitals is None or f.hospital in hospitals]
    with ctx.progress.step("ingest: list landing files") as note:
        files = landing_files(feeds, lake.landing, ctx.config.csv_mappings)
        note["detail"] = f"{len(files)} files from {len(feeds)} feeds"
    if not files:
        return {"files": 0, "feeds": {}}
    with ctx.progress.step("ingest: split files into records") as note:
        lake.overwrite(split_files(spark.createDataFrame(files, FILE_SCHEMA)), "staging.ingest_batch")
        staged = lake.read(spark, "staging.ingest_batch")
        feed_name = F.concat_ws("/", "hospital", "feed").alias("feed_name")
        read = {r["feed_name"]: r["count"] for r in staged.groupBy(feed_name).count().collect()}
        # a record delivered twice in one batch is kept once: the first delivery wins
        first = Window.partitionBy("record_id").orderBy("received_at", "source", "position")
        batch = staged.withColumn("_n", F.row_number().over(first)).filter("_n = 1").drop("_n")
        known = lake.read(spark, "bronze.records").select("record_id") if lake.exists("bronze.records") else None
        new = batch if known is None else batch.join(known, "record_id", "left_anti")
        added = {r["feed_name"]: r["count"] for r in new.groupBy(feed_name).count().collect()}
        note["detail"] = f"{sum(read.values())} records"
    with ctx.progress.step("ingest: merge into bronze") as note:
        lake.merge(spark, batch, "bronze.records", keys=["record_id"], partition_by=["hospital"], update=False)
        note["detail"] = f"{sum(added.values())} new"
    feeds_out = {name: {"read": read.get(name, 0), "new": added.get(name, 0)} for name in sorted(set(read) | {f.name for f in feeds})}
    return {"files": len(files), "feeds": feeds_out}
