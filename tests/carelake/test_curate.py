"""curate on the real stack: keyed pseudonyms across runs and hospitals, the k-anonymity report, the
grade gate before publication."""

import dataclasses
import os

import pytest
from deltalake import DeltaTable

from carelake.config import load_config
from carelake.demo import prepare_demo
from carelake.errors import PrivacyGateError
from carelake.lake import Lake
from carelake.pipeline import run_pipeline

pytestmark = pytest.mark.slow

KEY_A = "curate-key-a-0123456789abcdef-0123456789abcdef"
KEY_B = "curate-key-b-fedcba9876543210-fedcba9876543210"


def _person_ids(workdir, table="gold.patient"):
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    return set(DeltaTable(str(lake.path(table))).to_pyarrow_table().column("person_id").to_pylist())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, spark):
    """The same small region run in two working directories with the same key."""
    saved = os.environ.get("CARELAKE_DEID_KEY")
    os.environ["CARELAKE_DEID_KEY"] = KEY_A
    runs = []
    try:
        for name in ("one", "two"):
            workdir = tmp_path_factory.mktemp(name) / "home"
            conf = prepare_demo(workdir, hospitals=2, patients=120, seed=11)
            # validate and marts add nothing to what is checked here, only minutes
            summary = run_pipeline(load_config(conf), workdir, ["ingest", "normalize", "curate"])
            assert summary.error is None, summary.error
            runs.append((workdir, summary))
    finally:
        if saved is None:
            os.environ.pop("CARELAKE_DEID_KEY", None)
        else:
            os.environ["CARELAKE_DEID_KEY"] = saved
    return runs


def test_same_key_same_pseudonyms_across_runs_and_hospitals_other_key_disjoint(two_runs, monkeypatch):
    (one, _), (two, _) = two_runs
    first, second = _person_ids(one), _person_ids(two)
    assert first and first == second
    assert _person_ids(one, "gold.encounter") == _person_ids(two, "gold.encounter")
    # persons seen at both hospitals carry one pseudonym: fewer persons than hospital patients
    patients = DeltaTable(str(one / "curated" / "gold" / "patient")).to_pyarrow_table().to_pylist()
    assert len({p["person_id"] for p in patients}) < len(patients)
    monkeypatch.setenv("CARELAKE_DEID_KEY", KEY_B)
    summary = run_pipeline(load_config(two / "conf"), two, ["curate"])
    assert summary.error is None, summary.error
    assert _person_ids(two).isdisjoint(first)


def test_curate_reports_k_anonymity(two_runs):
    (_, summary), _ = two_runs
    report = summary.results["curate"]["kanon"]
    assert report["table"] == "gold.patient" and report["k"] == 5
    touched = report["unchanged"] + sum(report["generalized"].values()) + report["suppressed"]
    assert touched == report["records"] == summary.results["curate"]["gold"]["patient"]
    assert list(report["generalized"]) == ["postal3->null", "birth_year->null", "age_band->band20", "region->null"]


def test_curated_patient_groups_hold_k_persons_or_are_suppressed(two_runs):
    (one, _), _ = two_runs
    rows = DeltaTable(str(one / "curated" / "gold" / "patient")).to_pyarrow_table().to_pylist()
    groups = {}
    for r in rows:
        groups.setdefault((r["birth_year"], r["age_band"], r["gender"], r["postal3"], r["region"]), set()).add(r["person_id"])
    assert all(len(persons) >= 5 or key == (None,) * 5 for key, persons in groups.items())
    assert "kanon_step" not in rows[0]


def test_grade_gate_stops_curate_before_publication(two_runs, monkeypatch):
    (one, _), _ = two_runs
    monkeypatch.setenv("CARELAKE_DEID_KEY", KEY_A)
    config = load_config(one / "conf")
    version = DeltaTable(str(one / "curated" / "gold" / "patient")).version()
    deid = dict(config.deid)
    deid["tables"] = {**deid["tables"], "patient": {**deid["tables"]["patient"],
                                                    "columns": [*deid["tables"]["patient"]["columns"], {"column": "phone", "action": "keep"}]}}
    summary = run_pipeline(dataclasses.replace(config, deid=deid), one, ["curate"])
    assert summary.exit_code == PrivacyGateError.exit_code
    assert "gold.patient.phone (grade 4" in summary.error and "nothing was published" in summary.error
    assert DeltaTable(str(one / "curated" / "gold" / "patient")).version() == version


def test_phi_gate_checks_pseudonym_columns_by_their_form(two_runs, spark, monkeypatch):
    """A pseudonym whose hex digits contain an identifier by chance is no hit; a value that is no
    pseudonym in a pseudonym column is one."""
    from carelake.context import RunContext
    from carelake.curate import phi_gate
    from transforms.phi_scan import direct_identifiers

    (one, _), _ = two_runs
    monkeypatch.setenv("CARELAKE_DEID_KEY", KEY_A)
    config = load_config(one / "conf")
    ctx = RunContext(config, Lake.from_config(config, one), spark)
    digits = sorted(r["value"] for r in direct_identifiers(ctx.lake.read(spark, "silver.patient")).collect()
                    if r["value"].isdigit() and 6 <= len(r["value"]) <= 20)
    assert digits, "the demo's patients carry numeric identifiers"
    chance = (digits[0] + "a" * 32)[:32]
    assert phi_gate(ctx, {"gold.patient": spark.createDataFrame([(chance,)], "person_id string")}) == {}
    with pytest.raises(PrivacyGateError, match="gold.patient.person_id"):
        phi_gate(ctx, {"gold.patient": spark.createDataFrame([(digits[0],)], "person_id string")})
