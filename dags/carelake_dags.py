"""carelake's DAGs, made from conf/ (`$CARELAKE_CONF`, else the project's conf/).

- `carelake_ingest_<hospital>`: one per conf/hospitals/*.yaml; ingest the files the hospital delivered
  in the run's data interval into bronze, then normalize into silver (outlets: the silver Assets).
- `carelake_curation`: runs when a silver Asset is updated; validate -> curate -> marts -> summary.
- `carelake_maintenance`: purge expired quarantine, compact and vacuum every table (conf/airflow.yaml).

Adding a hospital is adding a YAML file. Parsing this file reads that YAML and nothing else: no engine,
no Variable, no carelake module beyond `carelake.airflow_tasks` (standard library and PyYAML); the task
bodies import the rest. A broken conf file fails this file's import with `DagConfError`, which
`airflow dags list-import-errors` shows with the file and key at fault.
"""

from __future__ import annotations

import re

from airflow.sdk import (
    Asset, AssetAny, CronDataIntervalTimetable, ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task,
)

from carelake.airflow_tasks import NO_RETRY_ERRORS, SILVER_TABLES, HospitalSpec, dag_conf

CONF = dag_conf()
CONF_DIR = str(CONF.conf_dir)

# x- scheme: a custom URI that Airflow takes as is, without asking the provider registry at parse time
SILVER = [Asset(name=f"carelake.silver.{t}", uri=f"x-carelake://phi/silver/{t}", group="carelake") for t in SILVER_TABLES]
GOLD = Asset(name="carelake.gold", uri="x-carelake://curated/gold", group="carelake")
MARTS = Asset(name="carelake.marts", uri="x-carelake://curated/marts", group="carelake")

# A closed gate, a missing key or a broken conf will fail the same way on every try: fail at once
RETRY_POLICY = ExceptionRetryPolicy(rules=[RetryRule(
    exception=list(NO_RETRY_ERRORS), action=RetryAction.FAIL,
    reason="carelake: a configuration error, a missing key or a closed quality/privacy gate is not transient")])


def _default_args(retries: int | None = None) -> dict:
    args = {**CONF.defaults.default_args(pool=CONF.pool), "retry_policy": RETRY_POLICY}
    if retries is not None:
        args["retries"] = retries
    return args


def _timetable(schedule: str | None):
    # a data interval per run ([start, end)), which Airflow 3's default cron timetable no longer gives
    return None if schedule is None else CronDataIntervalTimetable(schedule, timezone="UTC")


def _run_id(context) -> str:
    """The audit row's id: one per DAG run and task, stable across retries (a retry overwrites it)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{context['dag'].dag_id}__{context['task'].task_id}__{context['run_id']}")


def _as_of(context):
    """The run's reference date: its data interval end (asset-triggered runs: when they were due)."""
    when = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
    return when.date()


def ingest_dag(hospital: HospitalSpec):
    feeds = "\n".join(f"- `{f.kind}`: `{f.path}`" + (f" (connection `{f.connection_id}`)" if f.connection_id else "")
                      for f in hospital.feeds)
    bronze = Asset(name=f"carelake.bronze.{hospital.id}", uri=f"x-carelake://phi/bronze/{hospital.id}", group="carelake")

    @dag(
        dag_id=hospital.dag_id,
        description=f"ingest {hospital.name} into bronze and silver",
        schedule=_timetable(hospital.schedule),
        start_date=CONF.start_date,
        catchup=False,
        max_active_runs=1,  # intervals in order: a record delivered twice keeps its first delivery
        tags=["carelake", "ingest", hospital.id],
        default_args=_default_args(hospital.retries),
        params={"all_files": Param(False, type="boolean", title="All files",
                                   description="Read every landing file of the hospital, whatever its delivery "
                                               "time (first load, after a mapping fix)")},
        doc_md=f"""
### Ingest {hospital.name} (`{hospital.id}`)

From `{hospital.source.name}`. Reads the landing files **delivered in the run's data interval**
(file modification time in `[data_interval_start, data_interval_end)`), or every file with the
`all_files` parameter, into `bronze.records` (MERGE on content hash), then normalizes bronze into
the silver tables and quarantine. Reruns and backfills are safe: a record already in bronze is not
added again and silver is a function of bronze.

Feeds:
{feeds}
""",
    )
    def build():
        @task(outlets=[bronze])
        def ingest(**context) -> dict:
            from carelake.airflow_tasks import check_connections, ingest as run_ingest

            check_connections(hospital.connection_ids)
            counts = run_ingest(hospital.id, run_id=_run_id(context), start=context.get("data_interval_start"),
                                end=context.get("data_interval_end"), all_files=bool(context["params"]["all_files"]),
                                conf_dir=CONF_DIR)
            context["outlet_events"][bronze].extra = {k: counts[k] for k in ("files", "read", "new", "window")}
            return counts

        @task(outlets=SILVER)
        def normalize(ingested: dict, **context) -> dict:
            from carelake.airflow_tasks import normalize as run_normalize

            counts = run_normalize(run_id=_run_id(context), as_of=_as_of(context), conf_dir=CONF_DIR)
            for asset in SILVER:
                table = asset.name.rsplit(".", 1)[1]
                context["outlet_events"][asset].extra = {
                    "hospital": hospital.id, "new_records": ingested["new"], "rows": counts["silver"].get(table, 0)}
            return counts

        normalize(ingest())

    return build()


@dag(
    dag_id="carelake_curation",
    description="validate silver, publish de-identified gold and regional marts",
    schedule=AssetAny(*SILVER),
    start_date=CONF.start_date,
    catchup=False,
    max_active_runs=1,
    tags=["carelake", "curation"],
    default_args=_default_args(),
    doc_md="""
### Curation

Runs when an ingest DAG updates silver (Airflow folds events that arrive meanwhile into one run).
`validate` runs the Great Expectations suites on silver; `curate` builds gold in staging, runs the PHI
scan and the gold suites, and publishes; `marts` does the same for the regional marts. A failed
critical expectation or PHI hit fails its task with the quality stage's message, without retries,
and the curated zone keeps its last good release. The verdict and row counts are in each task's XCom,
in the `carelake.gold` / `carelake.marts` asset events, and in the `summary` task's XCom.
""",
)
def carelake_curation():
    @task
    def validate(**context) -> dict:
        from carelake.airflow_tasks import run_stage

        return run_stage("validate", run_id=_run_id(context), as_of=_as_of(context), conf_dir=CONF_DIR)["result"]

    @task(outlets=[GOLD])
    def curate(validated: dict, **context) -> dict:
        from carelake.airflow_tasks import run_stage

        result = run_stage("curate", run_id=_run_id(context), as_of=_as_of(context), conf_dir=CONF_DIR)["result"]
        context["outlet_events"][GOLD].extra = {"verdict": result.get("verdict"), "rows": result.get("gold", {})}
        return {"verdict": result.get("verdict"), "gold": result.get("gold", {})}

    @task(outlets=[MARTS])
    def marts(curated: dict, **context) -> dict:
        from carelake.airflow_tasks import run_stage

        result = run_stage("marts", run_id=_run_id(context), as_of=_as_of(context), conf_dir=CONF_DIR)["result"]
        context["outlet_events"][MARTS].extra = {"verdict": result.get("verdict"), "rows": result.get("marts", {})}
        return {"verdict": result.get("verdict"), "marts": result.get("marts", {}), "skipped": result.get("skipped", {})}

    @task
    def summary(validated: dict, curated: dict, marted: dict, **context) -> dict:
        import logging

        verdicts = [v for v in (validated.get("verdict"), curated.get("verdict"), marted.get("verdict")) if v]
        worst = max(verdicts, key=("pass", "warn", "fail").index, default=None)  # the run is as good as its worst stage
        out = {"as_of": _as_of(context).isoformat(), "verdict": worst,
               "verdicts": {"silver": validated.get("verdict"), "gold": curated.get("verdict"), "marts": marted.get("verdict")},
               "gold_rows": curated.get("gold", {}), "mart_rows": marted.get("marts", {})}
        logging.getLogger("carelake").info("carelake curation summary: %s", out)
        return out

    validated = validate()
    curated = curate(validated)
    marted = marts(curated)
    summary(validated, curated, marted)


def _interval_end(context):
    """The run's data interval end, never the clock: a rerun of a maintenance run purges the same."""
    return context.get("data_interval_end") or context["dag_run"].run_after


@dag(
    dag_id="carelake_maintenance",
    description="quarantine and quality results retention, compaction and vacuum of every Delta table",
    schedule=_timetable(CONF.maintenance_schedule),
    start_date=CONF.start_date,
    catchup=False,
    max_active_runs=1,
    tags=["carelake", "maintenance"],
    default_args=_default_args(),
    doc_md=f"""
### Maintenance

With delta-rs (the embedded engine has no OPTIMIZE / VACUUM), on every table of the phi and curated
zones, holding the same writer lock as the pipeline tasks:

1. `purge_quarantine`: quarantined records received more than {CONF.quarantine_retention_days} days
   before the run's data interval end leave quarantine, record_status and bronze.
2. `purge_quality_results`: stored validation results of runs more than {CONF.quality_retention_days} days
   before the run's data interval end leave the reports (their Data Docs pages go at the next build);
   each run lists them all, so kept forever they slow every run down.
3. `compact`: small files are bin-packed.
4. `vacuum`: files no version of the last {CONF.vacuum_retention_hours} hours needs are deleted.

Settings: `conf/airflow.yaml`, section `maintenance`.
""",
)
def carelake_maintenance():
    @task
    def purge_quarantine(**context) -> dict:
        from carelake.airflow_tasks import maintain

        return maintain("purge_quarantine", now=_interval_end(context), conf_dir=CONF_DIR)

    @task
    def purge_quality_results(purged: dict, **context) -> dict:
        from carelake.airflow_tasks import maintain

        return maintain("purge_quality_results", now=_interval_end(context), conf_dir=CONF_DIR)

    @task
    def compact(purged: dict, **context) -> dict:
        from carelake.airflow_tasks import maintain

        return maintain("compact", conf_dir=CONF_DIR)

    @task
    def vacuum(compacted: dict, **context) -> dict:
        from carelake.airflow_tasks import maintain

        return maintain("vacuum", conf_dir=CONF_DIR)

    vacuum(compact(purge_quality_results(purge_quarantine())))


for _hospital in CONF.hospitals:
    ingest_dag(_hospital)
carelake_curation()
carelake_maintenance()
