"""Fixtures of the HL7 v2 tests (messages live in hl7v2_messages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hl7v2_messages import EXTDATA, HOSPITAL

from transforms.terminology import Concept, Terminology


@pytest.fixture
def terminology() -> Terminology:
    return Terminology({(f"urn:carelake:{HOSPITAL}:lab", "GLU-L"): Concept("http://loinc.org", "2345-7", "Glucose")})


@pytest.fixture
def extdata_dir() -> Path:
    if not EXTDATA.exists():
        pytest.skip(f"external test data not found at {EXTDATA} (expected ../shared/extdata beside the project)")
    return EXTDATA
