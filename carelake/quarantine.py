"""The quarantine, for quality officers and data engineers: counts by feed, code and reason, and a
retry of quarantined records after a mapping fix.

`retry` re-runs normalize on the quarantined bronze records only (optionally one error code or one
hospital), with the same transform (`transforms.normalize.normalize_records`) and the same merges as
the normalize stage: a record that maps now gets its resources merged into silver and leaves
phi.quarantine; one that still fails keeps its (possibly new) reason. Person linkage is recomputed over
every Patient in silver plus the retried ones, because a retried Patient may join (or bridge) persons
that exist already; silver rows whose person key changed are updated.

It does not validate, curate or publish: run ``carelake run --stage validate --stage curate --stage
marts`` afterwards so that the released tables include the recovered records.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from carelake.context import RunContext

__all__ = ["counts", "retry"]


def counts(ctx: RunContext) -> list[dict]:
    """Quarantined records by hospital, feed, stage, error code and reason (counts only)."""
    lake = ctx.lake
    if not lake.exists("phi.quarantine"):
        return []
    grouped = lake.read(ctx.spark, "phi.quarantine").groupBy("hospital", "feed", "stage", "error_code", "reason").count()
    return [r.asDict() | {"records": r["count"]} for r in grouped.orderBy("hospital", "feed", F.desc("count"), "error_code").collect()]


def retry(ctx: RunContext, *, code: str | None = None, hospital: str | None = None) -> dict:
    """Normalize the selected quarantined records again; returns how many were retried and recovered."""
    from carelake.normalize import QUARANTINE_COLUMNS, SILVER_COLUMNS, _latest_per_id, conservation, mapping_for
    from transforms.linkage import person_keys
    from transforms.normalize import RESOURCE_TABLES, mapping_fingerprint, normalize_records, record_outcomes

    lake, spark = ctx.lake, ctx.spark
    if not lake.exists("phi.quarantine") or not lake.exists("bronze.records"):
        return {"retried": 0, "recovered": 0, "still_quarantined": 0}
    selected = lake.read(spark, "phi.quarantine").filter("stage = 'normalize'")
    if code:
        selected = selected.filter(F.col("error_code") == code)
    if hospital:
        selected = selected.filter(F.col("hospital") == hospital)
    bronze = lake.read(spark, "bronze.records").join(selected.select("record_id").distinct(), "record_id", "left_semi")
    mapping = mapping_for(ctx.config)
    with ctx.progress.step("quarantine retry: normalize the quarantined records") as note:
        staged = lake.materialize(spark, normalize_records(bronze, mapping), "staging.retry")
        per_record = record_outcomes(staged)
        # the same record_status layout as the normalize stage (which skips records of this mapping)
        status = lake.read(spark, "phi.record_status") if lake.exists("phi.record_status") else None
        if status is None or "mapping" in status.columns:
            per_record = per_record.withColumn("mapping", F.lit(mapping_fingerprint(mapping)))
        outcomes = {r["outcome"]: r["count"] for r in per_record.groupBy("outcome").count().collect()}
        note["detail"] = f"{sum(outcomes.values())} records, {outcomes.get('normalized', 0)} recovered"
    if not outcomes:
        return {"retried": 0, "recovered": 0, "still_quarantined": 0}

    # Same merges as the normalize stage: record outcomes, then quarantine (recovered records leave it).
    lake.merge(spark, per_record, "phi.record_status", keys=["record_id"], partition_by=["hospital"])
    quarantine = per_record.select(*[F.lit("normalize").alias(c) if c == "stage" else F.col(c) for c in QUARANTINE_COLUMNS])
    lake.merge(spark, quarantine, "phi.quarantine", keys=["record_id", "stage"],
               delete_when="s.error_code IS NULL", insert_when="s.error_code IS NOT NULL")

    normalized = staged.filter("outcome = 'normalized'")
    types = sorted(r["resource_type"] for r in normalized.select("resource_type").distinct().collect())
    if "Patient" in types:
        with ctx.progress.step("quarantine retry: person linkage over all Patients"):
            new = normalized.filter("resource_type = 'Patient'").select("id", "hospital", "resource")
            known = lake.read(spark, "silver.patient").select("id", "hospital", "resource") if lake.exists("silver.patient") else None
            patients = new if known is None else known.join(new.select("id"), "id", "left_anti").unionByName(new)
            settings = getattr(ctx.config, "linkage", None) or {}
            keys = person_keys(patients, settings.get("rules"), settings.get("national_id_systems"))
            lake.merge(spark, lake.materialize(spark, keys, "staging.retry_person_keys"), "phi.person_xref", keys=["patient_id"])
    xref = lake.read(spark, "phi.person_xref").select("patient_id", "person_key")

    recovered = {}
    for resource_type in types:
        table = RESOURCE_TABLES[resource_type]
        rows = _latest_per_id(normalized.filter(F.col("resource_type") == resource_type))
        lake.merge(spark, rows.join(xref, "patient_id", "left").select(*SILVER_COLUMNS), f"silver.{table}", keys=["id"],
                   partition_by=["hospital"])
        recovered[table] = rows.count()
    if "Patient" in types:  # a new link may change the person key of rows already in silver
        for table in RESOURCE_TABLES.values():
            if lake.exists(f"silver.{table}"):
                current = lake.read(spark, f"silver.{table}")
                relinked = current.drop("person_key").join(xref, "patient_id", "left").select(*SILVER_COLUMNS)
                lake.merge(spark, relinked, f"silver.{table}", keys=["id"], partition_by=["hospital"])
    return {
        "retried": sum(outcomes.values()),
        "recovered": outcomes.get("normalized", 0),
        "still_quarantined": outcomes.get("quarantined", 0),
        "resources": recovered,
        "conservation": conservation(ctx),
    }
