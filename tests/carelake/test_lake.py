import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from carelake.errors import ConfigError
from carelake.lake import Lake
from tests.conftest import run_in_small_pool

ZONES = {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"}


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path, dict(ZONES))


def test_layers_map_to_zones(lake, tmp_path):
    assert lake.path("silver.patient") == tmp_path / "phi" / "silver" / "patient"
    assert lake.path("gold.patient") == tmp_path / "curated" / "gold" / "patient"
    assert lake.path("phi.quarantine") == tmp_path / "phi" / "quarantine"
    assert lake.zone_of("marts.x") == "curated"
    with pytest.raises(ValueError, match="must be <layer>.<name>"):
        lake.path("platinum.x")


def test_curated_table_cannot_land_in_phi_zone(tmp_path):
    nested = Lake(tmp_path, {**ZONES, "curated": "phi/curated"})
    with pytest.raises(ConfigError, match="inside the phi zone"):
        nested.path("gold.patient")


def test_merge_is_idempotent_and_rewrites_only_changes(spark, lake):
    first = spark.createDataFrame([("a", "1"), ("b", "2")], "id string, v string")
    lake.merge(spark, first, "silver.t", keys=["id"])
    lake.merge(spark, first, "silver.t", keys=["id"])
    assert sorted(tuple(r) for r in lake.read(spark, "silver.t").collect()) == [("a", "1"), ("b", "2")]
    lake.merge(spark, spark.createDataFrame([("b", "3"), ("c", "4")], "id string, v string"), "silver.t", keys=["id"])
    assert sorted(tuple(r) for r in lake.read(spark, "silver.t").collect()) == [("a", "1"), ("b", "3"), ("c", "4")]
    # time travel: the first version is still there
    assert lake.read(spark, "silver.t", version=0).count() == 2


def test_merge_delete_and_insert_conditions(spark, lake):
    lake.merge(spark, spark.createDataFrame([("a", "bad")], "id string, code string"), "phi.q", keys=["id"])
    source = spark.createDataFrame([("a", None), ("b", "bad"), ("c", None)], "id string, code string")
    lake.merge(spark, source, "phi.q", keys=["id"], delete_when="s.code IS NULL", insert_when="s.code IS NOT NULL")
    assert [tuple(r) for r in lake.read(spark, "phi.q").collect()] == [("b", "bad")]


def test_a_large_merge_source_is_merged_in_pieces_with_the_same_result(spark, tmp_path):
    from carelake.lake import Limits

    target = [(f"k{i}", "old", None) for i in range(0, 40, 2)]  # even keys exist
    source = [(f"k{i}", "new" if i % 4 else "old", None if i % 3 else "drop") for i in range(30)]
    schema = "id string, v string, code string"
    tables = {}
    for batch in (1000, 4):  # one MERGE, then pieces of about 4 rows
        lake = Lake(tmp_path / str(batch), dict(ZONES), limits=Limits(merge_batch_rows=batch))
        lake.overwrite(spark.createDataFrame(target, schema), "phi.t")
        lake.merge(spark, spark.createDataFrame(source, schema), "phi.t", keys=["id"], delete_when="s.code IS NOT NULL")
        tables[batch] = sorted(tuple(r) for r in lake.read(spark, "phi.t").collect())
        commits = DeltaTable(str(lake.path("phi.t"))).version()  # after the first write: one per MERGE that changed rows
        assert commits == 1 if batch == 1000 else commits >= 4, commits  # 8 pieces; one may hold no change
        assert not list((tmp_path / str(batch)).rglob("merge_source_*"))  # the staged source is removed
    assert tables[4] == tables[1000]
    assert ("k1", "new", None) in tables[4] and not any(r[0] == "k0" for r in tables[4])  # inserted; deleted
    assert ("k2", "new", None) in tables[4] and ("k38", "old", None) in tables[4]  # updated; untouched


def test_a_merge_with_an_insert_condition_into_a_small_table_reads_only_the_rows_that_can_change_it(spark, tmp_path, monkeypatch):
    """normalize merges every record's outcome into phi.quarantine: rows that are not quarantined and
    not in quarantine can change nothing, and are left out before the source is cut into pieces. One
    MERGE (one commit) with pieces of 4 rows, and the table a MERGE of the whole source gives."""
    from carelake.lake import Limits

    target = [("r1", "bad"), ("r2", "bad")]
    source = [(f"r{i}", "bad" if i in (2, 7) else None) for i in range(1, 40)]  # r1 recovered, r7 new: 3 rows matter
    schema = "record_id string, code string"
    tables = {}
    for reduce in (True, False):
        if not reduce:
            monkeypatch.setattr(Lake, "_relevant", lambda self, spark, df, table, **kw: df)
        lake = Lake(tmp_path / str(reduce), dict(ZONES), limits=Limits(merge_batch_rows=4))
        lake.overwrite(spark.createDataFrame(target, schema), "phi.q")
        lake.merge(spark, spark.createDataFrame(source, schema), "phi.q", keys=["record_id"],
                   delete_when="s.code IS NULL", insert_when="s.code IS NOT NULL")
        tables[reduce] = sorted(tuple(r) for r in lake.read(spark, "phi.q").collect())
        commits = DeltaTable(str(lake.path("phi.q"))).version()
        assert commits == 1 if reduce else commits > 1, (reduce, commits)
    assert tables[True] == tables[False] == [("r2", "bad"), ("r7", "bad")]


def test_a_merge_source_near_the_table_size_is_written_as_the_new_version_with_the_merges_result(spark, tmp_path):
    """A re-map sends every row again: several pieces and at least a quarter of the table, so the rows
    are written in one commit instead of merged piece by piece: with `update` as the table's new version,
    without it by appending the rows of new keys. Same rows as one MERGE, on a partitioned table."""
    from carelake.lake import Limits

    target = [(f"k{i}", "old", f"h{i % 2}") for i in range(40)]
    source = [(f"k{i}", "new" if i % 4 else "old", f"h{i % 2}") for i in range(2, 42)]  # k0, k1 left alone; k40, k41 new
    schema = "id string, v string, hospital string"
    for update in (True, False):
        tables = {}
        for batch in (1000, 4):  # one MERGE; then 10 pieces, of which 2 rows are picked by key: a rewrite
            lake = Lake(tmp_path / f"{update}-{batch}", dict(ZONES), limits=Limits(merge_batch_rows=batch))
            lake.overwrite(spark.createDataFrame(target, schema), "silver.t", partition_by=["hospital"])
            lake.merge(spark, spark.createDataFrame(source, schema), "silver.t", keys=["id"], partition_by=["hospital"], update=update)
            tables[batch] = sorted(tuple(r) for r in lake.read(spark, "silver.t").collect())
            assert DeltaTable(str(lake.path("silver.t"))).version() == 1  # one commit either way
            assert not list((tmp_path / f"{update}-{batch}").rglob("merge_source_*"))  # staged keys removed too
        assert tables[4] == tables[1000], update
        assert len(tables[4]) == 42 and ("k0", "old", "h0") in tables[4] and ("k41", "new", "h1") in tables[4]
        assert (("k5", "new", "h1") in tables[4]) is update and (("k5", "old", "h1") in tables[4]) is not update


def test_a_large_source_that_changes_few_rows_writes_only_those(spark, tmp_path):
    """A re-map whose mappers give the same resources sends every row again and changes nothing: no
    commit at all. When it changes a few rows, only those go into one MERGE; a value that moves to
    another column beside a null is a change (a row hash that skipped nulls would miss it)."""
    from carelake.lake import Limits

    schema = "id string, v string, w string"
    target = [(f"k{i}", "x" if i % 3 else None, None if i % 3 else "x") for i in range(40)]
    lake = Lake(tmp_path, dict(ZONES), limits=Limits(merge_batch_rows=4))  # 10 pieces: a rewrite
    lake.overwrite(spark.createDataFrame(target, schema), "silver.t")
    lake.merge(spark, spark.createDataFrame(target, schema), "silver.t", keys=["id"])
    assert DeltaTable(str(lake.path("silver.t"))).version() == 0  # the same rows again: nothing written

    source = [*[r for r in target if r[0] not in ("k3", "k7")], ("k3", "y", "x"), ("k7", None, "x"), ("k40", "z", None)]
    lake.merge(spark, spark.createDataFrame(source, schema), "silver.t", keys=["id"])
    assert DeltaTable(str(lake.path("silver.t"))).version() == 1
    assert sorted(tuple(r) for r in lake.read(spark, "silver.t").collect()) == sorted(source)
    assert not list(tmp_path.rglob("merge_source_*"))


def test_a_merge_source_that_leaves_many_table_rows_alone_is_merged_in_pieces(spark, tmp_path):
    """A rewrite picks the rows it carries over by a join on their keys: more than `merge_batch_rows`
    such keys would make that join's hash table large, so the source goes in pieces."""
    from carelake.lake import Limits

    lake = Lake(tmp_path, dict(ZONES), limits=Limits(merge_batch_rows=4))
    lake.overwrite(spark.createDataFrame([(f"k{i}", "old") for i in range(40)], "id string, v string"), "silver.t")
    lake.merge(spark, spark.createDataFrame([(f"k{i}", "new") for i in range(20)], "id string, v string"), "silver.t", keys=["id"])
    assert DeltaTable(str(lake.path("silver.t"))).version() >= 3  # 20 rows leave 20 alone: pieces, a commit each
    rows = dict(tuple(r) for r in lake.read(spark, "silver.t").collect())
    assert len(rows) == 40 and rows["k19"] == "new" and rows["k20"] == "old"


_REWRITE_WIDE = """
import sys
from pyspark.sql import functions as F
from pathlib import Path
from carelake.engine import get_spark
from carelake.lake import Lake, Limits

spark = get_spark()
zones = {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"}
lake = Lake(Path(sys.argv[1]), zones, Limits(merge_batch_rows=50_000))
n = int(sys.argv[2])
rows = spark.range(n).select(F.concat(F.lit("o"), F.col("id").cast("string")).alias("id"),
                             F.concat(F.col("id").cast("string"), F.repeat(F.lit("x"), 4000)).alias("resource"))
lake.overwrite(rows.withColumn("v", F.lit("old")), "silver.wide")
lake.merge(spark, rows.withColumn("v", F.lit("new")), "silver.wide", keys=["id"])
table = lake.read(spark, "silver.wide")
print(table.count(), table.filter("v = 'new'").count())
"""


def test_a_rewrite_of_wide_rows_stays_within_a_small_engine_pool(tmp_path):
    """A re-map's rewrite of 150,000 rows of 4 kB (600 MB) with a 64 MiB pool: only keys are sorted."""
    done = run_in_small_pool(_REWRITE_WIDE, str(tmp_path / "lake"), "150000", pool_mb=64, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    assert done.stdout.split() == ["150000", "150000"]


def test_a_small_merge_source_into_a_large_table_is_still_merged_in_pieces(spark, tmp_path):
    from carelake.lake import Limits

    lake = Lake(tmp_path, dict(ZONES), limits=Limits(merge_batch_rows=4))
    lake.overwrite(spark.createDataFrame([(f"k{i}", "old") for i in range(100)], "id string, v string"), "silver.t")
    lake.merge(spark, spark.createDataFrame([(f"k{i}", "new") for i in range(0, 200, 10)], "id string, v string"), "silver.t", keys=["id"])
    assert DeltaTable(str(lake.path("silver.t"))).version() >= 3  # 20 rows into 100: pieces, a commit each
    rows = dict(tuple(r) for r in lake.read(spark, "silver.t").collect())
    assert len(rows) == 110 and rows["k10"] == "new" and rows["k150"] == "new" and rows["k11"] == "old"


def test_written_files_stay_near_the_target_size(spark, tmp_path):
    """The engine buffers a whole data file while writing it: `target_file_bytes` bounds that buffer."""
    from pyspark.sql import functions as F

    from carelake.lake import Limits

    rows = spark.range(40_000).select(F.col("id"), F.repeat(F.sha2(F.col("id").cast("string"), 256), 4).alias("text"))
    files = {}
    for target in (Limits().target_file_bytes, 256 * 1024):
        lake = Lake(tmp_path / str(target), dict(ZONES), limits=Limits(target_file_bytes=target))
        lake.overwrite(rows, "silver.written")
        lake.merge(spark, rows, "silver.created", keys=["id"])  # a MERGE into a new table creates it
        for table in ("silver.written", "silver.created"):
            assert lake.read(spark, table).count() == 40_000
            files[target, table] = len(DeltaTable(str(lake.path(table))).file_uris())
    for table in ("silver.written", "silver.created"):
        # about 10 MB of text: one or two files by default, several at 256 KiB
        assert files[256 * 1024, table] >= 4 * files[Limits().target_file_bytes, table], files


def test_overwrite_partition_only(spark, lake):
    df = spark.createDataFrame([("x", 1), ("y", 2)], "p string, n int")
    lake.overwrite(df, "gold.t", partition_by=["p"])
    lake.overwrite(spark.createDataFrame([("x", 9)], "p string, n int"), "gold.t", partition_by=["p"], replace_where="p = 'x'")
    assert sorted((r.p, r.n) for r in lake.read(spark, "gold.t").collect()) == [("x", 9), ("y", 2)]


def test_materialize_evaluates_the_frame_once_and_reads_the_table(spark, lake):
    """What reads the result reads the written table, not the frame's plan run again over its inputs."""
    lake.overwrite(spark.createDataFrame([(1,), (2,)], "n int"), "silver.source")
    staged = lake.materialize(spark, lake.read(spark, "silver.source").filter("n > 1"), "staging.picked")
    lake.overwrite(spark.createDataFrame([(7,), (8,)], "n int"), "silver.source")
    assert [r.n for r in staged.collect()] == [2] == [r.n for r in lake.read(spark, "staging.picked").collect()]


def test_tables_lists_zone_path_and_rows(spark, lake):
    lake.overwrite(spark.createDataFrame([(1,), (2,), (3,)], "n int"), "gold.three")
    lake.overwrite(spark.createDataFrame([(1,)], "n int"), "silver.one")
    lake.overwrite(spark.createDataFrame([(1,)], "n int"), "staging.hidden")
    found = {t.name: t for t in lake.tables()}
    assert set(found) == {"gold.three", "silver.one"}
    assert (found["gold.three"].zone, found["gold.three"].rows) == ("curated", 3)
    assert DeltaTable(found["silver.one"].path).to_pyarrow_table().num_rows == found["silver.one"].rows == 1


def test_staging_is_private_to_a_run_and_removed_with_it(spark, lake, tmp_path):
    one, two = lake.for_run("run:1"), lake.for_run("run:1")  # two tasks of one Airflow run
    assert one.path("staging.normalized") != two.path("staging.normalized")
    assert one.path("staging.normalized").parent.parent == tmp_path / "phi" / "_staging"
    assert one.path("silver.patient") == lake.path("silver.patient")
    one.overwrite(spark.createDataFrame([(1,)], "n int"), "staging.normalized")
    two.overwrite(spark.createDataFrame([(2,)], "n int"), "staging.normalized")
    assert [r.n for r in one.read(spark, "staging.normalized").collect()] == [1]
    one.drop_staging()
    assert not one.path("staging.normalized").exists() and two.path("staging.normalized").exists()
    assert lake.for_run("later").sweep_staging() == []  # young: another run may still use it
    assert lake.for_run("later").sweep_staging(now=time.time() + 25 * 3600) == [two.scope]


def test_first_write_never_replaces_a_table_another_run_created(spark, lake):
    lake.merge(spark, spark.createDataFrame([("a", "1")], "id string, v string"), "silver.race", keys=["id"])
    stale = Lake(lake.workdir, lake.zones)
    # a writer that saw no table (the race) must MERGE, not overwrite: "a" survives
    stale_exists = Lake.exists
    try:
        Lake.exists = lambda self, table: False
        stale.merge(spark, spark.createDataFrame([("b", "2")], "id string, v string"), "silver.race", keys=["id"])
    finally:
        Lake.exists = stale_exists
    assert sorted(tuple(r) for r in lake.read(spark, "silver.race").collect()) == [("a", "1"), ("b", "2")]


def test_writes_are_recorded_with_their_versions(spark, lake):
    lake.overwrite(spark.createDataFrame([(1,)], "n int"), "gold.v")
    lake.overwrite(spark.createDataFrame([(2,)], "n int"), "gold.v")
    assert lake.writes[-2:] == [("gold.v", 0), ("gold.v", 1)]


def test_zone_roots_may_be_absolute_or_file_uris(tmp_path):
    lake = Lake(tmp_path / "work", {"phi": f"file://{tmp_path}/p", "curated": str(tmp_path / "c"), "landing": "l", "reports": "r"})
    assert lake.path("silver.x") == tmp_path / "p" / "silver" / "x"
    assert lake.path("gold.x") == tmp_path / "c" / "gold" / "x"
    assert lake.landing == tmp_path / "work" / "l"
