"""The official SQL-on-FHIR v2 conformance suite (FHIR/sql-on-fhir-v2 ``tests/*.json``), one case per test.

Each file has ``resources`` and ``tests``; a test gives a ``view`` and ``expect`` (rows, compared without
regard to order, as the specification promises no row order), ``expectColumns`` (names in order), or
``expectError`` (the view must be rejected at compile time or while evaluating). Files that declare
``fhirVersion`` run only if they list 4.0.1 (carelake is FHIR R4); files that declare none apply to all.
Cases that fail are listed in KNOWN_FAILURES with the reason and run as strict xfails, so a fix shows up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms.sqlonfhir import ViewError, compile_view

SUITE = Path(__file__).resolve().parents[3].parent / "shared" / "extdata" / "sql-on-fhir-v2-tests"
FHIR_VERSION = "4.0.1"
EXPECTED_CASES = 134
MIN_PASS_RATE = 0.95

#: case id -> reason it fails today. Empty: every applicable case passes.
KNOWN_FAILURES: dict[str, str] = {}


def _cases() -> list:
    if not SUITE.is_dir():
        return []
    cases = []
    for file in sorted(SUITE.glob("*.json")):
        if file.name == "tests.schema.json":
            continue
        doc = json.loads(file.read_text(encoding="utf-8"))
        versions = doc.get("fhirVersion")
        if versions and FHIR_VERSION not in versions:
            continue
        for test in doc["tests"]:
            case_id = f"{file.stem}: {test['title']}"
            marks = []
            if case_id in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[case_id], strict=True))
            cases.append(pytest.param(doc["resources"], test, id=case_id, marks=marks))
    return cases


CASES = _cases()


def _canonical(value):
    # JSON gives 5 where the evaluator computes 5.0 (a decimal); they are the same FHIR value.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _multiset(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(_canonical(r), sort_keys=True) for r in rows)


@pytest.mark.extdata
@pytest.mark.skipif(not CASES, reason=f"SQL-on-FHIR v2 conformance suite not found at {SUITE} "
                                      "(expected ../shared/extdata beside the project)")
@pytest.mark.parametrize(("resources", "test"), CASES or [pytest.param(None, None, id="suite-absent")])
def test_conformance(resources, test):
    if "expectError" in test:
        with pytest.raises(ViewError):
            view = compile_view(test["view"])
            list(view.evaluate_many(resources))
        return
    view = compile_view(test["view"])
    rows = list(view.evaluate_many(resources))
    if "expectColumns" in test:
        assert [name for name, _, _ in view.columns] == test["expectColumns"]
        for row in rows:
            assert list(row) == test["expectColumns"]
    if "expect" in test:
        assert _multiset(rows) == _multiset(test["expect"])


@pytest.mark.extdata
@pytest.mark.skipif(not CASES, reason=f"SQL-on-FHIR v2 conformance suite not found at {SUITE}")
def test_conformance_pass_rate():
    assert len(CASES) == EXPECTED_CASES
    passing = len(CASES) - len(KNOWN_FAILURES)
    assert passing / len(CASES) >= MIN_PASS_RATE, f"{passing}/{len(CASES)} conformance cases pass"
