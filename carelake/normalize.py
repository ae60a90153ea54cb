"""normalize runner: bronze.records -> silver.<resource> tables, phi.quarantine, phi.person_xref,
phi.record_status (one outcome per bronze record, so conservation can be checked)."""

from __future__ import annotations

from pyspark.sql import Window
from pyspark.sql import functions as F

from carelake.context import RunContext
from transforms.linkage import person_keys
from transforms.normalize import RESOURCE_TABLES, Mapping, normalize_records

__all__ = ["run", "mapping_for", "SILVER_COLUMNS", "CORE_TABLES", "conservation"]

SILVER_COLUMNS = ["id", "hospital", "feed", "record_id", "patient_id", "person_key", "resource"]
SILVER_SCHEMA = ", ".join(f"{c} string" for c in SILVER_COLUMNS)
#: silver tables that always exist, so that validation and curation have something to read
CORE_TABLES = ("patient", "encounter", "observation", "condition")
QUARANTINE_COLUMNS = ["record_id", "hospital", "feed", "source", "position", "stage", "error_code", "reason"]


def mapping_for(config) -> Mapping:
    csv = {f.hospital: config.csv_mappings[f.mapping] for f in config.feeds if f.kind == "csv"}
    return Mapping(config.terminology, csv, {h.id: h.hl7v2 for h in config.hospitals})


def _latest_per_id(rows):
    """One row per resource id: the latest delivery wins, ties broken by file and position."""
    latest = Window.partitionBy("id").orderBy(F.desc("received_at"), F.desc("source"), F.desc("position"), F.desc("record_id"))
    return rows.withColumn("_n", F.row_number().over(latest)).filter("_n = 1").drop("_n")


def run(ctx: RunContext) -> dict:
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists("bronze.records"):
        return {"records": 0}
    with ctx.progress.step("normalize: map records to FHIR R4 and validate") as note:
        lake.overwrite(normalize_records(lake.read(spark, "bronze.records"), mapping_for(ctx.config)), "staging.normalized")
        staged = lake.read(spark, "staging.normalized")
        types = sorted(r["resource_type"] for r in staged.filter("outcome = 'normalized'").select("resource_type").distinct().collect())
        note["detail"] = f"resource types: {', '.join(types) or 'none'}"

    with ctx.progress.step("normalize: record outcomes and quarantine"):
        per_record = staged.groupBy("record_id", "hospital", "feed", "source", "position").agg(
            F.first("outcome").alias("outcome"), F.first("error_code", ignorenulls=True).alias("error_code"),
            F.first("reason", ignorenulls=True).alias("reason"), F.count("id").alias("resources"),
        )
        lake.merge(spark, per_record, "phi.record_status", keys=["record_id"], partition_by=["hospital"])
        quarantine = per_record.select(*[F.lit("normalize").alias(c) if c == "stage" else F.col(c) for c in QUARANTINE_COLUMNS])
        # a record that normalizes now (after a mapping fix) leaves quarantine
        lake.merge(spark, quarantine, "phi.quarantine", keys=["record_id", "stage"],
                   delete_when="s.error_code IS NULL", insert_when="s.error_code IS NOT NULL")

    normalized = staged.filter("outcome = 'normalized'")
    with ctx.progress.step("normalize: person linkage") as note:
        patients = _latest_per_id(normalized.filter("resource_type = 'Patient'"))
        lake.merge(spark, person_keys(patients), "phi.person_xref", keys=["patient_id"])
        xref = lake.read(spark, "phi.person_xref").select("patient_id", "person_key")
        note["detail"] = f"{xref.select('person_key').distinct().count()} persons"

    written = {}
    for resource_type in types:
        table = RESOURCE_TABLES[resource_type]
        with ctx.progress.step(f"normalize: merge silver.{table}") as note:
            rows = _latest_per_id(normalized.filter(F.col("resource_type") == resource_type))
            silver = rows.join(xref, "patient_id", "left").select(*SILVER_COLUMNS)
            lake.merge(spark, silver, f"silver.{table}", keys=["id"], partition_by=["hospital"])
            written[table] = lake.read(spark, f"silver.{table}").count()
            note["detail"] = f"{written[table]} rows"
    for table in CORE_TABLES:
        if not lake.exists(f"silver.{table}"):
            lake.overwrite(spark.createDataFrame([], SILVER_SCHEMA), f"silver.{table}", partition_by=["hospital"])
            written[table] = 0
    return {"silver": written, "conservation": conservation(ctx)}


def conservation(ctx: RunContext) -> dict:
    """Per feed: bronze records, normalized, quarantined; `balanced` when bronze = the other two."""
    lake, spark = ctx.lake, ctx.spark
    feed_name = F.concat_ws("/", "hospital", "feed").alias("feed")
    bronze = {r["feed"]: r["count"] for r in lake.read(spark, "bronze.records").groupBy(feed_name).count().collect()}
    outcomes: dict = {}
    if lake.exists("phi.record_status"):
        status = lake.read(spark, "phi.record_status").join(lake.read(spark, "bronze.records").select("record_id"), "record_id")
        for r in status.groupBy(feed_name, "outcome").count().collect():
            outcomes.setdefault(r["feed"], {})[r["outcome"]] = r["count"]
    out = {}
    for feed in sorted(bronze):
        normalized = outcomes.get(feed, {}).get("normalized", 0)
        quarantined = outcomes.get(feed, {}).get("quarantined", 0)
        out[feed] = {"bronze": bronze[feed], "normalized": normalized, "quarantined": quarantined,
                     "balanced": bronze[feed] == normalized + quarantined}
    return out
