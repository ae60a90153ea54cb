"""
### carelake pipeline

Runs carelake's stages over every hospital in the configuration (`$CARELAKE_CONF`, else the
project's `conf/`) into the working directory `$CARELAKE_HOME`:

ingest -> normalize -> validate -> curate -> marts

A failed critical expectation or PHI scan fails the `curate` (or `marts`) task with the quality
stage's message; the curated tables keep their last good release. Tasks push counts, never data.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

STAGES = ("ingest", "normalize", "validate", "curate", "marts")


@dag(
    dag_id="carelake_pipeline",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["carelake"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True,
                  "max_retry_delay": timedelta(minutes=30)},
)
def carelake_pipeline():
    @task
    def stage(name: str, **context) -> dict:
        # imported inside the task: nothing heavy at DAG parse time
        from carelake.airflow_tasks import run_stage

        interval_end = context["data_interval_end"] or context["logical_date"]
        return run_stage(name, run_id=f"{context['dag'].dag_id}__{context['run_id']}".replace(":", "_").replace("+", "_"),
                         as_of=interval_end.date())

    previous = None
    for name in STAGES:
        current = stage.override(task_id=name)(name)
        if previous is not None:
            previous >> current
        previous = current


carelake_pipeline()
