"""High-water marks of incremental feeds, kept in ``phi.feed_state`` (jdbc watermarks, fhir-rest
``_lastUpdated`` / ``$export`` transaction times).

One row per (hospital, feed, entity): ``feed`` is the feed's ``path`` (its label), ``entity`` what the
mark is for (a mapped entity, a resource type, ``$export``). A feed reads its marks before pulling and
commits new ones only once what it pulled is in bronze, so a run that fails in between pulls again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import functions as F

from carelake.config import Feed
from carelake.context import RunContext

__all__ = ["STATE_TABLE", "read_marks", "commit_marks"]

STATE_TABLE = "phi.feed_state"
_STATE_SCHEMA = "hospital string, feed string, entity string, watermark string, rows long, updated_at string"


def read_marks(ctx: RunContext, feed: Feed) -> dict[str, str]:
    """{entity: watermark} of `feed` as its last successful run left them ({} on the first run)."""
    if not ctx.lake.exists(STATE_TABLE):
        return {}
    rows = ctx.lake.read(ctx.spark, STATE_TABLE).filter((F.col("hospital") == feed.hospital) & (F.col("feed") == feed.path)).collect()
    return {r["entity"]: r["watermark"] for r in rows if r["watermark"] is not None}


def commit_marks(ctx: RunContext, feed: Feed, marks: dict[str, str], rows: dict[str, int]) -> None:
    """Store new marks (`rows`: how many rows/resources the pull that reached them read, per entity)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = [(feed.hospital, feed.path, entity, mark, int(rows.get(entity, 0)), now) for entity, mark in marks.items()]
    if data:
        ctx.lake.merge(ctx.spark, ctx.spark.createDataFrame(data, _STATE_SCHEMA), STATE_TABLE, keys=["hospital", "feed", "entity"])
