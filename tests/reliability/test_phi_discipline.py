"""PHI discipline: known identifiers fed through every stage and the failure paths never show up
outside the phi zone: curated files, reports (Data Docs HTML included), logs at DEBUG, exception and
quarantine messages, the CLI's output."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import KEY, ROOT, child_env, prepare_region, run_child

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _identifiers(workdir: Path) -> set[str]:
    """Direct identifiers of the generated persons: national ids, MRNs, phones, names, streets."""
    found = set()
    with open(workdir / "synth-truth" / "persons.csv", encoding="utf-8") as handle:
        for person in csv.DictReader(handle):
            found |= {person["national_id"], person["phone"], f"{person['given']} {person['family']}", person["street"]}
            found |= {v for k, v in person.items() if k.startswith("mrn_") and v}
    return {value for value in found if value and len(value) >= 6}


def _planted(hospital: str) -> dict[str, bytes]:
    """Bad deliveries that carry identifiers, so that every failure path sees one."""
    adt = ("MSH|^~\\&|HIS|H|LAKE|R|20240101120000||ADT^A01|{id}|P|2.5\r"
           "PID|1||PLANTED-MRN-7731^^^H^MR||Zyxwqvortel^Quinbert||{dob}|F|||Planted Lane 9^^Town^^10999\r")
    return {
        f"{hospital}/hl7v2/planted-bad-date.hl7": adt.format(id="P1", dob="19801345").encode(),
        f"{hospital}/hl7v2/planted-huge.hl7": (adt.format(id="P2", dob="19800101") + "NTE|1||" + "Zyxwqvortel " * 20000 + "\r").encode(),
        f"{hospital}/hl7v2/planted-truncated.hl7": adt.format(id="P3", dob="19800101").encode()[:120],
        f"{hospital}/fhir/planted.ndjson": json.dumps({"resourceType": "Patient", "id": "x", "birthDate": "Zyxwqvortel",
                                                       "name": [{"family": "Zyxwqvortel"}]}).encode() + b"\n{\"resourceType\":\"Patient\",\"name\":\n",
    }


def _text_of(path: Path) -> str:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    return path.read_bytes().decode("utf-8", errors="replace")


def _hits(text: str, identifiers: set[str]) -> set[str]:
    return {value for value in identifiers if value in text}


def test_identifiers_never_leave_the_phi_zone(tmp_path):
    workdir = tmp_path / "home"
    conf = prepare_region(workdir, patients=25, seed=41)
    hospital = sorted(p.stem for p in (conf / "hospitals").glob("*.yaml"))[0]
    for name, data in _planted(hospital).items():
        (workdir / "landing" / name).write_bytes(data)
    lake_yaml = conf / "lake.yaml"
    lake_yaml.write_text(lake_yaml.read_text().replace("max_record_bytes: 4194304", "max_record_bytes: 100000"))
    identifiers = _identifiers(workdir) | {"PLANTED-MRN-7731", "Zyxwqvortel", "Quinbert", "Planted Lane 9"}
    outputs: dict[str, str] = {}

    # 1. a full run through the CLI, logging at DEBUG
    env = child_env(CARELAKE_LOG_LEVEL="DEBUG")
    run = subprocess.run([sys.executable, "-m", "carelake.cli", "run", "--conf", str(conf), "--workdir", str(workdir)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    outputs["cli run stdout"], outputs["cli run stderr"] = run.stdout, run.stderr
    assert "DEBUG" in run.stderr, "the run must have logged at DEBUG"
    # 2. failure paths: no key; a stage that fails (a full disk); quarantine of the planted records
    no_key = {k: v for k, v in env.items() if k != "CARELAKE_DEID_KEY"}
    out = subprocess.run([sys.executable, "-m", "carelake.cli", "run", "--conf", str(conf), "--workdir", str(workdir)],
                         capture_output=True, text=True, env=no_key, cwd=ROOT, timeout=300)
    outputs["cli no key"] = out.stdout + out.stderr
    (workdir / "landing" / hospital / "hl7v2" / "planted-2.hl7").write_bytes(_planted(hospital)[f"{hospital}/hl7v2/planted-bad-date.hl7"].replace(b"P1", b"P9"))
    code, summary, err = run_child(workdir, "ingest,normalize", CARELAKE_TEST_FSIZE="4096", CARELAKE_LOG_LEVEL="DEBUG")
    assert code == 8, err[-2000:]
    outputs["failed stage stderr"], outputs["failed stage message"] = err, json.dumps(summary)
    for name, command in (("cli quarantine list", ["quarantine", "list", "--json", "--conf", str(conf)]), ("cli tables", ["tables"])):
        out = subprocess.run([sys.executable, "-m", "carelake.cli", *command, "--workdir", str(workdir)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        outputs[name] = out.stdout + out.stderr

    from deltalake import DeltaTable

    phi = workdir / "phi"
    quarantine = DeltaTable(str(phi / "quarantine")).to_pyarrow_table().to_pylist()
    planted = [q for q in quarantine if "planted" in (q["source"] or "")]
    assert len(planted) >= 4 and {q["error_code"] for q in planted} >= {"TOO_LARGE", "INVALID_DATE"}
    outputs["quarantine reasons"] = "\n".join(q["reason"] or "" for q in quarantine)
    audit = DeltaTable(str(phi / "audit")).to_pyarrow_table().to_pylist()
    outputs["audit errors and summaries"] = "\n".join(f"{a['error']} {a['summary']}" for a in audit)

    files = [p for zone in ("curated", "reports") for p in (workdir / zone).rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        outputs[str(path.relative_to(workdir))] = _text_of(path)

    leaks = {where: sorted(_hits(text, identifiers))[:5] for where, text in outputs.items() if _hits(text, identifiers)}
    assert leaks == {}
    # the check can see: the same identifiers are in the phi zone
    assert _hits(_text_of(next((phi / "bronze" / "records").rglob("*.parquet"))), identifiers)
    test_identifiers_never_leave_the_phi_zone.figures = {"identifiers": len(identifiers), "outputs_scanned": len(outputs)}
