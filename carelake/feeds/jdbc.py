"""jdbc feed: tables or queries of a hospital's SQL database -> bronze records, incremental on a watermark.

The mapping is a conf/csv_mappings file whose entities name a ``table`` or a ``query`` instead of a
``file``, plus a ``watermark`` column (a timestamp or increasing number)::

    name: his-sql
    entities:
      patients:
        table: his.patients
        watermark: updated_at
        columns: {patient_id: pat_no, family: surname, ...}
        ignore: [updated_at]

Each run reads, per entity, the rows whose watermark is at or above the high-water mark of the last run
(kept in ``phi.feed_state``, see `carelake.feeds.state`). ``>=`` rather than
``>`` so that a row committed later with the same timestamp is not lost; rows read twice have the same
content hash and are not stored twice. The new mark is written only after the rows are in bronze, so
a failed run reads them again. Bronze's ``received_at`` of a row is the time of the read, to the
microsecond (`_read_time`).

Reading goes through Sail's JDBC data source (pysail[jdbc], connectorx underneath; registered on the
session here), so rows stream into the engine without passing through the driver; on a JVM Spark
session the built-in JDBC source is used. The database URL comes from the environment
(``options.url_env``), never from conf, because it carries the password.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timezone
from decimal import Decimal
from urllib.parse import unquote, urlparse

from pyspark.sql import functions as F

from carelake.config import Feed
from carelake.context import RunContext
from carelake.errors import ConfigError
from carelake.feeds.state import STATE_TABLE, commit_marks, read_marks
from transforms.arrow import map_rows
from transforms.ids import record_id
from transforms.ingest import BRONZE_COLUMNS

__all__ = ["read_feed", "commit_watermarks", "jdbc_options", "STATE_TABLE"]

_registered: set[int] = set()


def jdbc_options(url: str) -> dict:
    """A ``postgresql://user:pass@host:port/db`` URL as JDBC reader options (url, user, password)."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("jdbc"):
        return {"url": url}
    if not parsed.scheme or not parsed.hostname:
        raise ConfigError("the jdbc feed's database URL must look like postgresql://user:password@host:port/database")
    netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    options = {"url": f"jdbc:{parsed.scheme}://{netloc}{parsed.path or '/'}"}
    if parsed.username:
        options["user"] = unquote(parsed.username)
    if parsed.password:
        options["password"] = unquote(parsed.password)
    return options


def _url(feed: Feed) -> str:
    if feed.options.get("url_env"):
        value = os.environ.get(feed.options["url_env"])
        if not value:
            raise ConfigError(f"hospital {feed.hospital}: jdbc feed reads its database URL from ${feed.options['url_env']}, which is not set")
        return value
    return feed.options["url"]


def _reader(spark):
    if id(spark) not in _registered and hasattr(spark, "dataSource"):
        try:
            from pysail.spark.datasource.jdbc import JdbcDataSource

            spark.dataSource.register(JdbcDataSource)
        except ImportError:
            pass  # a JVM Spark session has its own jdbc source
        _registered.add(id(spark))
    return spark.read.format("jdbc")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _read_time() -> str:
    """The read's `received_at`, to the microsecond: a row changed between two reads in the same second
    must still come out of the second read as the later delivery. A file's `received_at` is its
    modification time to the second; there the file name orders two deliveries of one second, but two
    reads of one table share their `source`, and without the fraction the latest-per-id order fell to
    the record ids' hashes (a flaky test: two runs within one second kept the old row half the time)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_feed(ctx: RunContext, feed: Feed):
    """(bronze DataFrame or None, state) for one jdbc feed; state carries the pending watermarks."""
    mapping = ctx.config.csv_mappings[feed.mapping]
    options = jdbc_options(_url(feed))
    marks = read_marks(ctx, feed)
    received = _read_time()
    parts, pending, counts = [], {}, {}
    for entity, spec in (mapping.get("entities") or {}).items():
        source = spec.get("query") or spec.get("table")
        if not source:
            raise ConfigError(f"mapping {feed.mapping!r}: entity {entity} of a jdbc feed needs 'table' or 'query'")
        watermark = spec.get("watermark")
        sql = f"SELECT * FROM ({source}) AS carelake_src" if spec.get("query") else f"SELECT * FROM {source}"
        if watermark and entity in marks:
            sql += f" WHERE {watermark} >= {_quote(marks[entity])}"
        df = _reader(ctx.spark).options(**options).option("query", sql).load()
        _check_columns(df.columns, spec, entity, feed)
        if watermark:
            high = df.agg(F.max(watermark).alias("m"), F.count("*").alias("n")).collect()[0]
            counts[entity] = int(high["n"])
            if high["m"] is not None:
                pending[entity] = _text(high["m"])
        parts.append(_to_bronze(df, feed, entity, spec, str(source), received))
    table = None
    for part in parts:
        table = part if table is None else table.unionByName(part)
    return table, {"rows": sum(counts.values()), "entities": counts, "pending": pending, "previous": marks}


def _check_columns(columns: list[str], spec: dict, entity: str, feed: Feed) -> None:
    expected = list(spec["columns"].values())
    known = set(expected) | set(spec.get("ignore") or ()) | ({spec["watermark"]} if spec.get("watermark") else set())
    missing = [c for c in expected if c not in columns]
    unexpected = [c for c in columns if c not in known]
    if missing or unexpected:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {unexpected}"] if unexpected else [])
        raise ConfigError(f"{spec.get('table') or 'query'} ({entity}): columns do not match mapping '{feed.mapping}': "
                          f"{', '.join(parts)} (fix the mapping if the hospital changed its schema)")


def _to_bronze(df, feed: Feed, entity: str, spec: dict, source: str, received: str):
    columns = spec["columns"]
    hospital = feed.hospital

    def row_to_record(row: dict):
        values = {field: _text(row.get(column)) or "" for field, column in columns.items()}
        payload = json.dumps({"entity": entity, "row": values}, ensure_ascii=False, sort_keys=True)
        yield {"record_id": record_id(hospital, "jdbc", payload), "hospital": hospital, "feed": "jdbc",
               "format": f"jdbc:{entity}", "source": source, "position": None, "received_at": received, "payload": payload}

    return map_rows(df, row_to_record, BRONZE_COLUMNS)


def commit_watermarks(ctx: RunContext, feed: Feed, state: dict) -> None:
    """Store the high-water marks of a read whose rows are now in bronze."""
    commit_marks(ctx, feed, state.get("pending", {}), state["entities"])
