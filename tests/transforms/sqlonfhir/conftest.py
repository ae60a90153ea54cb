"""Fixtures for the SQL-on-FHIR tests: external data sets, loaded once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from transforms.sqlonfhir import load_resources

EXTDATA = Path(__file__).resolve().parents[3].parent / "shared" / "extdata"


def extdata_path(*parts: str) -> Path:
    """Path inside ../shared/extdata; skips the calling test when it is absent."""
    path = EXTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"external test data not found at {path} (expected ../shared/extdata beside the project)")
    return path


@pytest.fixture(scope="session")
def synthea_hiv_resources() -> list[dict]:
    """Every resource of the google/fhir-data-pipes Synthea HIV sample (17 patient bundles + shared ones)."""
    return list(load_resources(extdata_path("synthea", "google-fhir-data-pipes-synthea-hiv-small")))


@pytest.fixture(scope="session")
def synthea_ma_resources() -> list[dict]:
    """Every resource of the jijones12 Synthea Massachusetts sample (10 patient bundles)."""
    return list(load_resources(extdata_path("synthea", "jijones12-synthea-ma-11pt-paired", "fhir")))
