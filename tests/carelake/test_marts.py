"""Every regional mart of a demo run: published, small cells suppressed, documented."""

from deltalake import DeltaTable

from carelake.config import load_config
from carelake.lake import Lake
from carelake.marts import MARTS

COUNT_TYPES = ("int64", "int32")


def test_every_mart_is_published_with_some_rows_and_no_count_between_1_and_10(demo_run):
    workdir, summary = demo_run
    lake = Lake.from_config(load_config(workdir / "conf"), workdir)
    assert set(summary.results["marts"]["marts"]) == set(MARTS)
    for name, mart in MARTS.items():
        table = DeltaTable(str(lake.path(f"marts.{name}"))).to_pyarrow_table()
        assert table.column_names == list(mart.columns), name
        rows = table.to_pylist()
        assert any(not r["suppressed"] for r in rows), f"marts.{name} publishes nothing at demo scale"
        counts = [f.name for f in table.schema if str(f.type) in COUNT_TYPES]
        assert counts, name
        for row in rows:
            for column in counts:
                assert row[column] is None or row[column] == 0 or row[column] >= 11, (name, column)
            if row["suppressed"]:
                assert all(row[c] is None for c in counts), name
