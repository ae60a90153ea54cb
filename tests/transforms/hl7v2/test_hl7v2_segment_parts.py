"""The memoised OBX and DG1 parts (`transforms.hl7v2._context.segment_parts`) change nothing.

They are cached across messages, so three things could leak: a dict one message's resources share with
the cache (changed later by a mapper or a caller), the translation of one terminology map served for
another, and content of one message's varying fields (value, time, set id) served for another's.
"""

from __future__ import annotations

import copy

import pytest
from hl7v2_messages import ADT_A01, DG1, EXTDATA, HOSPITAL, ORU_R01, msg

from transforms.errors import RecordError
from transforms.hl7v2 import _context, message_to_resources, split_messages
from transforms.terminology import Concept, Terminology

LOCAL_LAB = f"urn:carelake:{HOSPITAL}:lab"


def _convert(text: str, terminology: Terminology) -> list[dict]:
    return message_to_resources(text, hospital=HOSPITAL, terminology=terminology)


def _of_type(resources: list[dict], resource_type: str) -> list[dict]:
    return [r for r in resources if r["resourceType"] == resource_type]


def test_changing_a_result_does_not_change_the_next_message(terminology):
    first = _convert(ORU_R01, terminology)
    expected = copy.deepcopy(first)
    for observation in _of_type(first, "Observation"):  # what a later mapper or a caller might do
        observation["code"].setdefault("coding", []).append({"system": "x", "code": "changed"})
        observation["code"]["text"] = "changed"
        for interpretation in observation.get("interpretation", []):
            interpretation["coding"][0]["code"] = "changed"
    assert _convert(ORU_R01, terminology) == expected


def test_changing_a_condition_does_not_change_the_next_message(terminology):
    first = _convert(ADT_A01, terminology)
    expected = copy.deepcopy(first)
    condition = _of_type(first, "Condition")[0]
    condition["code"]["coding"][0]["code"] = "changed"
    condition["code"]["text"] = "changed"
    assert _convert(ADT_A01, terminology) == expected


def test_each_terminology_map_translates_its_own_codes():
    glucose = Terminology({(LOCAL_LAB, "GLU-L"): Concept("http://loinc.org", "2345-7", "Glucose")})
    other = Terminology({(LOCAL_LAB, "GLU-L"): Concept("http://loinc.org", "2339-0", "Glucose [Mass/volume]")})
    for terminology, code in ((glucose, "2345-7"), (other, "2339-0"), (Terminology(), None), (glucose, "2345-7")):
        local = next(o for o in _of_type(_convert(ORU_R01, terminology), "Observation")
                     if o["code"]["coding"][0]["code"] == "GLU-L")
        mapped = [c["code"] for c in local["code"]["coding"][1:]]
        assert mapped == ([code] if code else [])


def test_results_that_differ_only_in_varying_fields_keep_their_own_values(terminology):
    obx = "OBX|{n}|NM|2345-7^Glucose^LN||{value}|mmol/L^^UCUM|3.9-6.1|H|||F|||{time}"
    text = msg(*ORU_R01.split("\r")[:4], obx.format(n=1, value="7.8", time="20240103075000+0800"),
               obx.format(n=2, value="5.1", time="20240103091500+0800"))
    observations = _of_type(_convert(text, terminology), "Observation")
    assert [(o["valueQuantity"]["value"], o["effectiveDateTime"]) for o in observations] == [
        (7.8, "2024-01-03T07:50:00+08:00"), (5.1, "2024-01-03T09:15:00+08:00")]
    assert observations[0]["code"] == observations[1]["code"]
    assert observations[0]["code"] is not observations[1]["code"]


def test_an_unmapped_status_is_still_quarantined_when_memoised(terminology):
    bad = ORU_R01.replace("|H|||F|||20240103075000+0800", "|H|||Q|||20240103075000+0800", 1)
    for _ in range(2):  # the second time from the cache
        with pytest.raises(RecordError, match="OBX-11"):
            _convert(bad, terminology)


def _corpus_messages() -> list[str]:
    if not EXTDATA.exists():
        pytest.skip(f"external test data not found at {EXTDATA}")
    messages = []
    for path in sorted(p for p in (EXTDATA / "hl7v2").rglob("*") if p.is_file()):
        messages += split_messages(path.read_bytes())
    return messages


def _outcome(text: str, terminology: Terminology):
    try:
        return _convert(text, terminology)
    except RecordError as exc:
        return exc.code, exc.reason


def test_memoised_mapping_equals_mapping_every_segment(terminology, monkeypatch):
    # The real messages of ../shared/extdata and a few made here, each mapped twice (the second time
    # from the cache), against the mapping with the cache bypassed.
    texts = [ORU_R01, ADT_A01, ADT_A01.replace(DG1, DG1 + "|||||||||||||||||D")] + _corpus_messages()
    memoised = [[_outcome(t, terminology) for _ in range(2)] for t in texts]
    monkeypatch.setattr(_context, "_packed_parts", lambda *args: None)
    for text, (once, again) in zip(texts, memoised):
        direct = _outcome(text, terminology)
        assert once == direct and again == direct
