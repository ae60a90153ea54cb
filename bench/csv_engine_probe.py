"""Prototype: CSV observation rows -> FHIR R4 Observations by engine expressions, checked and timed.

    python -m bench.csv_engine_probe WORKDIR [--rounds R] [--limit N]

WORKDIR is a lake's working directory with its `conf/` (a `python -m bench --keep` run folder, or a
demo's home) whose bronze holds CSV feeds. For each hospital whose CSV layout the planner takes, it
prints how many observation rows the guard took, whether each of them gives the Python mapper's row
byte for byte (resource text, id, patient_id, unmapped), and then, `R` times, the CPU seconds of the
engine's expressions with the write of their rows to a staging Delta table against the CPU seconds of
the Python map of the same rows (`transforms.normalize.normalize_record_tuples`: mapping, fast
validation, JSON text; no Arrow, no write). Figures of 2026-12-07: docs/performance.md, "A daily
delivery at 100,000 patients, the engine CSV mapper measured", item 3.

Not used by the pipeline: it lives in bench/ until it is a mapper (what that still needs is under
"Left to do" in docs/performance.md). The Python mapper costs 43-45 us per row with its validation and
JSON text; these expressions 9-16 us per row in the engine. They must give the Python mapper's
resource text byte for byte, so a row is taken only when a guard is sure of that; every other row would
go to Python, which also gives the reasons of the rows it rejects. `tests/bench/test_csv_engine_probe.py`
holds that against the demo's rows and mutated ones.

The guard takes a row when:
- its payload is an observation row of exactly the layout's fields (no panel, no short or long row);
- every cell is printable ASCII without quote or backslash (JSON as is; no undecodable byte), the
  identifying cells and codes also without space (valid FHIR codes and ids, one word);
- the required fields are non-empty, the flag one of the known ones;
- the value is empty, or a number whose Python `repr` is its own text (an integer without sign `+` or
  leading zeros; a decimal of at most 15 significant digits without trailing zeros, magnitude at least
  1e-4), or text that no number pattern of the Python mapper takes;
- the date-time matches the layout's format made of fixed-width numeric fields, with a day that exists
  in every year (the 29th of February goes to Python); with a UTC offset FHIR allows (-13:59 to +14:00,
  not -00:00), or local time in the layout's zone away from a change of its offset (see `_datetime`).

Layouts it does not plan (a category column, content keys, panels, hospital codes for code systems) give
no expressions: all their rows would go to Python.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from transforms import fastjson
from transforms.csv_feed import FIELDS, _CODE_SYSTEM_SYNONYMS, _FLAGS, _INTERPRETATION, _VITAL_SIGNS, format_pattern
from transforms.systems import LOINC, UCUM, local_code_system
from transforms.terminology import Terminology

__all__ = ["plan_observations", "planned_spec", "planned_feeds", "compare", "main"]

_SAFE = r"^[!#-\[\]-~]*$"  # printable ASCII without space, quote or backslash
_SAFE_TEXT = r"^([!#-\[\]-~]+( [!#-\[\]-~]+)*)?$"  # the same, single spaces between words
_INT = r"^-?(0|[1-9][0-9]{0,17})$"
_DEC = r"^-?(0|[1-9][0-9]*)\.([0-9]*[1-9]|0)$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"  # what `csv_feed._number` takes, at most
# days that exist in every year, per month (leap days go to Python)
_DAY = r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
_FIXED = {"Y": "([0-9]{4})", "m": "([0-9]{2})", "d": "([0-9]{2})", "H": "([01][0-9]|2[0-3])", "M": "([0-5][0-9])",
          "S": "([0-5][0-9])", "z": "(Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])"}
#: column of each directive's digits (column names are not case-sensitive: %m and %M need two words)
_PART = {"Y": "year", "m": "month", "d": "day", "H": "hour", "M": "minute", "S": "second", "z": "zone"}
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_FHIR_OFFSET = r"^[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)$"


def _offset_seconds(wall: Column, zone: str) -> Column:
    """Seconds east of UTC of `zone` at the wall-clock timestamp `wall` (the session's time zone is UTC)."""
    return F.unix_timestamp(wall) - F.unix_timestamp(F.to_utc_timestamp(wall, zone))


def _datetime_pattern(fmt: str | None) -> tuple[str, list[str]] | None:
    """(regular expression, its groups' directives) of a layout's date-time format, or None when not planned."""
    found = format_pattern(fmt, _FIXED) if fmt is not None else None
    if found is None or not set("YmdHM") <= set(found[1]):
        return None
    return "^" + found[0] + "$", found[1]


def _datetime_cells(fmt: str, cell: Column) -> dict[str, Column]:
    """The staged columns of a date-time cell: `_dt_match` (it matches the format) and `_dt_<part>`."""
    pattern, seen = _datetime_pattern(fmt)
    return {"_dt_match": cell.rlike(pattern)} | {f"_dt_{_PART[d]}": F.regexp_extract(cell, pattern, seen.index(d) + 1) for d in seen}


def _datetime(fmt: str, zone: str | None) -> dict[str, Column]:
    """From the columns of `_datetime_cells`: `_dt_ok` (the guard's part) and `_dt_text` (ISO 8601 text as
    Python's mapper writes it).

    A format without `%z` gives local times, which take `zone`'s offset at that moment; a time within a
    day of a change of the zone's offset goes to Python (a gap or a repeated hour there), and so do
    years outside 1981-2037, where the engine's and Python's zone rules may part."""
    _, seen = _datetime_pattern(fmt)
    local = "z" not in seen
    group = {d: F.col(f"_dt_{_PART[d]}") for d in seen}
    group.setdefault("S", F.lit("00"))
    wall = F.concat(group["Y"], F.lit("-"), group["m"], F.lit("-"), group["d"], F.lit("T"), group["H"], F.lit(":"),
                    group["M"], F.lit(":"), group["S"])
    guard = F.col("_dt_match") & F.concat(group["m"], F.lit("-"), group["d"]).rlike(f"^{_DAY}$") & (group["Y"] != "0000")
    if local:
        # only a real day reaches the parse: Sail fails the whole query on "2021-04-31", where Spark gives null
        at = F.to_timestamp(F.when(guard, wall), "yyyy-MM-dd'T'HH:mm:ss")
        seconds = _offset_seconds(at, zone)
        steady = ((seconds == _offset_seconds(at - F.expr("INTERVAL 1 DAY"), zone))
                  & (seconds == _offset_seconds(at + F.expr("INTERVAL 1 DAY"), zone)))
        minutes = F.abs(seconds) / 60
        offset = F.concat(F.when(seconds < 0, F.lit("-")).otherwise(F.lit("+")),
                          F.lpad((minutes / 60).cast("int").cast("string"), 2, "0"), F.lit(":"),
                          F.lpad((minutes % 60).cast("int").cast("string"), 2, "0"))
        guard = guard & group["Y"].between("1981", "2037") & steady & (seconds % 60 == 0)
    else:
        offset = F.regexp_replace(group["z"], r"^([+-][0-9]{2}):?([0-9]{2})$", "$1:$2")
        offset = F.when(group["z"] == "Z", F.lit("+00:00")).otherwise(offset)
    # what FHIR's dateTime allows (fhir.resources rejects +14:30; Python's `%z` reads it)
    guard = guard & offset.rlike(_FHIR_OFFSET) & (offset != "-00:00")
    return {"_dt_ok": F.coalesce(guard, F.lit(False)), "_dt_text": F.concat(wall, offset)}


def _id(hospital: Column, resource_type: str, local: Column) -> Column:
    """`transforms.ids.resource_id` in the engine."""
    return F.substring(F.sha2(F.concat_ws("\x1f", hospital, F.lit(resource_type), local), 256), 1, 32)


def _literal_map(pairs: dict[str, str]) -> Column:
    return F.create_map(*[F.lit(x) for pair in pairs.items() for x in pair]) if pairs else F.create_map().cast("map<string,string>")


def planned_spec(layout: dict) -> dict | None:
    """The observations entity of a CSV layout that `plan_observations` plans, or None (a category
    column, panels, another encoding, a date-time format of other directives or local time without a
    zone, hospital codes for code systems: those rows all go to Python)."""
    spec = (layout.get("entities") or {}).get("observations")
    if not spec:
        return None
    columns = set(spec["columns"])
    if "observation_id" not in columns or "category" in columns or spec.get("panels") or layout.get("encoding", "utf-8") != "utf-8":
        return None
    fmt = spec.get("datetime_format")
    if _datetime_pattern(fmt) is None or ("%z" not in fmt and not layout.get("timezone")):
        return None
    if (spec.get("values") or {}).get("code_system"):
        return None
    return spec


def plan_observations(bronze, *, hospital: str, layout: dict, terminology: Terminology, stage=lambda df, name: df):
    """Bronze rows of one hospital's CSV feed -> its observation rows mapped by engine expressions.

    Input: bronze columns (`record_id, hospital, feed, source, position, received_at, format, payload`).
    Output: one row per `csv:observations` record: `record_id, eligible` (the guard took it) and
    `resource, id, patient_id, unmapped` (the map step's columns of a normalized row; meaningless where
    not eligible). None when the layout is not planned (every row goes to Python). `stage(df, name)`
    takes a DataFrame of columns that the next expressions name many times and gives it back written
    (`Lake.materialize`): a filter on `eligible` is pushed below the projections that compute it and
    rewritten in terms of the payload, so the engine evaluates a cell's parse again at every mention
    of it (`explain()` shows it; the guard's conjunctions get no common-expression elimination).
    Called twice: "cells", then "derived" (lookups, ids, the date-time). Measured on his-a's rows: 53
    us a row unstaged, 20 staged.
    """
    spec = planned_spec(layout)
    if spec is None:
        return None
    columns = set(spec["columns"])
    fmt, zone = spec["datetime_format"], layout.get("timezone")
    payload = F.col("payload")
    fields = [f for f in FIELDS["observations"] if f in columns]
    # The cells staged first: the expressions below name each cell many times, and unstaged the engine
    # parses the JSON again at every mention (48 date-time patterns; see the docstring).
    cells = {f"_c_{f}": F.trim(F.get_json_object(payload, f"$.row.{f}")) for f in fields}  # null: a short row
    rows = stage(bronze.filter(F.col("format") == "csv:observations").select(
        "record_id", "hospital",
        (~payload.contains('"__') & F.get_json_object(payload, "$.entity").eqNullSafe("observations")).alias("_shape"),
        *[column.alias(name) for name, column in cells.items()],
        *[column.alias(name) for name, column in _datetime_cells(fmt, cells["_c_effective"]).items()]), "cells")
    empty = F.lit("")
    c = {f: F.col(f"_c_{f}") if f in fields else empty for f in FIELDS["observations"]}

    default = spec.get("default_code_system")
    kind_of = _literal_map(_CODE_SYSTEM_SYNONYMS)
    system_name = F.when(c["code_system"] != "", c["code_system"]).otherwise(F.lit(default) if default else empty)
    local = local_code_system(hospital, "lab")
    # terminology targets as their exact JSON text (fastjson writes them as Python does)
    loinc_sources = {code for (s, code) in terminology.entries if s == LOINC}
    targets = {code: fastjson.dumps(concept.coding()) for (s, code), concept in terminology.entries.items()
               if s == local and not (concept.system == local and concept.code == code)}
    unsafe_targets = {code for code, text in targets.items() if not text.isascii() or "\\" in text}
    same_target = {code for (s, code), concept in terminology.entries.items() if s == local and concept.system == local and concept.code == code}

    flag = F.upper(c["flag"])
    value = c["value"]
    significant = F.regexp_replace(F.regexp_replace(value, r"[-.]", ""), "^0+", "")
    canonical_float = (value.rlike(_DEC) & (F.length(significant) <= 15) & ~value.rlike(r"^-?0\.0000")
                       & (F.length(F.regexp_extract(value, r"^-?([0-9]*)", 1)) <= 16))
    # Each of these is named several times below: staged once, like the cells.
    derived = {"_kind": F.element_at(kind_of, F.lower(system_name)), "_target": F.element_at(_literal_map(targets), c["code"]),
               "_flag_display": F.element_at(_literal_map(_FLAGS), flag),
               "_number": (value.rlike(_INT) & (value != "-0")) | canonical_float,
               "_id": _id(F.col("hospital"), "Observation", c["observation_id"]),
               "_patient": _id(F.col("hospital"), "Patient", c["patient_id"]),
               "_encounter": _id(F.col("hospital"), "Encounter", c["encounter_id"])} | _datetime(fmt, zone)
    rows = stage(rows.select("*", *[column.alias(name) for name, column in derived.items()]), "derived")
    kind, target, flag_display, number = F.col("_kind"), F.col("_target"), F.col("_flag_display"), F.col("_number")
    system = F.when(kind == "loinc", F.lit(LOINC)).otherwise(F.lit(local))
    moment_guard, effective = F.col("_dt_ok"), F.col("_dt_text")
    ids = ("observation_id", "patient_id", "encounter_id", "code", "unit")
    guard = F.col("_shape")
    for f in fields:  # a short row has null cells; Python names it
        guard = guard & c[f].isNotNull()
    for f in ids:
        if f in fields:
            guard = guard & c[f].rlike(_SAFE)
    for f in ("display",):
        if f in fields:
            guard = guard & c[f].rlike(_SAFE_TEXT)
    for f in ("observation_id", "patient_id", "code", "effective"):
        guard = guard & (c[f] != "")
    guard = (guard & kind.isNotNull() & moment_guard & ((c["flag"] == "") | flag_display.isNotNull())
             & (F.col("hospital") == F.lit(hospital))
             & ((value == "") | number | (~value.rlike(_NUMBER) & value.rlike(_SAFE_TEXT)))
             & ~((kind == "loinc") & c["code"].isin(*sorted(loinc_sources or {""})))
             & ~((kind == "local") & c["code"].isin(*sorted((unsafe_targets | same_target) or {""}))))

    L = F.lit
    coding = F.concat(L('{"code":"'), c["code"], L('",'),
                      F.when(c["display"] != "", F.concat(L('"display":"'), c["display"], L('",'))).otherwise(empty),
                      L('"system":"'), system, L('"}'))
    codings = F.when((kind == "local") & target.isNotNull(), F.concat(coding, L(","), target)).otherwise(coding)
    vital = (kind == "loinc") & c["code"].isin(*sorted(_VITAL_SIGNS))
    if targets:
        vital_targets = sorted(code for code, text in targets.items() if any(
            concept.system == LOINC and concept.code in _VITAL_SIGNS
            for (s, src), concept in terminology.entries.items() if s == local and src == code))
        vital = vital | ((kind == "local") & c["code"].isin(*(vital_targets or [""])))
    category = F.when(vital, L("vital-signs")).otherwise(L("laboratory"))
    patient = F.col("_patient")
    value_part = (F.when(value == "", empty)
                  .when(number & (c["unit"] != ""),
                        F.concat(L(',"valueQuantity":{"code":"'), c["unit"], L(f'","system":"{UCUM}","unit":"'), c["unit"],
                                 L('","value":'), value, L("}")))
                  .when(number, F.concat(L(',"valueQuantity":{"value":'), value, L("}")))
                  .otherwise(F.concat(L(',"valueString":"'), value, L('"'))))
    resource = F.concat(
        L('{"category":[{"coding":[{"code":"'), category, L(f'","system":"{_CATEGORY}"}}]}}],"code":{{"coding":['),
        codings, L(']},"effectiveDateTime":"'), effective, L('",'),
        F.when(c["encounter_id"] != "", F.concat(L('"encounter":{"reference":"Encounter/'),
                                                 F.col("_encounter"), L('"},'))).otherwise(empty),
        L('"id":"'), F.col("_id"), L('",'),
        F.when(c["flag"] != "", F.concat(L('"interpretation":[{"coding":[{"code":"'), flag, L('","display":"'), flag_display,
                                         L(f'","system":"{_INTERPRETATION}"}}]}}],'))).otherwise(empty),
        L('"resourceType":"Observation","status":"final","subject":{"reference":"Patient/'), patient, L('"}'),
        value_part, L("}"))
    unmapped = F.when((kind == "local") & target.isNull(),
                      F.concat(L(f'[["{local}","'), c["code"], L('"]]'))).otherwise(F.lit(None).cast("string"))
    mapped = rows.select("record_id", F.coalesce(guard, F.lit(False)).alias("eligible"), resource.alias("resource"),
                         F.col("_id").alias("id"), patient.alias("patient_id"),
                         unmapped.alias("unmapped"))
    return mapped


#: the map step's columns that an engine row gives, in `NORMALIZED_COLUMNS`' names
_COMPARED = ("resource", "id", "patient_id", "unmapped")


def planned_feeds(bronze, mapping, stage=lambda df, name: df) -> dict:
    """{hospital: a function that gives its CSV observation rows planned by `plan_observations`} for every
    hospital with a CSV feed in bronze whose layout is planned (`mapping`: `transforms.normalize.Mapping`;
    `stage(df, name)`: see `plan_observations`; its names here start with the hospital's)."""
    csv = bronze.filter(F.col("feed") == "csv")
    plans = {}
    for (hospital,) in sorted(csv.select("hospital").distinct().collect()):
        layout = mapping.csv_mappings.get(f"{hospital}/csv") or mapping.csv_mappings.get(hospital) or {}

        def plan(hospital=hospital, layout=layout):
            return plan_observations(csv.filter(F.col("hospital") == hospital), hospital=hospital, layout=layout,
                                     terminology=mapping.terminology,
                                     stage=lambda df, name: stage(df, f"{hospital.replace('-', '_')}_{name}"))

        if planned_spec(layout) is not None:
            plans[hospital] = plan
    return plans


def bronze_rows(bronze, ids) -> list[dict]:
    """The bronze rows (as dicts) of the record ids in DataFrame `ids`."""
    return [r.asDict() for r in bronze.join(ids.select("record_id"), "record_id", "left_semi").collect()]


def compare(plan, bronze, mapping) -> dict:
    """One plan against the Python mapper: `rows` (observation rows), `eligible` (taken by the guard),
    `same` (of those, the Python mapper normalized the record to one row with the same `_COMPARED`
    values) and `different` (record ids of the others: any is a bug of the plan)."""
    from transforms.normalize import normalize_record

    taken = {r["record_id"]: tuple(r[c] for c in _COMPARED) for r in plan.filter("eligible").collect()}
    rows = plan.count()
    python = {row["record_id"]: list(normalize_record(row, mapping)) for row in bronze_rows(bronze, plan.filter("eligible"))}
    different = []
    for record_id, engine in taken.items():
        out = python.get(record_id, [])
        if not (len(out) == 1 and out[0]["outcome"] == "normalized" and out[0]["resource_type"] == "Observation"
                and tuple(out[0][c] for c in _COMPARED) == engine):
            different.append(record_id)
    return {"rows": rows, "eligible": len(taken), "same": len(taken) - len(different), "different": sorted(different)}


def staged(spark, lake):
    """A `stage` for `planned_feeds`: each DataFrame written to a staging table of the lake."""
    return lambda df, name: lake.materialize(spark, df, f"staging.csv_engine_{name}")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # Sail runs inside this process
    return usage.ru_utime + usage.ru_stime


def time_plan(spark, lake, plan, bronze, mapping) -> dict:
    """CPU seconds of `plan()` (which stages the cells) and its eligible rows written to a staging Delta
    table, against the Python map of the same bronze rows (collected first, not timed)."""
    from transforms.normalize import normalize_record_tuples

    start = _cpu()
    written = lake.materialize(spark, plan().filter("eligible").select("record_id", *_COMPARED), "staging.csv_engine_probe").count()
    engine = _cpu() - start
    rows = bronze_rows(bronze, lake.read(spark, "staging.csv_engine_probe"))
    start = time.process_time()
    for row in rows:
        normalize_record_tuples(row, mapping)
    python = time.process_time() - start
    per_row = lambda seconds: round(seconds / max(written, 1) * 1e6, 1)  # noqa: E731
    return {"rows": written, "engine_cpu_s": round(engine, 2), "engine_us_per_row": per_row(engine),
            "python_cpu_s": round(python, 2), "python_us_per_row": per_row(python)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.csv_engine_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per hospital (0: parity only)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N bronze records (by record_id)")
    args = parser.parse_args(argv)

    from carelake.config import load_config
    from carelake.engine import get_spark
    from carelake.lake import Lake
    from carelake.normalize import mapping_for

    config = load_config(args.workdir / "conf")
    lake, spark = Lake.from_config(config, args.workdir), get_spark()
    if not lake.exists("bronze.records"):
        print(f"{args.workdir}: no bronze.records to read", file=sys.stderr)
        return 2
    mapping = mapping_for(config)
    bronze = lake.read(spark, "bronze.records")
    failed = False
    if args.limit:
        bronze = bronze.orderBy("record_id").limit(args.limit)
    for hospital, plan in planned_feeds(bronze, mapping, staged(spark, lake)).items():
        result = compare(plan(), bronze, mapping)
        failed |= bool(result["different"])
        print(f"{hospital}: {result['rows']} observation rows, {result['eligible']} taken by the guard, "
              f"{result['same']} the same as Python's" + (f", DIFFERENT: {result['different'][:5]}" if result["different"] else ""),
              flush=True)
        for _ in range(args.rounds):
            print(f"  {time_plan(spark, lake, plan, bronze, mapping)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
