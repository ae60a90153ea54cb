"""validate runner: the Great Expectations suites of expectations/ on silver (stage `validate`), and on
staged gold and marts before they are published (called by the curate and marts runners).

Silver tables hold FHIR resources as JSON, which GE cannot look into. So the validate stage hands GE
a *quality view* of each silver table: the silver columns plus derived check columns read from the
resource with Spark's JSON functions (``get_json_object``, ``from_json``; Sail and JVM Spark both have
them) and joins against the other silver tables (does the referenced Patient exist?). The views are
written to ``staging.quality_<table>`` (phi zone: they are derived from PHI) so that GE's many queries
read a materialised table instead of re-parsing JSON and re-joining for every expectation (the
Observations' JSON-derived columns are staged once before the joins too, ``staging.quality_observation_base``:
the usual unit per lab reads them as well). The view
leaves out the resource JSON itself (half the bytes of the staged copy, and no expectation needs it
once ``json_resource_type`` is read from it).

Derived columns (all nullable; GE's column-map expectations skip nulls, so a column is null where the
check does not apply, e.g. an Observation without an encounter):

==========================  =====================================================================
column                      meaning
==========================  =====================================================================
json_resource_type          ``resource.resourceType`` (null when ``resource`` is null or has none)
json_id_matches             ``resource.id`` equals the ``id`` column
status                      ``resource.status`` (where the resource type has one)
patient_resolves            ``patient_id`` names a Patient in silver.patient (null without patient_id)
encounter_resolves          ``resource.encounter`` names an Encounter in silver.encounter
results_resolve             every ``DiagnosticReport.result`` names an Observation in silver.observation
code_system_known           ``code`` has a coding from an expected system (standard or the hospital's own)
code_standard               ``code`` has a coding from the standard system (LOINC, ICD-10/SNOMED CT)
date_plausible              the resource's main date lies between 1900-01-01 and the run date (+1 year
                            for encounters, which may be planned)
period_in_order             ``period.end`` is not before ``period.start``
unit_consistent             the unit is the one most used for this lab code (LOINC, else hospital +
                            local code) in this table
birth_date_plausible        ``birthDate`` between 1900-01-01 and the run date
gender                      ``Patient.gender``
has_identifier              the Patient carries at least one identifier value
==========================  =====================================================================

Conservation (``bronze = normalized + quarantined`` per feed) is validated as the table
``phi.conservation``: one row per feed (``feed``, ``bronze``, ``normalized``, ``quarantined``,
``balanced``, ``quarantine_rate``), built from bronze.records and phi.record_status.
"""

from __future__ import annotations

import datetime as dt

from carelake.ahead import Ahead
from carelake.context import RunContext
from carelake.quality import CRITICAL, QualityReport, validate_tables

__all__ = ["run", "validate", "id_column_of", "quality_view", "conservation_frame", "CONSERVATION_TABLE"]

CONSERVATION_TABLE = "phi.conservation"

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
LOCAL_PREFIX = "urn:carelake:"

# Per resource type: the JSON path of its code, the standard systems of that code, its main date, and
# whether that date may lie in the near future (a planned encounter).
_CODE = {
    "Observation": ("$.code.coding", (LOINC,)),
    "DiagnosticReport": ("$.code.coding", (LOINC,)),
    "Condition": ("$.code.coding", (ICD10, SNOMED)),
    "Procedure": ("$.code.coding", (SNOMED,)),
    "Immunization": ("$.vaccineCode.coding", ("http://hl7.org/fhir/sid/cvx", SNOMED)),
    "MedicationRequest": ("$.medicationCodeableConcept.coding", ("http://www.nlm.nih.gov/research/umls/rxnorm", SNOMED)),
    "AllergyIntolerance": ("$.code.coding", (SNOMED,)),
    "ServiceRequest": ("$.code.coding", (LOINC, SNOMED)),
}
_DATE = {
    "Encounter": "$.period.start",
    "Observation": "$.effectiveDateTime",
    "DiagnosticReport": "$.effectiveDateTime",
    "Condition": "$.onsetDateTime",
    "Procedure": "$.performedDateTime",
    "Immunization": "$.occurrenceDateTime",
    "MedicationRequest": "$.authoredOn",
    "Specimen": "$.collection.collectedDateTime",
    "AllergyIntolerance": "$.recordedDate",
    "ServiceRequest": "$.authoredOn",
}
_HAS_STATUS = {"Encounter", "Observation", "DiagnosticReport", "Procedure", "Immunization", "MedicationRequest",
               "ServiceRequest", "Coverage"}
_HAS_ENCOUNTER = {"Observation", "DiagnosticReport", "Condition", "Procedure", "Immunization", "MedicationRequest",
                  "ServiceRequest"}
_CODINGS = "array<struct<system:string,code:string>>"


def id_column_of(table: str, columns: list[str]) -> str:
    """The column whose values may be shown for failing rows: a resource id or a pseudonym, never PHI."""
    if table.startswith("silver."):
        return "id"
    if table == CONSERVATION_TABLE:
        return "feed"
    for column in columns:
        if column.endswith("_id"):
            return column
    return "id"


def _resource_type(table: str) -> str | None:
    from transforms.normalize import RESOURCE_TABLES

    return {v: k for k, v in RESOURCE_TABLES.items()}.get(table.removeprefix("silver."))


def _json(path: str):
    # One get_json_object per check, not one from_json of the resource into a struct of the checked
    # fields: on Sail, from_json costs more than all seven paths of an Observation together (153k rows:
    # 1.1-1.6 CPU s against 0.7-1.2; from_json of the id alone 0.6-0.9 s, its get_json_object 0.15-0.3 s).
    from pyspark.sql import functions as F

    return F.get_json_object(F.col("resource"), path)


def _resolves(df, column: str, target_ids, name: str):
    """`name` = whether `column` (an id, or null) is among `target_ids`; null where `column` is null."""
    from pyspark.sql import functions as F

    if target_ids is None:
        return df.withColumn(name, F.when(F.col(column).isNotNull(), F.lit(False)))
    known = target_ids.select(F.col("id").alias("_target")).distinct().withColumn("_found", F.lit(True))
    joined = df.join(known, df[column] == known["_target"], "left")
    return joined.withColumn(name, F.when(F.col(column).isNotNull(), F.coalesce(F.col("_found"), F.lit(False)))).drop("_target", "_found")


def _plausible(column, *, upper: dt.date):
    """ISO dates compare as strings: the first 10 characters between 1900-01-01 and `upper`."""
    from pyspark.sql import functions as F

    day = F.substring(column, 1, 10)
    return F.when(column.isNotNull(), (day >= F.lit("1900-01-01")) & (day <= F.lit(upper.isoformat())))


def quality_view(table: str, df, *, targets: dict, as_of: dt.date, stage=None):
    """A silver table (but its ``resource`` JSON) plus the derived check columns of the module docstring.

    `targets` maps a silver table name (``silver.patient``, ...) to its DataFrame, for reference
    resolution; a missing target makes every reference to it unresolved. `stage`, when given, writes a
    frame and returns it read back (`Lake.materialize`): the columns read from the JSON are then
    written once where two parts of the view read them (the Observations' usual unit per lab), instead
    of the engine parsing the JSON for each part.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    kind = _resource_type(table)
    # Every column read from the resource JSON first, then the resource dropped, then the joins: their
    # hash tables then hold narrow rows, not the JSON (a DiagnosticReport view at 568 k rows held it in
    # two such tables and asked the 1.5 GiB engine pool for more than it had).
    view = df.withColumn("json_resource_type", _json("$.resourceType")).withColumn(
        "json_id_matches", _json("$.id") == F.col("id"))
    if kind in _HAS_STATUS:
        view = view.withColumn("status", _json("$.status"))
    if kind in _HAS_ENCOUNTER:
        view = view.withColumn("_encounter_ref", F.regexp_extract(_json("$.encounter.reference"), r"^Encounter/(.+)$", 1))
        view = view.withColumn("_encounter_ref", F.when(F.col("_encounter_ref") != "", F.col("_encounter_ref")))
    if kind in _CODE:
        path, standard = _CODE[kind]
        codings = F.from_json(_json(path), _CODINGS)
        systems = ", ".join(f"'{s}'" for s in standard)
        view = view.withColumn("_codings", codings)
        view = view.withColumn("code_system_known", F.coalesce(F.expr(
            f"exists(_codings, c -> c.system IN ({systems}) OR startswith(c.system, '{LOCAL_PREFIX}'))"), F.lit(False)))
        view = view.withColumn("code_standard", F.coalesce(F.expr(f"exists(_codings, c -> c.system IN ({systems}))"), F.lit(False)))
    if kind in _DATE:
        upper = as_of + dt.timedelta(days=366 if kind == "Encounter" else 1)
        view = view.withColumn("date_plausible", _plausible(_json(_DATE[kind]), upper=upper))
    if kind == "Encounter":
        start, end = F.to_timestamp(_json("$.period.start")), F.to_timestamp(_json("$.period.end"))
        view = view.withColumn("period_in_order", F.when(start.isNotNull() & end.isNotNull(), end >= start))
    if kind == "Patient":
        view = view.withColumn("birth_date_plausible", _plausible(_json("$.birthDate"), upper=as_of + dt.timedelta(days=1)))
        view = view.withColumn("gender", _json("$.gender"))
        view = view.withColumn("has_identifier", _json("$.identifier[0].value").isNotNull())
    if kind == "Observation":
        loinc = F.expr(f"get(filter(_codings, c -> c.system = '{LOINC}'), 0).code")
        local = F.expr(f"get(filter(_codings, c -> startswith(c.system, '{LOCAL_PREFIX}')), 0).code")
        lab = F.coalesce(loinc, F.concat_ws("|", F.col("hospital"), local))
        view = view.withColumn("_lab", lab).withColumn("_unit", _json("$.valueQuantity.unit"))
    if kind == "DiagnosticReport":
        view = view.withColumn("_has_resource", F.col("resource").isNotNull())
    view = view.drop("_codings", "resource")
    if kind == "Observation" and stage is not None:
        # read twice below, by the reference joins and by the usual unit per lab: 607,761 Observations
        # took 6.3-8.1 CPU s staged against 9.3-10.3 parsing the codings and unit again for the aggregate
        view = stage(view)
        labs = view.select("_lab", "_unit")

    if kind != "Patient":
        view = _resolves(view, "patient_id", targets.get("silver.patient"), "patient_resolves")
    if kind in _HAS_ENCOUNTER:
        view = _resolves(view, "_encounter_ref", targets.get("silver.encounter"), "encounter_resolves").drop("_encounter_ref")
    if kind == "DiagnosticReport":
        # the references from the silver rows themselves, not from `view`: its joins would run again
        refs = F.from_json(_json("$.result"), "array<struct<reference:string>>")
        exploded = df.select("id", F.explode(refs).alias("_r")).select(
            "id", F.regexp_extract("_r.reference", r"^Observation/(.+)$", 1).alias("_obs"))
        observations = targets.get("silver.observation")
        if observations is not None:
            exploded = exploded.join(observations.select(F.col("id").alias("_obs")), "_obs", "left_anti")
        dangling = exploded.groupBy("id").agg(F.count(F.lit(1)).alias("_dangling"))
        resolve = F.when(F.col("_has_resource"), F.coalesce(F.col("_dangling"), F.lit(0)) == 0)
        view = view.join(dangling, "id", "left").withColumn("results_resolve", resolve).drop("_dangling", "_has_resource")
    if kind == "Observation":
        # The usual unit per lab code over the same rows as `view` (its reference joins neither add nor
        # drop any), without evaluating those joins for this aggregate: from the staged columns, else
        # from the silver rows, reading only the two JSON paths it needs.
        if stage is None:
            labs = (df.select("hospital", F.from_json(_json(_CODE[kind][0]), _CODINGS).alias("_codings"),
                              _json("$.valueQuantity.unit").alias("_unit"))
                    .select(lab.alias("_lab"), "_unit"))
        usual = (labs.filter(F.col("_unit").isNotNull()).groupBy("_lab", "_unit").count()
                 .withColumn("_n", F.row_number().over(Window.partitionBy("_lab").orderBy(F.desc("count"), "_unit")))
                 .filter("_n = 1").select("_lab", F.col("_unit").alias("_usual")))
        view = view.join(usual, "_lab", "left").withColumn(
            "unit_consistent", F.when(F.col("_unit").isNotNull(), F.col("_unit") == F.col("_usual"))).drop("_lab", "_unit", "_usual")
    return view


def conservation_frame(ctx: RunContext):
    """One row per feed: bronze, normalized, quarantined record counts and whether they balance."""
    from carelake.normalize import conservation

    rows = [{"feed": feed, **counts} for feed, counts in conservation(ctx).items()]
    for row in rows:
        row["quarantine_rate"] = row["quarantined"] / row["bronze"] if row["bronze"] else 0.0
    schema = "feed string, bronze long, normalized long, quarantined long, balanced boolean, quarantine_rate double"
    return ctx.spark.createDataFrame(rows, schema)


def validate(ctx: RunContext, tables: dict, *, stage: str, id_column: str | None = "auto") -> QualityReport:
    """Validate `tables` (name -> DataFrame); record the outcome in the run's results under `quality`."""
    column = (lambda name, df: id_column_of(name, df.columns)) if id_column == "auto" else (id_column or "id")
    # one call for all tables: one GE context and one Data Docs build (quality.validate_tables)
    merged = validate_tables(tables, suites_dir=ctx.config.expectations_dir, reports_dir=ctx.lake.reports, run_id=ctx.run_id,
                             id_column=column, step=lambda name: ctx.progress.step(f"{stage}: validate {name}"), docs=ctx.data_docs)
    quality = ctx.results.setdefault("quality", {"tables": {}})
    for name in tables:
        outcomes = [r for r in merged.results if r.table == name]
        failed = [r for r in outcomes if not r.success]
        quality["tables"][name] = {
            "stage": stage,
            "verdict": "fail" if any(r.severity == CRITICAL for r in failed) else ("warn" if failed else "pass"),
            "expectations": len(outcomes),
            "critical_failed": sum(r.severity == CRITICAL for r in failed),
            "warnings_failed": sum(r.severity != CRITICAL for r in failed),
            "failures": [r.describe() for r in failed],
        }
    quality["data_docs"] = str(merged.data_docs_index) if merged.data_docs_index else None
    return merged


def run(ctx: RunContext) -> dict:
    """Validate every silver table (through its quality view) and conservation per feed; a critical
    failure stops the run before anything is curated."""
    lake, spark = ctx.lake, ctx.spark
    silver = {t.name: lake.read(spark, t.name) for t in lake.tables(zones=("phi",)) if t.name.startswith("silver.")}

    def staged_view(name: str):
        def build():
            with ctx.progress.step(f"validate: quality view of {name}"):
                staged = f"staging.quality_{name.removeprefix('silver.')}"
                base = lambda frame: lake.materialize(spark, frame, f"{staged}_base")  # noqa: E731
                lake.overwrite(quality_view(name, silver[name], targets=silver, as_of=ctx.as_of, stage=base), staged)
                return lake.read(spark, staged)
        return build

    builders = {name: staged_view(name) for name in silver}
    if lake.exists("bronze.records"):
        builders[CONSERVATION_TABLE] = lambda: conservation_frame(ctx)
    # GE checks each view while the engine stages the next (carelake.ahead)
    with Ahead(builders) as tables:
        report = validate(ctx, tables, stage="validate")
    report.raise_if_critical()
    return {"verdict": report.verdict, "tables": len(tables)}
