import shutil
from pathlib import Path

from bench.stages import mark_stale
from carelake.config import load_config
from carelake.lake import Lake

ROOT = Path(__file__).resolve().parents[2]


def test_mark_stale_gives_every_record_a_mapping_no_code_produces(spark, tmp_path):
    """`bench.stages --remap`: the next normalize then maps every record again, as after a change of
    mapper code; the rest of each record's outcome stays."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    lake = Lake.from_config(load_config(tmp_path / "conf"), tmp_path)
    rows = [("r1", "h1", "csv", "normalized", "0123456789abcdef"), ("r2", "h2", "hl7v2", "quarantined", "0123456789abcdef")]
    schema = "record_id string, hospital string, feed string, outcome string, mapping string"
    lake.overwrite(spark.createDataFrame(rows, schema), "phi.record_status", partition_by=["hospital"])
    assert mark_stale(tmp_path) == 2
    columns = [c.split()[0] for c in schema.split(", ")]
    after = sorted(tuple(r) for r in lake.read(spark, "phi.record_status").select(*columns).collect())
    assert after == [(*r[:4], "stale") for r in rows]
