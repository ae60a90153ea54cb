"""normalize runner: bronze.records -> silver.<resource> tables, phi.quarantine, phi.person_xref,
phi.record_status (one outcome per bronze record, so conservation can be checked).

The result dict also carries `unmapped_codes` (local codes without a standard coding, per hospital and
code system: codes are not PHI) and, when the generator's ground truth lies in the working directory
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
from transforms.systems import ICD10, LOINC, SNOMED, UCUM
from transforms.normalize import RESOURCE_TABLES, Mapping, normalize_records

__all__ = ["run", "mapping_for", "SILVER_COLUMNS", "CORE_TABLES", "conservation"]

SILVER_COLUMNS = ["id", "hospital", "feed", "record_id", "patient_id", "person_key", "resource"]
SILVER_SCHEMA = ", ".join(f"{c} string" for c in SILVER_COLUMNS)
#: silver tables that always exist, so that validation and curation have something to read
CORE_TABLES = ("patient", "encounter", "observation", "condition")
QUARANTINE_COLUMNS = ["record_id", "hospital", "feed", "source", "position", "stage", "error_code", "reason"]


#: Where `carelake demo` leaves the generator's ground truth, relative to the working directory.
TRUTH_FILE = Path("synth-truth") / "persons.csv"
#: Code systems that count as standard; a coded element with none of them is "unmapped".
STANDARD_SYSTEMS = (LOINC, SNOMED, ICD10, UCUM, "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/cvx",
                    "http://www.nlm.nih.gov/research/umls/rxnorm")
# The coded element of each resource type that terminology maps apply to.
_CODE_PATHS = {
    "Observation": "$.code.coding", "Condition": "$.code.coding", "Procedure": "$.code.coding",
    "DiagnosticReport": "$.code.coding", "AllergyIntolerance": "$.code.coding",
    "Immunization": "$.vaccineCode.coding", "MedicationRequest": "$.medicationCodeableConcept.coding",
}


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
    resource's own meta.lastUpdated decides, then file and position."""
    updated = F.get_json_object("resource", "$.meta.lastUpdated")
    latest = Window.partitionBy("id").orderBy(F.desc("received_at"), F.desc_nulls_last(updated), F.desc("source"),
                                              F.desc("position"), F.desc("record_id"))
    return rows.withColumn("_n", F.row_number().over(latest)).filter("_n = 1").drop("_n")


def unmapped_codes(normalized, *, limit: int = 20) -> dict:
    """{hospital: {system: {"codes": distinct codes, "resources": n, "top": {code: n}}}} of coded elements
    that carry no standard coding (see `STANDARD_SYSTEMS`)."""
    path = None
    for resource_type, json_path in _CODE_PATHS.items():
        path = F.when(F.col("resource_type") == resource_type, F.get_json_object("resource", json_path)).otherwise(
            path if path is not None else F.lit(None))
    codings = normalized.select("hospital", "id", F.explode(F.from_json(path, "array<struct<system:string,code:string>>")).alias("c"))
    codings = codings.select("hospital", "id", F.col("c.system").alias("system"), F.col("c.code").alias("code"))
    standard = codings.groupBy("id").agg(F.max(F.col("system").isin(*STANDARD_SYSTEMS).cast("int")).alias("std"))
    local = codings.join(standard.filter("std = 0"), "id").groupBy("hospital", "system", "code").count()
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
    linkage: dict = {}
    with ctx.progress.step("normalize: person linkage") as note:
        patients = _latest_per_id(normalized.filter("resource_type = 'Patient'"))
        settings = ctx.config.linkage or {}

        def materialize(df, name):
            lake.overwrite(df, f"staging.{name}")
            return lake.read(spark, f"staging.{name}")

        keys = person_keys(patients, settings.get("rules"), settings.get("national_id_systems"), materialize=materialize)
        lake.overwrite(keys, "staging.person_keys")
        lake.merge(spark, lake.read(spark, "staging.person_keys"), "phi.person_xref", keys=["patient_id"])
        xref = lake.read(spark, "phi.person_xref").select("patient_id", "person_key")
        linkage["persons"] = xref.select("person_key").distinct().count()
        linkage["patients"] = xref.count()
        truth = _truth(ctx)
        if truth is not None:
            linkage["ground_truth"] = linkage_metrics(xref, truth)
        note["detail"] = f"{linkage['persons']} persons"

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
    with ctx.progress.step("normalize: count unmapped local codes"):
        unmapped = unmapped_codes(normalized.dropDuplicates(["id"]))
    return {"silver": written, "conservation": conservation(ctx), "linkage": linkage, "unmapped_codes": unmapped}


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
