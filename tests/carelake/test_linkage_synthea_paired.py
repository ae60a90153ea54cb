"""One Synthea run delivered twice: hospital A sends its CSV export, hospital B its FHIR transaction
Bundles (same patients). Linkage must give each person one key across A and B, and the clinical
counts per person must agree between the two deliveries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from carelake.config import PROJECT_ROOT, load_config
from carelake.pipeline import run_pipeline
from tests.conftest import TEST_KEY, extdata

TYPES = ("encounter", "condition", "observation", "immunization")


def make_conf(tmp_path: Path, hospitals: dict[str, list[dict]]) -> Path:
    """A conf folder with the project's defaults and the given hospitals (feeds read in place)."""
    conf = tmp_path / "conf"
    conf.mkdir(parents=True)
    for name in ("engine.yaml", "lake.yaml", "deid.yaml", "regions.yaml", "linkage.yaml"):
        shutil.copy(PROJECT_ROOT / "conf" / name, conf / name)
    for name in ("csv_mappings", "views"):
        shutil.copytree(PROJECT_ROOT / "conf" / name, conf / name)
    (conf / "hospitals").mkdir()
    for hospital, feeds in hospitals.items():
        (conf / "hospitals" / f"{hospital}.yaml").write_text(yaml.safe_dump({"id": hospital, "feeds": feeds}))
    return conf


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory, spark):
    root = extdata("synthea", "jijones12-synthea-ma-11pt-paired")
    tmp = tmp_path_factory.mktemp("paired")
    conf = make_conf(tmp, {
        "hosp-a": [{"kind": "csv", "path": str(root / "csv"), "mapping": "synthea"}],
        "hosp-b": [{"kind": "fhir", "path": str(root / "fhir" / "*.json")}],
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARELAKE_DEID_KEY", TEST_KEY)
        summary = run_pipeline(load_config(conf), tmp / "home", ["ingest", "normalize"])
    assert summary.error is None, summary.error
    return tmp / "home", conf, summary


def _counts(spark, workdir: Path, conf: Path) -> dict:
    from carelake.lake import Lake

    lake = Lake.from_config(load_config(conf), workdir)
    out: dict = {}
    for table in TYPES:
        rows = lake.read(spark, f"silver.{table}").groupBy("person_key", "hospital").count().collect()
        for r in rows:
            out.setdefault(r["person_key"], {}).setdefault(table, {})[r["hospital"]] = r["count"]
    return out


def test_every_bundle_person_has_one_key_across_a_and_b(paired_run, spark):
    workdir, conf, summary = paired_run
    from carelake.lake import Lake

    lake = Lake.from_config(load_config(conf), workdir)
    xref = lake.read(spark, "phi.person_xref").collect()
    by_person: dict = {}
    for r in xref:
        by_person.setdefault(r["person_key"], set()).add(r["hospital"])
    assert sum(1 for r in xref if r["hospital"] == "hosp-a") == 11
    assert sum(1 for r in xref if r["hospital"] == "hosp-b") == 10
    both = [k for k, hospitals in by_person.items() if hospitals == {"hosp-a", "hosp-b"}]
    assert len(both) == 10  # the 11th CSV patient has no bundle
    assert len(by_person) == 11


def test_per_person_counts_agree_within_two_percent(paired_run, spark):
    workdir, conf, summary = paired_run
    counts = _counts(spark, workdir, conf)
    compared = 0
    for person, tables in counts.items():
        if "hosp-b" not in tables.get("encounter", {}):
            continue
        for table in TYPES:
            a, b = tables.get(table, {}).get("hosp-a", 0), tables.get(table, {}).get("hosp-b", 0)
            assert abs(a - b) <= 0.02 * max(a, b), (table, a, b)
            compared += 1
    assert compared == 10 * len(TYPES)


def test_paired_run_conserves_and_reports_skipped_bundle_entries(paired_run):
    _, _, summary = paired_run
    ingest, normalize = summary.results["ingest"], summary.results["normalize"]
    assert ingest["feeds"]["hosp-a/csv"]["skipped"] == {"csv-exclude": 336}  # QALY/DALY/QOLS rows
    assert ingest["feeds"]["hosp-b/fhir"]["skipped"]["fhir-type:Claim"] > 0
    assert all(feed["balanced"] for feed in normalize["conservation"].values())
