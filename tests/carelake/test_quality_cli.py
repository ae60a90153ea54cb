"""`carelake quality` on the shared demo run: the documented JSON fields and the exit code."""

import json
import re
from pathlib import Path

from click.testing import CliRunner

from carelake.quality_cli import quality

DOC = Path(__file__).resolve().parents[2] / "docs" / "quality.md"


def test_quality_json_names_the_run_verdict_and_paths(demo_run):
    workdir, summary = demo_run
    out = CliRunner().invoke(quality, ["--json", "--run", summary.run_id, "--workdir", str(workdir)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["run_id"] == summary.run_id
    assert data["verdict"] in ("pass", "warn") and data["status"] == "succeeded" and data["error"] is None
    assert data["published"] == ["gold", "marts"]
    assert Path(data["data_docs"]).is_file() and Path(data["run_report"]).is_file() and Path(data["latest_report"]).is_file()
    assert {"silver.patient", "gold.patient", "marts.encounters_by_region_month", "phi.conservation"} <= set(data["tables"])
    assert all(w["severity"] == "warning" and w["sample_ids"] is not None for w in data["warnings"])


def test_every_json_field_is_documented(demo_run):
    workdir, _ = demo_run
    data = json.loads(CliRunner().invoke(quality, ["--json", "--workdir", str(workdir)]).output)
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M))
    assert set(data) <= documented, set(data) - documented


def test_text_output_lists_paths(demo_run):
    workdir, summary = demo_run
    out = CliRunner().invoke(quality, ["--run", summary.run_id, "--workdir", str(workdir)])
    assert out.exit_code == 0
    assert f"run {summary.run_id}:" in out.output and "Data Docs:" in out.output and "run report:" in out.output
