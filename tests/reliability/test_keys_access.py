"""Keys and access: no key, no run; weak keys refused; the phi and curated zones on separate storage
roots; the curated writer cannot reach the phi zone; an audit row per run says who, when, which
inputs, which tables and versions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml
from deltalake import DeltaTable

from reliability_helpers import KEY, ROOT, prepare_region

from carelake.errors import ConfigError, KeyMissingError
from carelake.lake import Lake


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "carelake.cli", *args], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT), "GX_ANALYTICS_ENABLED": "false"}, cwd=cwd, timeout=300)


@pytest.mark.parametrize("key, message", [
    (None, "no de-identification key: set CARELAKE_DEID_KEY"),
    ("changeme", "too weak"),
    ("0123456789" * 4, "too weak"),  # long but from 10 characters: a pattern, not random
])
def test_no_or_weak_key_no_run(tmp_path, key, message):
    workdir = tmp_path / "home"
    prepare_region(workdir, patients=5)
    env = {k: v for k, v in os.environ.items() if k != "CARELAKE_DEID_KEY"}
    if key:
        env["CARELAKE_DEID_KEY"] = key
    out = _cli(["run", "--conf", str(workdir / "conf"), "--workdir", str(workdir)], env, tmp_path)
    assert out.returncode == KeyMissingError.exit_code, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (workdir / "phi").exists() and not (workdir / "curated").exists()  # refused before any work


def test_the_curated_writer_cannot_be_pointed_at_the_phi_zone(tmp_path):
    phi = tmp_path / "restricted"
    for curated in (phi, phi / "curated", f"file://{phi}/gold-here"):
        lake = Lake(tmp_path, {"landing": "l", "phi": str(phi), "curated": str(curated), "reports": "r"})
        with pytest.raises(ConfigError, match="would be written inside the phi zone"):
            lake.path("gold.patient")
    lake = Lake(tmp_path, {"landing": "l", "phi": str(tmp_path / "open" / "phi"), "curated": str(tmp_path / "open"), "reports": "r"})
    with pytest.raises(ConfigError, match="would be written inside the curated zone"):
        lake.path("silver.patient")
    with pytest.raises(ConfigError, match="only local paths and file:// URIs"):
        Lake(tmp_path, {"phi": "s3://bucket/phi"}).zone("phi")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_separate_roots_and_the_audit_of_a_run(spark, tmp_path):
    from carelake.config import load_config
    from carelake.pipeline import run_pipeline

    workdir, phi_root, curated_root = tmp_path / "home", tmp_path / "phi-storage", tmp_path / "curated-storage"
    conf = prepare_region(workdir, patients=20, seed=31)
    lake_yaml = yaml.safe_load((conf / "lake.yaml").read_text())
    lake_yaml["zones"].update(phi=str(phi_root), curated=f"file://{curated_root}")
    (conf / "lake.yaml").write_text(yaml.safe_dump(lake_yaml))
    os.environ["CARELAKE_DEID_KEY"] = KEY
    summary = run_pipeline(load_config(conf), workdir, ["ingest", "normalize", "curate"], triggered_by="dag:test_dag")
    assert summary.error is None, summary.error
    # each zone only on its own root; nothing of either in the working directory
    assert (phi_root / "bronze" / "records" / "_delta_log").is_dir() and (curated_root / "gold" / "patient" / "_delta_log").is_dir()
    assert not list(curated_root.rglob("bronze")) and not list(curated_root.rglob("silver"))
    assert not list(phi_root.rglob("gold")) and not (workdir / "phi").exists() and not (workdir / "curated").exists()
    assert not (phi_root / "_staging").exists() or not any((phi_root / "_staging").iterdir())  # staging cleaned up

    audit = DeltaTable(str(phi_root / "audit")).to_pylist() if hasattr(DeltaTable, "to_pylist") else \
        DeltaTable(str(phi_root / "audit")).to_pyarrow_table().to_pylist()
    row = next(r for r in audit if r["run_id"] == summary.run_id)
    assert row["triggered_by"] == "dag:test_dag" and row["user"] and row["host"] and row["status"] == "succeeded"
    assert row["started_at"] <= row["finished_at"] and row["stages"] == "ingest,normalize,curate"
    inputs = json.loads(row["inputs"])
    assert row["input_files"] == len(inputs) > 0
    for entry in inputs:
        path = workdir / "landing" / entry["source"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["bytes"] == path.stat().st_size
    written = json.loads(row["tables_written"])
    assert {"bronze.records", "silver.patient", "phi.quarantine", "gold.patient"} <= set(written)
    assert not any(t.startswith("staging.") for t in written)
    for table, info in written.items():
        lake = Lake.from_config(load_config(conf), workdir)
        dt = DeltaTable(str(lake.path(table)))
        assert info["version"] == dt.version() and info["rows"] == dt.to_pyarrow_table().num_rows
