"""fhir.resources validation: verdicts, and messages that name elements but never echo values (PHI)."""

from __future__ import annotations

import pytest

from transforms.errors import RecordError
from transforms.fhir_validate import model_class, validate

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Muster"}], "birthDate": "1984-02-29"}


def _reason(resource) -> str:
    with pytest.raises(RecordError) as caught:
        validate(resource)
    assert caught.value.code == "FHIR_INVALID"
    return caught.value.reason


def test_valid_resource_passes():
    validate(dict(PATIENT))


def test_messages_name_the_element_not_the_value():
    reason = _reason({**PATIENT, "birthDate": "Muster-1984"})
    assert "birthDate" in reason and "Muster" not in reason
    assert "secretValue" not in _reason({**PATIENT, "nickname": "secretValue"})


@pytest.mark.parametrize("resource, expected", [
    ("not a dict", "no resourceType"),
    ({"id": "x"}, "no resourceType"),
    ({"resourceType": "Spaceship", "id": "x"}, "unknown resourceType"),
])
def test_what_is_not_a_resource(resource, expected):
    assert expected in _reason(resource)


def test_model_class_is_cached_and_none_for_unknown_types():
    assert model_class("Patient") is model_class("Patient")
    assert model_class("Spaceship") is None
