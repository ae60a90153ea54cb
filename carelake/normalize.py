"""normalize runner: bronze.records -> silver.<resource> tables, phi.quarantine, phi.person_xref,
phi.record_status (one outcome per bronze record, so conservation can be checked).

Incremental: only bronze records not yet normalized with the current mapping are mapped (see `run`;
``full=True`` maps every record again). The result dict also carries `unmapped_codes` (local codes
without a standard coding among the resources this run mapped, per hospital and code system: codes are
not PHI) and, when the generator's ground truth lies in the working directory
(``synth-truth/persons.csv``, written by `carelake demo`), `linkage` precision and recall.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pyspark.sql import Window
from pyspark.sql import functions as F

from carelake.context import RunContext
from transforms.ids import resource_id
from transforms.linkage import linkage_metrics, person_keys
from transforms.normalize import (RESOURCE_TABLES, STANDARD_SYSTEMS, Mapping, mapping_fingerprint, normalize_records,
                                  record_outcomes)

__all__ = ["run", "mapping_for", "SILVER_COLUMNS", "CORE_TABLES", "conservation", "outcome_counts", "unmapped_codes",
           "type_counts", "STANDARD_SYSTEMS"]

SILVER_COLUMNS = ["id", "hospital", "feed", "record_id", "patient_id", "person_key", "resource"]
SILVER_SCHEMA = ", ".join(f"{c} string" for c in SILVER_COLUMNS)
#: silver tables that always exist, so that validation and curation have something to read
CORE_TABLES = ("patient", "encounter", "observation", "condition")
QUARANTINE_COLUMNS = ["record_id", "hospital", "feed", "source", "position", "stage", "error_code", "reason"]


#: Where `carelake demo` leaves the generator's ground truth, relative to the working directory.
TRUTH_FILE = Path("synth-truth") / "persons.csv"


def mapping_for(config) -> Mapping:
    layouts = {}
    for f in config.feeds:
        if f.kind in ("csv", "jdbc"):
            layouts[f"{f.hospital}/{f.kind}"] = config.csv_mappings[f.mapping]
            if f.kind == "csv":
                layouts.setdefault(f.hospital, config.csv_mappings[f.mapping])
    return Mapping(config.terminology, layouts, {h.id: h.hl7v2 for h in config.hospitals})


def _latest_per_id(rows):
    """One row per resource id: the latest delivery wins; between files delivered at the same time the
    resource's own meta.lastUpdated (the `updated` column the mapping fills in) decides, then file and
    position."""
    latest = Window.partitionBy("id").orderBy(*_latest_first())
    return rows.withColumn("_n", F.row_number().over(latest)).filter("_n = 1").drop("_n")


def _latest_first() -> tuple:
    """The order of deliveries of one resource id, latest first (`_latest_per_id`, `_not_older_by_window`)."""
    return F.desc("received_at"), F.desc_nulls_last("updated"), F.desc("source"), F.desc("position"), F.desc("record_id")


def unmapped_codes(normalized, *, limit: int = 20) -> dict:
    """{hospital: {system: {"codes": distinct codes, "resources": n, "top": {code: n}}}} of coded elements
    that carry no standard coding (see `STANDARD_SYSTEMS`), among the resources of `normalized` (this
    run's: an incremental run reports what it mapped). Reads the `unmapped` column the mapping filled in,
    so only the few unmapped resources are looked at."""
    rows = normalized.filter(F.col("unmapped").isNotNull()).select("hospital", "id", "unmapped").dropDuplicates(["id"])
    codings = rows.select("hospital", F.explode(F.from_json("unmapped", "array<array<string>>")).alias("c"))
    local = codings.select("hospital", F.col("c")[0].alias("system"), F.col("c")[1].alias("code")).groupBy(
        "hospital", "system", "code").count()
    out: dict = {}
    for r in local.orderBy("hospital", "system", F.desc("count"), "code").collect():
        entry = out.setdefault(r["hospital"], {}).setdefault(r["system"] or "(no system)", {"codes": 0, "resources": 0, "top": {}})
        entry["codes"] += 1
        entry["resources"] += r["count"]
        if len(entry["top"]) < limit:
            entry["top"][r["code"]] = r["count"]
    return out


def _truth(ctx: RunContext):
    """The generator's persons.csv as (patient_id, person), or None when the workdir has none."""
    path = ctx.lake.workdir / TRUTH_FILE
    if not path.exists():
        return None
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for person in csv.DictReader(handle):
            for column, mrn in person.items():
                if column.startswith("mrn_") and mrn:
                    rows.append((resource_id(column[4:], "Patient", mrn), person["person_index"]))
    return ctx.spark.createDataFrame(rows, "patient_id string, person string") if rows else None


def run(ctx: RunContext, *, full: bool = False) -> dict:
    """Map the bronze records not yet normalized with the current mapping (all of them with `full`).

    Incremental: phi.record_status holds, per record, the fingerprint of the mapping that produced its
    outcome (`transforms.normalize.mapping_fingerprint`: terminology, CSV layouts, HL7 v2 overrides and
    mapper code). Records whose fingerprint matches are skipped, so a rerun maps nothing and a run after
    an ingest maps only the new deliveries; a changed mapping re-maps every record. phi.record_status is
    written last, after silver: a run that dies before it leaves its records to be mapped again, and
    every write before it is an idempotent MERGE.
    """
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists("bronze.records"):
        return {"records": 0}
    mapping = mapping_for(ctx.config)
    fingerprint = mapping_fingerprint(mapping)
    bronze = lake.read(spark, "bronze.records")
    # A record_status written before fingerprints existed says nothing about the mapping: map all again.
    legacy = lake.exists("phi.record_status") and "mapping" not in lake.read(spark, "phi.record_status").columns
    incremental = not full and not legacy and lake.exists("phi.record_status")
    with ctx.progress.step("normalize: map records to FHIR R4 and validate") as note:
        todo = _not_mapped(lake, spark, bronze, fingerprint) if incremental else bronze
        # not partitioned by type: measured, the partitioned write cost more than the scans it saves
        staged = lake.materialize(spark, normalize_records(todo, mapping), "staging.normalized")
        per_type, repeats = type_counts(staged)
        types = sorted(t for t in per_type if t is not None)
        note["detail"] = f"{'all' if not incremental else 'new'} records; resource types: {', '.join(types) or 'none'}"

    if {"validate", "curate", "marts"} & set(ctx.stages):
        # the rest of this stage is engine work that leaves the GIL and part of a core free
        from carelake.quality import import_in_background

        import_in_background()
    written: dict = {}
    linkage: dict = {}
    unmapped: dict = {}
    if per_type:
        with ctx.progress.step("normalize: record outcomes and quarantine"):
            per_record = record_outcomes(staged).withColumn("mapping", F.lit(fingerprint))
            per_record = lake.materialize(spark, per_record, "staging.record_outcomes")  # one row per record, read by two MERGEs
            quarantine = per_record.select(*[F.lit("normalize").alias(c) if c == "stage" else F.col(c) for c in QUARANTINE_COLUMNS])
            # a record that normalizes now (after a mapping fix) leaves quarantine
            lake.merge(spark, quarantine, "phi.quarantine", keys=["record_id", "stage"],
                       delete_when="s.error_code IS NULL", insert_when="s.error_code IS NOT NULL")

        normalized = staged.filter("outcome = 'normalized'")
        # the comparison with silver joins bronze's delivery columns: past JOIN_MAX_RECORDS records it
        # orders by a window instead (`_not_older_by_window`)
        large = incremental and bronze.count() > JOIN_MAX_RECORDS

        def winners(t):
            # called inside the step that writes the table: a comparison with a large silver stages its
            # result there and then, which the step's progress line must cover
            return _winners(ctx, normalized.filter(F.col("resource_type") == t), RESOURCE_TABLES[t], bronze, incremental,
                            repeats=t in repeats, large=large)
    # Every run links over all Patients (silver's and this run's), even one that mapped nothing: runs
    # that mapped at the same time each linked without the other's Patients, and the next run settles
    # that. Patients are few next to the other resources, and an unchanged link rewrites nothing.
    with ctx.progress.step("normalize: person linkage") as note:
        patients = winners("Patient") if "Patient" in per_type else None
        _link(ctx, patients, incremental)
        if incremental:
            note["detail"] = f"{_relink(ctx)} silver rows moved to a new person"
    if per_type:
        xref = (lake.read(spark, "phi.person_xref").select("patient_id", "person_key") if lake.exists("phi.person_xref")
                else spark.createDataFrame([], "patient_id string, person_key string"))
        for resource_type in types:
            table = RESOURCE_TABLES[resource_type]
            with ctx.progress.step(f"normalize: merge silver.{table}"):
                rows = patients if resource_type == "Patient" else winners(resource_type)
                silver = rows.join(xref, "patient_id", "left").select(*SILVER_COLUMNS)
                # staged: the latest-per-id sort in a query of its own (inside the MERGE's query it competed
                # with the MERGE's join for the engine's memory: 10,000 patients re-mapped, Resources exhausted)
                lake.merge(spark, silver, f"silver.{table}", keys=["id"], partition_by=["hospital"], stage=resource_type in repeats)
        with ctx.progress.step("normalize: count unmapped local codes"):
            unmapped = unmapped_codes(normalized)
    for table in CORE_TABLES:
        if not lake.exists(f"silver.{table}"):
            lake.overwrite(spark.createDataFrame([], SILVER_SCHEMA), f"silver.{table}", partition_by=["hospital"])
    for table in RESOURCE_TABLES.values():
        if lake.exists(f"silver.{table}"):
            written[table] = lake.read(spark, f"silver.{table}").count()
    if lake.exists("phi.person_xref"):
        xref = lake.read(spark, "phi.person_xref").select("patient_id", "person_key")
        linkage["persons"] = xref.select("person_key").distinct().count()
        linkage["patients"] = xref.count()
        truth = _truth(ctx)
        if truth is not None:
            with ctx.progress.step("normalize: person linkage against the generator's ground truth"):
                linkage["ground_truth"] = linkage_metrics(xref, truth)
    if per_type:
        # last: from here on the records count as normalized with this mapping (see the docstring)
        with ctx.progress.step("normalize: record outcomes"):
            if legacy:  # a full run: every bronze record has its outcome here, in the new layout
                lake.overwrite(per_record, "phi.record_status", partition_by=["hospital"])
            else:
                lake.merge(spark, per_record, "phi.record_status", keys=["record_id"], partition_by=["hospital"])
    records = sum(per_type.values()) if per_type else 0
    with ctx.progress.step("normalize: every bronze record has an outcome (conservation)"):
        balance = conservation(ctx)
    return {"silver": written, "conservation": balance, "linkage": linkage, "unmapped_codes": unmapped,
            "mapped": {"full": not incremental, "resources_and_quarantined": records, "mapping": fingerprint}}


def type_counts(staged) -> tuple[dict, set]:
    """Rows of `normalize_records` -> ({resource type: rows}, {types whose ids repeat}); quarantined
    records count under None. Most types' ids do not repeat, and their latest-per-id needs no sort of
    every resource by id.

    Counted per id first, then per type: a COUNT(DISTINCT id) per type keeps every id in a hash set the
    engine's pool does not bound (3.4 GiB for 14 M resources with a 1.5 GiB pool), while a grouping
    by (type, id) stays within the pool (0.9 GiB for the process, 9.1 against 9.5 s: one run each).

    SUM(1), not COUNT: over a Delta table whose rows are all quarantined (type and id null throughout),
    Sail's planner fails the second grouping of a COUNT ("Physical input schema should be the same as
    the one converted from logical input schema ... field nullability"); SUM is nullable both ways."""
    per_id = staged.groupBy("resource_type", "id").agg(F.sum(F.lit(1)).alias("n"))
    counts = per_id.groupBy("resource_type").agg(F.sum("n").alias("rows"), F.max("n").alias("most")).collect()
    per_type = {r["resource_type"]: r["rows"] for r in counts}
    repeats = {r["resource_type"] for r in counts if r["resource_type"] is not None and r["most"] > 1}
    return per_type, repeats


def _winners(ctx: RunContext, rows, table: str, bronze, incremental: bool, *, repeats: bool = True, large: bool = False):
    """The latest delivery of each resource id among `rows`, kept only where it is not older than the
    delivery already in silver (an incremental run may see a backfill of old files after newer ones).
    `repeats=False` says that no id occurs twice among `rows`: each row is its id's latest. `large`:
    bronze holds more than `JOIN_MAX_RECORDS` records, too many for the joins' build side."""
    latest = _latest_per_id(rows) if repeats else rows
    lake, spark = ctx.lake, ctx.spark
    if not incremental or not lake.exists(f"silver.{table}"):
        return latest
    current = lake.read(spark, f"silver.{table}")
    # before either comparison: a daily run of a large region must not sort silver for nothing
    if current.select("id").join(latest.select("id"), "id", "left_semi").limit(1).count() == 0:
        return latest  # no id delivered again: nothing to compare (the usual case but for Patients)
    if large or current.count() > JOIN_MAX_RECORDS:
        contested = _contested(ctx, rows, current, table)
        count = contested.count()
        if count == 0:
            return latest  # a re-map: each silver row's own delivery is among this run's rows
        if count <= lake.limits.merge_batch_rows:
            # few (a daily run's Patients delivered again): only their silver rows and those rows'
            # deliveries take part, not all of bronze; the joins build on the small staged tables
            current = lake.materialize(spark, current.join(contested, "id", "left_semi"), f"staging.contested_rows_{table}")
            bronze = bronze.join(current.select("record_id"), "record_id", "left_semi")
        return _not_older_by_window(ctx, latest, current, bronze, table)
    keys = bronze.select(F.col("record_id").alias("_c_record"), F.col("received_at").alias("_c_received"),
                         F.col("source").alias("_c_source"), F.col("position").alias("_c_position"))
    # Only the current row's lastUpdated goes into the join, not its resource: with whole resources the
    # join's build side (607,761 Observations re-mapped after a mapping change) outgrew the 1.5 GiB pool.
    current = current.select("id", F.col("record_id").alias("_c_record"),
                             F.get_json_object("resource", "$.meta.lastUpdated").alias("_c_updated"))
    joined = latest.join(current, "id", "left").join(keys, "_c_record", "left")
    c_updated = F.col("_c_updated")
    # the order of `_latest_per_id`: received_at, meta.lastUpdated (nulls last), source, position, record_id
    not_older = F.when(F.col("_c_received").isNull(), True).when(F.col("received_at") != F.col("_c_received"),
                                                                 F.col("received_at") > F.col("_c_received")).otherwise(
        F.when(~F.col("updated").eqNullSafe(c_updated), F.coalesce(F.col("updated") > c_updated, F.col("updated").isNotNull()))
        .when(F.col("source") != F.col("_c_source"), F.col("source") > F.col("_c_source"))
        .when(F.col("position") != F.col("_c_position"), F.col("position") > F.col("_c_position"))
        .otherwise(F.col("record_id") >= F.col("_c_record")))
    return joined.filter(not_older).drop("_c_record", "_c_received", "_c_source", "_c_position", "_c_updated")


def _contested(ctx: RunContext, rows, current, table: str):
    """The ids of this run's `rows` whose silver row came from a delivery that is not among them, staged.

    Where silver's row of an id came from a record this run mapped again under the same id, this run's
    latest delivery of the id is that record or a later one, and wins: no comparison with bronze's
    delivery columns is needed. That is every id of a re-map, which maps every record again; at 100,000
    patients the comparison aggregated bronze's 20 M records once per silver table (about 420 s of
    the re-map). Two aggregations over (id, record_id) pairs decide it, and they spill; a join of the two
    tables would not. Contested ids (a backfill of older files, a daily delivery of known Patients, a
    record that maps to nothing now) go through `_not_older_by_window`."""
    pairs = rows.select("id", "record_id", F.lit(1).alias("_new")).unionByName(current.select("id", "record_id", F.lit(0).alias("_new")))
    per_pair = pairs.groupBy("id", "record_id").agg(F.max("_new").alias("_new"))  # 0: silver's pair, not mapped again
    per_id = per_pair.groupBy("id").agg(F.max("_new").alias("_ours"), F.min("_new").alias("_bare"))
    return ctx.lake.materialize(ctx.spark, per_id.filter("_ours = 1 AND _bare = 0").select("id"), f"staging.contested_{table}")


def _not_older_by_window(ctx: RunContext, latest, current, bronze, table: str):
    """`_winners`' comparison where silver or bronze is too large for the joins' build side (more than
    `JOIN_MAX_RECORDS` rows; a re-map of 100,000 patients failed there: 587 MB for one join's input
    with a 1.5 GiB pool, and 654 MB joining 1.1 M DiagnosticReports with bronze's 20 M records).

    Silver rows get their delivery columns from bronze by an aggregation over record ids, then this
    run's rows and silver's are ordered per id as `_latest_per_id` orders them, this run's row first
    on a tie; sort and aggregation spill, a join's build side does not. Only the delivery columns are
    ordered, not this run's whole rows: sorting 15 M Observations with their resource JSON (a re-map of
    100,000 patients) spilled runs whose merge outgrew the pool. The ids whose silver row wins (none in a
    re-map, few after a backfill of old files) are staged and leave this run's rows by an anti-join, whose
    build side is that small staged table."""
    delivery = {"id": "string", "updated": "string", "received_at": "string", "source": "string", "position": "long"}

    def padded(df, have):
        return df.select("record_id", *[F.col(c) if c in have else F.lit(None).cast(t).alias(c) for c, t in delivery.items()])

    delivered = padded(bronze, ("received_at", "source", "position")).unionByName(padded(
        current.select("id", "record_id", F.get_json_object("resource", "$.meta.lastUpdated").alias("updated")), ("id", "updated")))
    silver_rows = delivered.groupBy("record_id").agg(*[F.max(c).alias(c) for c in delivery]).filter("id IS NOT NULL")
    narrow = ["record_id", *delivery]
    both = latest.select(*narrow, F.lit(1).alias("_carelake_new")).unionByName(silver_rows.select(*narrow, F.lit(0).alias("_carelake_new")))
    order = Window.partitionBy("id").orderBy(*_latest_first(), F.desc("_carelake_new"))
    older = (both.withColumn("_n", F.row_number().over(order)).withColumn("_ours", F.max("_carelake_new").over(Window.partitionBy("id")))
             .filter("_n = 1 AND _carelake_new = 0 AND _ours = 1").select("id"))
    older = ctx.lake.materialize(ctx.spark, older, f"staging.older_{table}")
    if older.limit(1).count() == 0:
        return latest
    return latest.join(older, "id", "left_anti")


def _link(ctx: RunContext, new_patients, incremental: bool) -> None:
    """Person keys over every Patient (silver's and this run's) merged into phi.person_xref."""
    lake, spark = ctx.lake, ctx.spark
    settings = ctx.config.linkage or {}
    patients = new_patients.select("id", "hospital", "resource") if new_patients is not None else None
    if incremental and lake.exists("silver.patient"):
        # a new Patient may join or bridge persons that exist already: link over all of them
        known = lake.read(spark, "silver.patient").select("id", "hospital", "resource")
        patients = known if patients is None else known.join(patients.select("id"), "id", "left_anti").unionByName(patients)
    if patients is None:
        return

    def materialize(df, name):
        return lake.materialize(spark, df, f"staging.{name}")

    keys = person_keys(patients, settings.get("rules"), settings.get("national_id_systems"), materialize=materialize)
    lake.merge(spark, lake.materialize(spark, keys, "staging.person_keys"), "phi.person_xref", keys=["patient_id"])


def _relink(ctx: RunContext) -> int:
    """Give silver rows whose Patient changed person (a new link) the new person key; rows changed."""
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists("phi.person_xref"):
        return 0
    xref = lake.read(spark, "phi.person_xref").select("patient_id", F.col("person_key").alias("_key"))
    moved = 0
    for table in RESOURCE_TABLES.values():
        if not lake.exists(f"silver.{table}"):
            continue
        current = lake.read(spark, f"silver.{table}")
        # the narrow columns first: the resource JSON is read only when some row did move
        ids = current.select("id", "patient_id", "person_key").join(xref, "patient_id").filter(
            ~F.col("person_key").eqNullSafe(F.col("_key"))).select("id", "_key")
        n = ids.count()
        if n:
            relinked = current.join(lake.materialize(spark, ids, "staging.relinked"), "id").withColumn("person_key", F.col("_key"))
            lake.merge(spark, relinked.select(*SILVER_COLUMNS), f"silver.{table}", keys=["id"], partition_by=["hospital"])
            moved += n
    return moved


#: bronze records above which `conservation` matches outcomes to bronze records by an aggregation
#: instead of a hash join: the join's build side holds every record id and cannot spill (10.19 M ids
#: asked the engine's 1.5 GiB pool for 632 MB, and failed; a left-semi form hung), while the aggregation
#: spills. Below it the join is the cheaper of the two (813 k records: 0.2 s against 0.7 s). Also the
#: silver rows above which `_winners` compares by a window instead of joins, for the same reason.
JOIN_MAX_RECORDS = 2_000_000


def _not_mapped(lake, spark, bronze, fingerprint: str):
    """The bronze rows without an outcome of this mapping in phi.record_status: what an incremental run maps.

    An anti-join with the records done builds a hash table of their ids, which cannot spill: a daily
    run on 100,000 patients (20.4 M records done, 4,500 new) filled the engine's pool there. Past
    `JOIN_MAX_RECORDS` records done, the ids to map come from an aggregation over both tables' ids
    (which can spill) and are staged; bronze's rows are then taken by a semi-join with them, few in
    a daily run. Past `JOIN_MAX_RECORDS` of those too (a large backfill into a large lake) the
    semi-join matches a 64-bit hash of the id, a narrow hash table: a record done whose hash equals a
    new record's is mapped again, which gives it the outcome it has (mapping a record is idempotent).
    """
    done = lake.read(spark, "phi.record_status").filter(F.col("mapping") == fingerprint).select("record_id")
    if done.count() <= JOIN_MAX_RECORDS:
        return bronze.join(done, "record_id", "left_anti")
    tagged = bronze.select("record_id", F.lit(1).alias("_new")).unionByName(done.select("record_id", F.lit(0).alias("_new")))
    new = tagged.groupBy("record_id").agg(F.min("_new").alias("_new")).filter("_new = 1").select("record_id")
    new = lake.materialize(spark, new, "staging.records_to_map")
    if new.count() <= JOIN_MAX_RECORDS:
        return bronze.join(new, "record_id", "left_semi")
    hashes = new.select(F.xxhash64("record_id").alias("_hash"))
    return bronze.join(hashes, F.xxhash64(bronze["record_id"]) == hashes["_hash"], "left_semi")


def conservation(ctx: RunContext) -> dict:
    """Per feed: bronze records, normalized, quarantined; `balanced` when bronze = the other two.

    Outcomes count only for records still in bronze (a bronze table restored to an earlier version may
    leave outcomes of records it no longer holds)."""
    out = {}
    for (hospital, feed), counts in sorted(outcome_counts(ctx.lake, ctx.spark).items()):
        out[f"{hospital}/{feed}"] = {**counts, "balanced": counts["bronze"] == counts["normalized"] + counts["quarantined"]}
    return out


def outcome_counts(lake, spark) -> dict[tuple[str, str], dict[str, int]]:
    """Per (hospital, feed): bronze records, and how many of them phi.record_status has as normalized
    and as quarantined; {} without bronze."""
    if not lake.exists("bronze.records"):
        return {}
    bronze = {(r["hospital"], r["feed"]): r["count"] for r in lake.read(spark, "bronze.records").groupBy("hospital", "feed").count().collect()}
    outcomes: dict = {}
    if lake.exists("phi.record_status"):
        status = lake.read(spark, "phi.record_status").select("record_id", "hospital", "feed", "outcome")
        records = lake.read(spark, "bronze.records").select("record_id")
        if sum(bronze.values()) <= JOIN_MAX_RECORDS:
            kept = status.join(records, "record_id")
        else:
            # one row per record id from both tables (each holds an id once): kept when bronze has it
            none = F.lit(None).cast("string")
            tagged = status.withColumn("_bronze", F.lit(0)).unionByName(records.select(
                "record_id", none.alias("hospital"), none.alias("feed"), none.alias("outcome"), F.lit(1).alias("_bronze")))
            kept = (tagged.groupBy("record_id").agg(*[F.max(c).alias(c) for c in ("_bronze", "hospital", "feed", "outcome")])
                    .filter("_bronze = 1 AND outcome IS NOT NULL"))
        for r in kept.groupBy("hospital", "feed", "outcome").count().collect():
            outcomes.setdefault((r["hospital"], r["feed"]), {})[r["outcome"]] = r["count"]
    return {key: {"bronze": n, "normalized": outcomes.get(key, {}).get("normalized", 0),
                  "quarantined": outcomes.get(key, {}).get("quarantined", 0)} for key, n in bronze.items()}
