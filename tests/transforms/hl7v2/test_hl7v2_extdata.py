"""The public HL7 v2 corpora in ../shared/extdata: no crash, no hang, valid FHIR, agreement with
the Microsoft FHIR-Converter's expected bundles.

Agreement is compared by meaning, as SOURCES.md asks:
- Patient: family, first given name, gender, birthDate and at least one identifier value equal.
  (The first given only: Microsoft also puts XPN.15 "called by" into given, the IG makes it a nickname.)
- Observations: the set of (first code, value) pairs over observations that carry a value, limited
  to the codes of the message's OBX segments (Microsoft also makes Observations of PDA/ACC segments,
  which the IG maps elsewhere); repeated OBX-5 values count as one pair each (FHIR components).
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from contextlib import contextmanager

import pytest

from transforms.errors import RecordError
from transforms.fhir_validate import validate
from transforms.hl7v2 import message_to_resources, parse_message, split_messages
from transforms.terminology import Terminology

pytestmark = pytest.mark.extdata

#: Agreement actually reached (measured: patients 124/124, observations 57/63); the test guards it.
PATIENT_AGREEMENT = 0.99
OBSERVATION_AGREEMENT = 0.90
PER_MESSAGE_SECONDS = 5


@contextmanager
def deadline(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _corpus(extdata_dir):
    files = sorted(p for p in (extdata_dir / "hl7v2").rglob("*") if p.is_file())
    assert files, "no HL7 v2 files found"
    return files


def test_every_message_converts_or_is_quarantined(extdata_dir):
    terminology = Terminology()
    outcomes: Counter = Counter()
    crashes, invalid = [], []
    for path in _corpus(extdata_dir):
        with deadline(PER_MESSAGE_SECONDS):
            messages = split_messages(path.read_bytes())
        for i, text in enumerate(messages):
            where = f"{path.relative_to(extdata_dir)}#{i}"
            try:
                with deadline(PER_MESSAGE_SECONDS):
                    resources = message_to_resources(text, hospital="H1", terminology=terminology)
            except RecordError as exc:
                outcomes[exc.code] += 1
                continue
            except TimeoutError:
                crashes.append(f"{where}: hang (> {PER_MESSAGE_SECONDS} s)")
                continue
            except Exception as exc:  # noqa: BLE001 - the point of the test
                crashes.append(f"{where}: {type(exc).__name__}: {exc}")
                continue
            outcomes["converted"] += 1
            for resource in resources:
                try:
                    validate(resource)
                except RecordError as exc:
                    invalid.append(f"{where}: {exc.reason}")
    assert not crashes, crashes[:10]
    assert not invalid, invalid[:10]
    # Most of the corpus is well formed; the fuzzer-made BadInputs end in PARSE.
    assert outcomes["converted"] >= 170, outcomes
    assert outcomes["PARSE"] >= 30, outcomes


def test_bad_inputs_never_crash_or_hang(extdata_dir):
    bad = sorted(p for p in (extdata_dir / "hl7v2" / "nhapi" / "BadInputs").rglob("*") if p.is_file())
    assert bad
    for path in bad:
        data = path.read_bytes()
        with deadline(PER_MESSAGE_SECONDS):
            for text in split_messages(data) or [data.decode("latin-1")]:
                try:
                    parse_message(text)
                    message_to_resources(text, hospital="H1", terminology=Terminology())
                except RecordError:
                    pass


def _value(r: dict):
    if "valueQuantity" in r:
        return str(float(r["valueQuantity"].get("value")))
    if "valueString" in r:
        return r["valueString"].strip()
    if "valueCodeableConcept" in r:
        codings = r["valueCodeableConcept"].get("coding", [])
        return codings[0].get("code") if codings else r["valueCodeableConcept"].get("text")
    return r.get("valueDateTime") or r.get("valueTime")


def _obs_pairs(resources: list[dict], codes: set) -> set:
    out = set()
    for r in resources:
        if r["resourceType"] != "Observation":
            continue
        codings = [c.get("code") for c in r.get("code", {}).get("coding", []) if c.get("code")]
        code = codings[0] if codings else None
        if code not in codes:
            continue
        for part in [r, *r.get("component", [])]:
            value = _value(part)
            if value is not None:
                out.add((code, value))
    return out


def _patient_agrees(expected: dict, got: dict) -> bool:
    e_name, g_name = (expected.get("name") or [{}])[0], (got.get("name") or [{}])[0]
    e_ids = {i.get("value") for i in expected.get("identifier", [])}
    g_ids = {i.get("value") for i in got.get("identifier", [])}
    return (
        e_name.get("family") == g_name.get("family")
        and (e_name.get("given") or [None])[0] == (g_name.get("given") or [None])[0]
        and expected.get("gender") == got.get("gender")
        and expected.get("birthDate") == got.get("birthDate")
        and bool(e_ids & g_ids)
    )


def test_agreement_with_microsoft_expected_bundles(extdata_dir):
    expected_dir = extdata_dir / "hl7v2-fhir-pairs" / "microsoft-fhir-converter-expected"
    source_dir = extdata_dir / "hl7v2" / "microsoft-fhir-converter"
    patients = observations = patients_ok = observations_ok = 0
    disagreements = []
    for path in sorted(expected_dir.glob("*/*-expected.json")):
        name = path.name[: -len("-expected.json")]
        expected = [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]
        text = split_messages((source_dir / f"{name}.hl7").read_bytes())[0]
        try:
            got = message_to_resources(text, hospital="H1", terminology=Terminology())
        except RecordError:
            got = []
        expected_patients = [r for r in expected if r["resourceType"] == "Patient"]
        if expected_patients:
            patients += 1
            got_patients = [r for r in got if r["resourceType"] == "Patient"]
            if got_patients and _patient_agrees(expected_patients[0], got_patients[0]):
                patients_ok += 1
            else:
                disagreements.append(f"Patient {name}")
        obx_codes = {s.field(3).component(1).strip() or None for s in parse_message(text).segments("OBX")}
        expected_pairs = _obs_pairs(expected, obx_codes)
        if expected_pairs:
            observations += 1
            if _obs_pairs(got, obx_codes) == expected_pairs:
                observations_ok += 1
            else:
                disagreements.append(f"Observation {name}")
    assert patients >= 100 and observations >= 50
    patient_rate, observation_rate = patients_ok / patients, observations_ok / observations
    print(f"\npatient agreement {patients_ok}/{patients} = {patient_rate:.3f}; "
          f"observation agreement {observations_ok}/{observations} = {observation_rate:.3f}")
    assert patient_rate >= PATIENT_AGREEMENT, disagreements
    assert observation_rate >= OBSERVATION_AGREEMENT, disagreements


def test_files_read_in_blocks_split_as_when_read_whole(extdata_dir):
    """Every public HL7 v2 file (test corpora with comments, batches, odd framing and bad inputs), read in
    small blocks as ingest reads big deliveries, gives the messages of the file read whole."""
    import io

    from transforms.hl7v2 import split_file_messages

    files = [p for p in sorted((extdata_dir / "hl7v2").rglob("*")) if p.is_file()]
    assert len(files) > 100
    several = 0
    for path in files:
        data = path.read_bytes()
        whole = split_messages(data)
        several += len(whole) > 1
        for block in (97, 4096):
            assert list(split_file_messages(io.BytesIO(data), block_bytes=block)) == whole, (path.name, block)
    assert several >= 3  # the corpus has few multi-message files; the random files of test_hl7v2_split have many
