"""The engine CSV mapper prototype (`bench.csv_engine_probe`): every row its guard takes gives the Python
mapper's row byte for byte; rows it cannot be sure of are left to Python."""

import json

import pytest
from pyspark.sql import functions as F

from bench.csv_engine_probe import _COMPARED, compare, plan_observations, planned_feeds, staged
from carelake.normalize import mapping_for
from transforms.normalize import normalize_record

# (hospital, field, cell): cells the Python mapper takes differently from their text, or rejects, or
# that sit at the edge of what the guard allows. hosp-a: ISO date-times with offsets (layout his-a);
# hosp-b: local times in Europe/Berlin (his-b); hosp-c: compact date-times with offsets (his-c).
VALUES = ["7.25", "abc", "", "+5", "007", "-0", "-0.0", "1.50", "1e3", "1E-3", "0.0001", "0.00001", "3.", ".5",
          "12345678901234567", "123456789012345678", "1234567890123456789", "1.234567890123456", "0.000123",
          "< 5", "5 mg", "Inf", "nan", "12,5", "a\tb", "x  y", 'say "hi"', "back\\slash", "café", " 42 "]
EFFECTIVE = {
    "hosp-a": ["2021-02-19T14:09:00+01:00", "2020-02-29T10:00:00+01:00", "2021-02-29T10:00:00+01:00",
               "2021-04-31T10:00:00+02:00", "2021-01-31T10:00:00+01:00", "2021-02-19T14:09:00-00:00",
               "2021-02-19T14:09:00Z", "2021-02-19T14:09:00+14:00", "2021-02-19T14:09:00+14:30",
               "2021-02-19T14:09:00-13:59", "2021-02-19T14:09:00+0100", "0000-02-19T14:09:00+01:00",
               "1899-02-19T14:09:00+01:00", "2021-02-19T24:09:00+01:00", "2021-02-19 14:09:00+01:00"],
    "hosp-b": ["07/10/2021 08:32", "29/02/2020 08:32", "29/02/2021 08:32", "31/04/2021 08:32", "31/12/2021 23:59",
               "29/03/2020 02:30", "28/03/2020 12:00", "30/03/2020 02:30", "25/10/2020 02:30", "26/10/2020 02:30",
               "01/01/1970 00:00", "01/07/2040 12:00", "7/10/2021 08:32", "07/10/2021 8:32", "07/10/2021 08:32:10"],
    "hosp-c": ["20190208092400+0100", "20200229092400+0100", "20190229092400+0100", "20190208092400-0000",
               "20190208092400+1400", "20190208092400+1401", "20190208092400-1359", "20190208092400Z",
               "20190208092400+01:00", "20191301092400+0100", "2019020809240+0100"],
}
CELLS = {
    "code": ["", "A B", "x\ty", 'q"q', "é", "2345-7", "GLU", "UNKNOWNCODE"],
    "code_system": ["", "loinc", "LOINC", "http://loinc.org", "L", "local", "xx"],
    "patient_id": ["", " P1 ", "P\\1", "P 1"],
    "encounter_id": ["", "V 1"],
    "flag": ["", "h", "HH", "ll", "X"],
    "unit": ["", "mg dL", "µmol/L", "%"],
}


def _bronze_row(spark, lake, hospital):
    rows = (lake.read(spark, "bronze.records")
            .filter((F.col("hospital") == hospital) & (F.col("format") == "csv:observations"))
            .orderBy("record_id").limit(1).collect())
    return rows[0].asDict()


def _mutants(base: dict, hospital: str) -> list[dict]:
    payload = json.loads(base["payload"])
    changes = [("value", v) for v in VALUES] + [("effective", e) for e in EFFECTIVE[hospital]]
    changes += [(field, cell) for field, cells in CELLS.items() for cell in cells]
    out = []
    for n, (field, cell) in enumerate(changes):
        row = dict(payload["row"], **{field: cell})
        out.append(dict(base, record_id=f"{base['record_id'][:16]}-{n}", payload=json.dumps({"entity": "observations", "row": row})))
    short = dict(payload["row"])
    short.pop("unit")  # a short row: the reader leaves its last cells out
    out.append(dict(base, record_id="short", payload=json.dumps({"entity": "observations", "row": short})))
    long = dict(payload["row"], __extra_cells__=["x"])
    out.append(dict(base, record_id="long", payload=json.dumps({"entity": "observations", "row": long})))
    return out


@pytest.mark.parametrize("hospital", ["hosp-a", "hosp-b", "hosp-c"])
def test_mutated_rows_the_guard_takes_give_the_python_mappers_row(demo_ctx, hospital):
    """Unstaged (one query): the same expressions as the staged plan, evaluated where they stand."""
    spark, lake = demo_ctx.spark, demo_ctx.lake
    mapping = mapping_for(demo_ctx.config)
    base = _bronze_row(spark, lake, hospital)
    mutants = _mutants(base, hospital)
    bronze = spark.createDataFrame(mutants, lake.read(spark, "bronze.records").schema)
    layout = mapping.csv_mappings.get(f"{hospital}/csv") or mapping.csv_mappings[hospital]
    plan = plan_observations(bronze, hospital=hospital, layout=layout, terminology=mapping.terminology)
    assert plan is not None, f"{hospital}'s layout is one the probe plans"
    engine = {r["record_id"]: r for r in plan.collect()}
    assert len(engine) == len(mutants)
    taken, differs = [], []
    for row in mutants:
        python = list(normalize_record(row, mapping))
        got = engine[row["record_id"]]
        same = (len(python) == 1 and python[0]["outcome"] == "normalized"
                and tuple(python[0][c] for c in _COMPARED) == tuple(got[c] for c in _COMPARED))
        if got["eligible"]:
            taken.append(json.loads(row["payload"])["row"])
            if not same:
                differs.append((json.loads(row["payload"])["row"], python[0]["reason"] or python[0]["resource"], got["resource"]))
    assert not differs, f"the guard took rows whose engine row is not Python's: {differs[:3]}"
    # the guard is not merely shut: plain rows and the usual variants go through the engine
    values = {r["value"] for r in taken}
    assert {"7.25", "abc", "", "0.0001"} <= values
    assert not {"+5", "007", "1.50", "1e3", "-0"} & values  # Python writes these numbers differently
    assert {r["flag"] for r in taken} >= {"", "h", "HH"} and "" in {r["encounter_id"] for r in taken}
    assert EFFECTIVE[hospital][0] in {r["effective"] for r in taken}
    assert not any("__extra_cells__" in r or "unit" not in r for r in taken)


def test_every_demo_observation_row_the_guard_takes_is_the_python_mappers(demo_ctx):
    spark, lake = demo_ctx.spark, demo_ctx.lake
    mapping = mapping_for(demo_ctx.config)
    bronze = lake.read(spark, "bronze.records")
    plans = planned_feeds(bronze, mapping, staged(spark, lake))  # as the probe measures it: staged in Delta
    assert sorted(plans) == ["hosp-a", "hosp-b", "hosp-c"]
    for hospital, plan in plans.items():
        result = compare(plan(), bronze, mapping)
        assert result["different"] == [], hospital
        assert result["rows"] > 1000 and result["eligible"] >= 0.95 * result["rows"], (hospital, result)
