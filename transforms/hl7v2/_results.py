"""OBR -> DiagnosticReport, OBX -> Observation, SPM -> Specimen, NTE -> note (IG OBR, OBX, SPM maps)."""

from __future__ import annotations

from transforms.errors import RecordError
from transforms.hl7v2 import datatypes as dt
from transforms.hl7v2 import _orders, vocab
from transforms.hl7v2._context import Context, segment_parts
from transforms.hl7v2.parse import Repetition, Segment
from transforms.terminology import Terminology


def _first(seg: Segment, n: int) -> Repetition | None:
    return seg.field(n).first


def _ei(rep: Repetition | None) -> str:
    """EI as a key: entity id, plus namespace when given (ids are unique only within a namespace)."""
    if rep is None:
        return ""
    value, namespace = rep.component(1).strip(), rep.component(2).strip()
    return f"{value}^{namespace}" if value and namespace else value


def map_report(
    ctx: Context, obr: Segment, index: int, *, as_report: bool, as_request: bool, with_specimen: bool = False,
) -> dict | None:
    """Start a result group. Result messages (ORU, OUL) make a DiagnosticReport of it; the order it
    answers (OBR, with its ORC when there is one) is a ServiceRequest in order messages and in results
    (the IG's ORU map makes it "if needed": every result answers an order, and silver keeps the orders,
    also when the sender left ORC out). OBX segments of an order still become Observations under it. ``with_specimen``: the OBR's specimen is a Specimen even without a
    report (IG OML_O21 OBR[Specimen]), referred to by the ServiceRequest."""
    key = _ei(_first(obr, 3)) or _ei(_first(obr, 2))
    key = f"fill|{key}" if key else f"msg|{ctx.message.control_id}|{obr.value(1).strip() or index}"
    ctx.report_key = key
    ctx.report = None
    request = _orders.map_service_request(ctx, obr, key) if as_request else None
    ctx.request = request
    if not as_report:
        ctx.last = request
        if with_specimen:
            _obr_specimen(ctx, obr, dt.fhir_datetime(obr.value(7), "OBR-7", ctx.tz),
                          dt.fhir_datetime(obr.value(8), "OBR-8", ctx.tz))
        return None
    concept = dt.codeable_concept(_first(obr, 4), ctx.hospital, "lab", ctx.terminology)
    if concept is None:
        concept = dict(vocab.UNKNOWN_CONCEPT)
    report: dict = {
        "resourceType": "DiagnosticReport",
        "id": ctx.rid("DiagnosticReport", key),
        "status": "unknown",
        "code": concept,
        "subject": {"reference": ctx.patient_ref},
    }
    identifiers = _orders.order_identifiers(ctx, ctx.order, obr)
    group = _first(ctx.order, 4) if ctx.order is not None else None
    if group is not None and group.component(1).strip():
        identifiers.append({"value": group.component(1).strip(),
                            "type": {"coding": [{"system": vocab.V2_0203, "code": "PGN"}]}})
    if identifiers:
        report["identifier"] = identifiers
    status = obr.value(25).strip().upper()
    if status:
        mapped = vocab.REPORT_STATUS.get(status)
        if mapped is None and status in vocab.REPORT_STATUS_ERRORS:
            raise RecordError("UNKNOWN_CODE", "OBR-25 result status has no mapping")
        # A value outside table 0123 tells nothing about the report's state: that is "unknown".
        report["status"] = mapped or "unknown"
    ctx.report_status_given = bool(status)
    if request is not None:
        report["basedOn"] = [{"reference": f"ServiceRequest/{request['id']}"}]
    if ctx.encounter_ref:
        report["encounter"] = {"reference": ctx.encounter_ref}
    start = dt.fhir_datetime(obr.value(7), "OBR-7", ctx.tz)
    end = dt.fhir_datetime(obr.value(8), "OBR-8", ctx.tz)
    if start and end:
        report["effectivePeriod"] = {"start": start, "end": end}
    elif start:
        report["effectiveDateTime"] = start
    issued = dt.fhir_instant(obr.value(22), "OBR-22", ctx.tz)
    if issued:
        report["issued"] = issued
    section = dt.code(obr.value(24))
    if section:
        report["category"] = [{"coding": [{"system": vocab.V2_0074, "code": section}]}]
    ctx.report = ctx.add(report)
    ctx.last = ctx.report
    _obr_specimen(ctx, obr, start, end)
    return ctx.report


def _obr_specimen(ctx: Context, obr: Segment, start: str | None, end: str | None) -> None:
    """The IG's ORU map makes a Specimen of every OBR (OBR[Specimen]): collection time, quantity,
    received time and source; an SPM in the group adds its own, richer Specimen."""
    specimen: dict = {
        "resourceType": "Specimen",
        "id": ctx.rid("Specimen", f"{ctx.report_key}|obr"),
        "subject": {"reference": ctx.patient_ref},
    }
    if start and end:
        specimen["collection"] = {"collectedPeriod": {"start": start, "end": end}}
    elif start:
        specimen["collection"] = {"collectedDateTime": start}
    received = dt.fhir_instant(obr.value(14), "OBR-14", ctx.tz)
    if received:
        specimen["receivedTime"] = received
    source = dt.codeable_concept(_first(obr, 15), ctx.hospital, "specimen-type")
    if source:
        specimen["type"] = source
    specimen = ctx.add(specimen)
    _refer_specimen(ctx, specimen)


def _refer_specimen(ctx: Context, specimen: dict) -> None:
    """The group's report (results) or else its request (orders) lists the specimen."""
    target = ctx.report if ctx.report is not None else ctx.request
    if target is not None:
        target.setdefault("specimen", []).append({"reference": f"Specimen/{specimen['id']}"})


def finish_report(ctx: Context, statuses: list[str]) -> None:
    """Without OBR-25, a report whose observations are all final (or corrected) is final itself."""
    report = ctx.report
    if report is None:
        return
    if ctx.report_status_given:
        return
    if statuses and all(s in ("final", "corrected", "amended") for s in statuses):
        report["status"] = "final" if all(s == "final" for s in statuses) else "amended"
    elif statuses and all(s == "preliminary" for s in statuses):
        report["status"] = "preliminary"


def _sn_value(rep: Repetition, unit: dict) -> dict | None:
    comparator, num1, sep, num2 = (rep.component(i).strip() for i in (1, 2, 3, 4))
    n1, n2 = dt.decimal(num1) if num1 else None, dt.decimal(num2) if num2 else None
    if comparator == "<>":
        return None
    if sep in (":", "/") and n1 is not None and n2 is not None and not comparator:
        return {"valueRatio": {"numerator": {"value": n1, **unit}, "denominator": {"value": n2}}}
    if sep == "-" and n1 is not None and n2 is not None and not comparator:
        return {"valueRange": {"low": {"value": n1, **unit}, "high": {"value": n2, **unit}}}
    if not sep and not num2 and n1 is not None and comparator in ("", "=", "<", ">", "<=", ">="):
        quantity = {"value": n1, **unit}
        if comparator and comparator != "=":
            quantity["comparator"] = comparator
        return {"valueQuantity": quantity}
    return None


def _numeric_with_comparator(text: str, unit: dict) -> dict | None:
    # Senders put "<5" or ">=200" in NM fields; SN would have been right, the meaning is the same.
    for comparator in ("<=", ">=", "<", ">"):
        if text.startswith(comparator):
            n = dt.decimal(text[len(comparator):])
            if n is not None:
                return {"valueQuantity": {"value": n, "comparator": comparator, **unit}}
    return None


def _value(ctx: Context, obx: Segment, value_type: str, unit: dict) -> dict:
    """OBX-5 as Observation.value[x]; ``value_type`` and ``unit``: OBX-2 and OBX-6 as `_observation_parts`
    reads them."""
    reps = obx.field(5).repetitions
    if not reps:
        return {}
    if len(reps) > 1 and value_type not in _TEXT_TYPES:
        # Repeated coded or numeric values ("60~120") are several results of one test: components.
        values = [_one_value(ctx, value_type, [rep], unit) for rep in reps]
        return {"_components": [v for v in values if v]}
    return _one_value(ctx, value_type, reps, unit)


_TEXT_TYPES = frozenset({"ST", "TX", "FT", "VR"})


def _one_value(ctx: Context, value_type: str, reps: list[Repetition], unit: dict) -> dict:
    first = reps[0]
    if value_type == "NM":
        text = first.text().strip()
        n = dt.decimal(text)
        if n is not None:
            return {"valueQuantity": {"value": n, **unit}}
        return _numeric_with_comparator(text, unit) or {"valueString": text}
    if value_type == "SN":
        out = _sn_value(first, unit)
        if out:
            return out
        text = " ".join(x for x in (*first.components, unit.get("unit", "")) if x.strip())
        return {"valueString": text} if text else {}
    if value_type in ("CWE", "CE", "CNE", "CF", "IS", "ID"):
        concept = dt.codeable_concept(first, ctx.hospital, "lab-answer", ctx.terminology)
        return {"valueCodeableConcept": concept} if concept else {}
    if value_type in ("DT", "DTM", "TS"):
        value = dt.fhir_datetime(first.component(1), "OBX-5", ctx.tz)
        return {"valueDateTime": value} if value else {}
    if value_type == "TM":
        value = dt.fhir_time(first.component(1), "OBX-5")
        return {"valueTime": value} if value else {}
    if value_type == "NR":
        low, high = dt.decimal(first.component(1)), dt.decimal(first.component(2))
        rng = {k: {"value": v} for k, v in (("low", low), ("high", high)) if v is not None}
        return {"valueRange": rng} if rng else {}
    if value_type == "DR":
        start = dt.fhir_datetime(first.component(1), "OBX-5", ctx.tz)
        end = dt.fhir_datetime(first.component(2), "OBX-5", ctx.tz)
        period = {k: v for k, v in (("start", start), ("end", end)) if v}
        return {"valuePeriod": period} if period else {}
    if value_type in ("ED", "RP", "NA", "MA", "CP", "AD", "PN", "XPN", "XAD", "XCN", "XON", "XTN", "CX", "EI"):
        # Embedded documents and structured types have no Observation.value[x] in R4: not mapped yet.
        return {}
    # ST, TX, FT, VR and unknown types: text; repetitions of TX/FT are lines.
    text = "\n".join(r.text() for r in reps).strip()
    return {"valueString": text} if text else {}


#: OBX fields that change from one result to the next: set id, sub-id, value and time. The others (code,
#: units, range, flags, status, method, body site) come in a few hundred combinations per feed.
_VARYING_OBX_FIELDS = (1, 4, 5, 14)


def _observation_parts(obx: Segment, hospital: str, terminology: Terminology) -> dict:
    """What an Observation takes from the OBX fields other than `_VARYING_OBX_FIELDS`.
    ``status`` None: OBX-11 has no mapping."""
    concept = dt.codeable_concept(_first(obx, 3), hospital, "lab", terminology)
    status_code = obx.value(11).strip().upper()
    interpretations = []
    for rep in obx.field(8).repetitions:
        flag = rep.component(1).strip()
        display = vocab.INTERPRETATION.get(flag.upper())
        if display:
            interpretations.append({"coding": [{"system": vocab.OBS_INTERPRETATION, "code": flag.upper(),
                                                "display": display}]})
        else:
            concept_i = dt.codeable_concept(rep, hospital, "interpretation")
            if concept_i:
                interpretations.append(concept_i)
    return {
        # Observation.code is required; an OBX without OBX-3 still carries a value worth keeping.
        "code": concept if concept is not None else dict(vocab.UNKNOWN_CONCEPT),
        "status": vocab.OBSERVATION_STATUS.get(status_code) if status_code else "unknown",
        "type": obx.value(2).strip().upper(),
        "unit": dt.quantity_unit(_first(obx, 6)),
        "referenceRange": obx.field(7).text().strip(),
        "interpretation": interpretations,
        "method": dt.codeable_concept(_first(obx, 17), hospital, "method"),
        "bodySite": dt.codeable_concept(_first(obx, 20), hospital, "body-site"),
    }


def map_observation(ctx: Context, obx: Segment, index: int, set_ids: set) -> dict:
    # Memoised: half the cost of an Observation was reading the fields that repeat across messages.
    parts = segment_parts(obx, _VARYING_OBX_FIELDS, _observation_parts, ctx)
    concept = parts["code"]
    set_id = obx.value(1).strip()
    sub_id = obx.value(4).strip()
    local = f"{set_id}.{sub_id}" if set_id and sub_id else set_id
    if not local or local in set_ids:
        local = f"#{index}"
    set_ids.add(local)
    if ctx.report_key:
        key = f"{ctx.report_key}|{local}"
    else:
        # OBX outside a result group (ADT vitals): keyed by what it says, so an update replaces it.
        code_rep = _first(obx, 3)
        obs_code = code_rep.component(1).strip() if code_rep is not None else ""
        key = f"{ctx.context_key}|{obs_code}|{obx.value(14).strip()}|{local}"
    status = parts["status"]
    if status is None:
        raise RecordError("UNKNOWN_CODE", "OBX-11 observation result status has no mapping")
    obs: dict = {
        "resourceType": "Observation",
        "id": ctx.rid("Observation", key),
        "status": status,
        "code": concept,
        "subject": {"reference": ctx.patient_ref},
    }
    if ctx.encounter_ref:
        obs["encounter"] = {"reference": ctx.encounter_ref}
    value = _value(ctx, obx, parts["type"], parts["unit"])
    components = value.pop("_components", None)
    if components:
        obs["component"] = [{"code": concept, **v} for v in components]
    obs.update(value)
    effective = obx.value(14)
    effective_dt = dt.fhir_datetime(effective, "OBX-14", ctx.tz) if effective.strip() else None
    if effective_dt:
        obs["effectiveDateTime"] = effective_dt
    elif ctx.report is not None:
        report_time = ctx.report.get("effectiveDateTime") or ctx.report.get("effectivePeriod", {}).get("start")
        if report_time:
            obs["effectiveDateTime"] = report_time
    if parts["referenceRange"]:
        obs["referenceRange"] = [{"text": parts["referenceRange"]}]
    for element in ("interpretation", "method", "bodySite"):
        if parts[element]:
            obs[element] = parts[element]
    obs = ctx.add(obs)
    if ctx.report is not None:
        ctx.report.setdefault("result", []).append({"reference": f"Observation/{obs['id']}"})
    ctx.last = obs
    return obs


def attach_note(ctx: Context, nte: Segment) -> None:
    """NTE after an OBX or OBR: its comment becomes a note of that Observation (DiagnosticReport has none)."""
    target = ctx.last
    if target is None or target.get("resourceType") != "Observation":
        return
    text = "\n".join(r.text() for r in nte.field(3).repetitions).strip()
    if text:
        target.setdefault("note", []).append({"text": text})


def map_specimen(ctx: Context, spm: Segment, index: int) -> dict | None:
    type_concept = dt.codeable_concept(_first(spm, 4), ctx.hospital, "specimen-type")
    spm2 = _first(spm, 2)
    specimen_id = ""
    if spm2 is not None:
        # SPM-2 is EIP: placer EI in component 1, filler EI in component 2 (as sub-components).
        specimen_id = spm2.component(2, 1).strip() or spm2.component(1, 1).strip()
    if type_concept is None and not specimen_id:
        return None
    key = f"{ctx.report_key or ctx.context_key}|{specimen_id or spm.value(1).strip() or f'#{index}'}"
    specimen: dict = {
        "resourceType": "Specimen",
        "id": ctx.rid("Specimen", key),
        "subject": {"reference": ctx.patient_ref},
    }
    identifiers = []
    if spm2 is not None:
        # IG EIP[Identifier-PlacerAssignedIdentifier] / [...-FillerAssignedIdentifier]: PGN / FGN.
        for comp, type_code in ((1, "PGN"), (2, "FGN")):
            value = spm2.component(comp, 1).strip()
            if value:
                identifiers.append({"value": value, "type": {"coding": [{"system": vocab.V2_0203, "code": type_code}]}})
    identifiers += [i for i in (dt.identifier(r, ctx.hospital) for r in spm.field(31).repetitions) if i]
    shipment = _first(spm, 32)
    if shipment is not None and shipment.component(1).strip():
        identifiers.append({"value": shipment.component(1).strip(),
                            "type": {"coding": [{"system": vocab.V2_0203, "code": "SHIP"}]}})
    if identifiers:
        specimen["identifier"] = identifiers
    accession = _first(spm, 30)
    if accession is not None:
        ident = dt.identifier(accession, ctx.hospital)
        if ident:
            specimen["accessionIdentifier"] = ident
    if type_concept:
        specimen["type"] = type_concept
    collected = dt.fhir_datetime(spm.field(17).component(1), "SPM-17", ctx.tz)
    if spm.field(17).component(2).strip():
        # IG: a valued SPM-17.2 makes the collection a period, even when its end is not a date.
        try:
            end = dt.fhir_datetime(spm.field(17).component(2), "SPM-17", ctx.tz)
        except RecordError:
            end = None
        period = {k: v for k, v in (("start", collected), ("end", end)) if v}
        if period:
            specimen["collection"] = {"collectedPeriod": period}
    elif collected:
        specimen["collection"] = {"collectedDateTime": collected}
    received = dt.fhir_instant(spm.value(18), "SPM-18", ctx.tz)
    if received:
        specimen["receivedTime"] = received
    specimen = ctx.add(specimen)
    _refer_specimen(ctx, specimen)
    return specimen
