"""How long Airflow takes to parse dags/ for a region of 37 hospitals (target: under 2 s).

Writes 37 hospital files (the demo's layout, hosp-01 ... hosp-37) into a temporary copy of conf/, then, in
fresh processes with a temporary AIRFLOW_HOME, times `DagBag` over dags/ (what the DAG processor does
for each parse) apart from importing Airflow itself (paid once per processor, not per parse).
Prints JSON.

    .venv/bin/python bench/dag_parse.py [--hospitals 37] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
started = time.perf_counter()
import airflow.sdk  # noqa: F401  (the processor has it loaded already)
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter()
bag = DagBag(sys.argv[1])
parsed = time.perf_counter()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pyspark", "great_expectations", "pysail", "deltalake", "pandas"})
print(json.dumps({"import_airflow_s": imported - started, "dagbag_s": parsed - imported, "dags": len(bag.dags),
                  "import_errors": len(bag.import_errors), "heavy_modules": heavy,
                  "file_s": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospitals", type=int, default=37)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from carelake.demo import demo_hospital

    with tempfile.TemporaryDirectory(prefix="carelake-dag-parse-") as tmp:
        conf = Path(tmp) / "conf"
        shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("hospitals"))
        (conf / "hospitals").mkdir()
        for index in range(args.hospitals):  # the generator names at most 26 (hosp-a ... hosp-z)
            hospital = f"hosp-{index + 1:02d}"
            (conf / "hospitals" / f"{hospital}.yaml").write_text(
                yaml.safe_dump(demo_hospital(hospital, f"his-{'abc'[index % 3]}"), sort_keys=False))
        env = {**os.environ, "AIRFLOW_HOME": str(Path(tmp) / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "CARELAKE_CONF": str(conf), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "dags")], env=env, capture_output=True,
                                 text=True, timeout=600, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    dagbag = [r["dagbag_s"] for r in runs]
    print(json.dumps({
        "hospitals": args.hospitals,
        "dags": runs[0]["dags"],
        "import_errors": runs[0]["import_errors"],
        "heavy_modules_at_parse": runs[0]["heavy_modules"],
        "dagbag_parse_s_median": round(statistics.median(dagbag), 3),
        "dagbag_parse_s_runs": [round(s, 3) for s in dagbag],
        "import_airflow_s_median": round(statistics.median(r["import_airflow_s"] for r in runs), 3),
        "per_file_s": {Path(f).name: round(s, 3) for f, s in runs[-1]["file_s"].items()},
        "target_s": 2.0,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
