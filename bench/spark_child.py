"""The carelake transforms on classic JVM Spark (local[2]), for `python -m bench --engines sail,spark`.

Runs in its own process: a Spark Connect session (the embedded engine) and a classic session cannot
share one. There are no Delta jars here, so tables are written as Parquet; person linkage and the Great
Expectations suites are left out, so this measures the same per-record transforms (split, normalize
with validation, views, de-identification) on the other engine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conf", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from carelake.config import load_config
    from carelake.curate import deid_policy
    from carelake.ingest import FILE_SCHEMA, landing_files
    from carelake.lake import Lake
    from carelake.normalize import mapping_for
    from transforms.deid import deidentify
    from transforms.ingest import split_files
    from transforms.normalize import normalize_records
    from transforms.views import apply_view

    config = load_config(args.conf)
    lake = Lake.from_config(config, args.conf.parent)
    started = time.monotonic()
    spark = (SparkSession.builder.master(args.master).appName("carelake-bench")
             .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    startup = time.monotonic() - started
    started = time.monotonic()
    files = landing_files(config.feeds, lake.landing, config.csv_mappings)
    files_df = spark.createDataFrame(files, FILE_SCHEMA).repartition(len(files))
    split_files(files_df).write.mode("overwrite").parquet(str(args.out / "bronze"))
    bronze = spark.read.parquet(str(args.out / "bronze"))
    normalize_records(bronze, mapping_for(config)).write.mode("overwrite").parquet(str(args.out / "normalized"))
    normalized = spark.read.parquet(str(args.out / "normalized")).filter("outcome = 'normalized'")
    resources = normalized.count()
    policy = deid_policy(config, datetime.now(timezone.utc).date())
    gold = 0
    for name, table_policy in (config.deid.get("tables") or {}).items():
        view = config.views[table_policy.get("source", name)]
        silver = normalized.filter(F.col("resource_type") == view["resource"]).withColumn("person_key", F.col("patient_id"))
        flat = apply_view(silver, view)
        try:
            out = deidentify(flat, table_policy, policy)
        except ValueError:
            continue  # a policy column the runner derives (not a view column): skipped here
        out.write.mode("overwrite").parquet(str(args.out / "gold" / name))
        gold += spark.read.parquet(str(args.out / "gold" / name)).count()
    seconds = time.monotonic() - started
    spark.stop()
    print(json.dumps({"engine": "spark", "master": args.master, "startup_seconds": round(startup, 1),
                      "resources": resources, "gold_rows": gold, "seconds": round(seconds, 1),
                      "resources_per_s": round(resources / seconds) if seconds else None,
                      "scope": "split, normalize+validate, views, de-identify; Parquet; no linkage, no GX"}))


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
