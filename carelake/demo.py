"""`carelake demo`: synthetic hospitals, every stage on the embedded engine, a summary at the end."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import yaml

from carelake.config import PROJECT_ROOT, load_config
from carelake.context import Progress
from carelake.keys import KEY_ENV, throwaway_key
from carelake.pipeline import RunSummary, run_pipeline

__all__ = ["prepare_demo", "run_demo", "MARKER"]

MARKER = ".carelake-demo"
_COPIED = ("engine.yaml", "lake.yaml", "deid.yaml", "grades.yaml", "regions.yaml", "airflow.yaml", "views", "csv_mappings")


def prepare_demo(workdir: Path, *, hospitals: int, patients: int, seed: int) -> Path:
    """Generate the feeds under workdir/landing and a conf/ for them; returns the conf folder.

    A workdir that holds an earlier demo (it has the marker file) is cleared first; any other
    non-empty folder is refused, so the demo never deletes data it did not make.
    """
    from carelake.errors import CarelakeError
    from carelake.synth import csv_mapping_for, generate, terminology_rows

    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise CarelakeError(f"{workdir} is not empty and holds no earlier demo; give the demo an empty --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by carelake demo; the next demo in this folder deletes it\n")
    conf = workdir / "conf"
    conf.mkdir()
    source = PROJECT_ROOT / "conf"
    for name in _COPIED:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, conf / name)
        elif src.exists():
            shutil.copy(src, conf / name)
    regions = yaml.safe_load((source / "regions.yaml").read_text())["regions"]
    prefixes = [p for r in regions for p in r["postal_prefixes"]] + list(
        yaml.safe_load((source / "deid.yaml").read_text()).get("postal", {}).get("restricted_prefixes", []))
    result = generate(workdir / "landing", hospitals=hospitals, patients=patients, seed=seed,
                      postal_prefixes=prefixes, truth_dir=workdir / "synth-truth")
    (conf / "hospitals").mkdir()
    for hospital in result.hospitals:
        (conf / "hospitals" / f"{hospital}.yaml").write_text(yaml.safe_dump(demo_hospital(hospital, csv_mapping_for(hospital)), sort_keys=False))
    (conf / "terminology").mkdir()
    rows = terminology_rows(result.hospitals)
    if rows:  # only some hospitals send local lab codes; a one-hospital region may need no map
        with open(conf / "terminology" / "demo-lab-codes.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return conf


def demo_hospital(hospital: str, csv_mapping: str) -> dict:
    """The conf/hospitals/<id>.yaml of a generated hospital: its three feeds under landing/<id>/."""
    return {
        "id": hospital,
        "name": f"Demo hospital {hospital}",
        "schedule": "@daily",
        "feeds": [
            {"kind": "hl7v2", "path": f"{hospital}/hl7v2/*.hl7"},
            {"kind": "csv", "path": f"{hospital}/csv", "mapping": csv_mapping},
            {"kind": "fhir", "path": f"{hospital}/fhir/*.ndjson"},
        ],
    }


def run_demo(workdir: Path, *, hospitals: int = 3, patients: int = 1000, seed: int = 7,
             progress: Progress | None = None) -> tuple[RunSummary, bool]:
    """Generate, run every stage; returns the summary and whether a throw-away key was made."""
    made_key = False
    if not os.environ.get(KEY_ENV):
        os.environ[KEY_ENV] = throwaway_key()
        made_key = True
    progress = progress or Progress(enabled=False)
    with progress.step(f"demo: generate {hospitals} hospitals, {patients} patients (seed {seed})"):
        conf = prepare_demo(workdir, hospitals=hospitals, patients=patients, seed=seed)
    return run_pipeline(load_config(conf), workdir, progress=progress, triggered_by="demo"), made_key
