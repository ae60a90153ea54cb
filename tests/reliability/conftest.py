"""Fixtures of the reliability tests (helpers live in reliability_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability_helpers import prepare_region


@pytest.fixture
def region(tmp_path_factory) -> Path:
    """A freshly generated two-hospital region (60 persons) with its conf/, nothing run yet."""
    workdir = tmp_path_factory.mktemp("region") / "home"
    prepare_region(workdir)
    return workdir
