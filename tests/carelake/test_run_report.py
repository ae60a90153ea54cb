"""The run report: history in Delta, a self-contained page, its trends over runs, and how it looks."""

import re
import shutil
import subprocess

import pytest

from carelake.run_report import read_history, record_history, render

RUNS = ["run-1", "run-2", "run-3", "run-4"]


def run_data(run_id, index, *, quarantined=2, critical=0):
    """One run as `collect` returns it: three hospitals, a quarantine rate that grows at hosp-b."""
    feeds = [{"hospital": h, "feed": f, "rows_in": 1000, "normalized": 1000 - q, "quarantined": q}
             for h in ("hosp-a", "hosp-b", "hosp-c") for f in ("hl7v2", "csv")
             for q in [quarantined * (index + 1) * 10 if h == "hosp-b" else quarantined]]
    failure = {"table": "silver.encounter", "expectation": "expect_column_values_to_be_in_set", "column": "patient_resolves",
               "severity": "critical", "success": False, "unexpected_count": 812, "element_count": 900,
               "sample_ids": ["0a1b2c", "3d4e5f"], "notes": None, "error": None}
    tables = {
        "silver.encounter": {"rows": 900, "per_hospital": {"hosp-a": 300, "hosp-b": 300, "hosp-c": 300}, "validated": True,
                             "expectations": 21, "failed_critical": critical, "failed_warning": 0, "failures": [failure] * critical},
        "gold.encounter": {"rows": 900, "per_hospital": {"hosp-a": 300, "hosp-b": 300, "hosp-c": 300}, "validated": not critical,
                           "expectations": 0 if critical else 8, "failed_critical": 0, "failed_warning": 0, "failures": []},
    }
    return {"run_id": run_id, "finished_at": f"2026-11-{10 + index:02d}T06:00:00+00:00", "status": "failed" if critical else "succeeded",
            "error": "validate: critical expectation failed: ..." if critical else None, "verdict": "fail" if critical else "pass",
            "published": [] if critical else ["gold", "marts"], "feeds": feeds,
            "quarantine": [{"hospital": "hosp-b", "feed": "csv", "stage": "normalize", "error_code": "UNKNOWN_CODE",
                            "reason": "CLASS (encounters.class): code not in the mapping", "records": 20 * (index + 1)}],
            "tables": tables, "expectations": 29 - 8 * bool(critical), "failed_critical": critical, "failed_warning": 0}


@pytest.fixture()
def history(tmp_path):
    reports = tmp_path / "reports"
    for index, run_id in enumerate(RUNS):
        record_history(reports, run_data(run_id, index, critical=1 if run_id == "run-4" else 0))
    return reports


def test_history_keeps_one_set_of_rows_per_run_even_when_a_run_is_recorded_again(history):
    record_history(history, run_data("run-2", 1))
    rows = read_history(history)
    assert [r["run_id"] for r in rows if r["scope"] == "run"] == RUNS
    feeds = [r for r in rows if r["scope"] == "feed" and r["run_id"] == "run-2"]
    assert len(feeds) == 6 and {r["hospital"] for r in feeds} == {"hosp-a", "hosp-b", "hosp-c"}


def test_page_is_self_contained_and_shows_trends_over_every_run(history):
    page = render(run_data("run-4", 3, critical=1), read_history(history), links={"data_docs": "d.html", "results": "r"})
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert page.count("<svg") == 4
    # one point per run in the pass-rate chart: all tables, silver, gold
    first_chart = page.split("<svg", 2)[1]
    assert first_chart.count("<title>all tables") == len(RUNS)
    assert "BLOCKED" in page and "Nothing was published by this run" in page
    assert "silver.encounter" in page and "expect_column_values_to_be_in_set(patient_resolves)" in page
    assert "812 of 900" in page and "0a1b2c, 3d4e5f" in page


def test_report_renders_in_a_browser(history, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the screenshot check needs it")
    html = tmp_path / "report.html"
    html.write_text(render(run_data("run-4", 3, critical=1), read_history(history), links={"data_docs": "d.html", "results": "r"}))
    png = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={png}",
                    "--window-size=1280,1600", html.as_uri()], check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses to a few kB


def test_a_run_that_stopped_before_validation_leaves_a_gap_in_the_trends(history):
    stopped = {**run_data("run-5", 4), "status": "failed", "verdict": "none", "error": "normalize: disk full"}
    record_history(history, stopped)
    rows = read_history(history)
    assert next(r for r in rows if r["scope"] == "run" and r["run_id"] == "run-5")["expectations"] is None
    page = render(stopped, rows, links={"data_docs": "d.html", "results": "r"})
    first_chart = page.split("<svg", 2)[1]
    # five runs on the axis, but no pass-rate point for the run that validated nothing
    assert first_chart.count("<title>all tables") == len(RUNS)
    assert "normalize: disk full" in page
