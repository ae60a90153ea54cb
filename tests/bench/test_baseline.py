"""The naive baseline in pieces does the same work as in one pass (bench/baseline.py)."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from bench.baseline import BaselineChild, _by_bytes, run_baseline
from carelake.config import load_config
from carelake.demo import prepare_demo
from carelake.ingest import landing_files
from carelake.lake import Lake


@pytest.fixture(scope="module")
def region(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("CARELAKE_DEID_KEY", "test-key-0123456789abcdef-0123456789abcdef")
    return prepare_demo(tmp_path_factory.mktemp("baseline") / "run", hospitals=2, patients=15, seed=4)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _tables(out) -> dict[str, list]:
    found = {}
    for zone in ("silver", "gold"):
        for table in sorted((out / zone).iterdir()):
            data = DeltaTable(str(table)).to_pyarrow_table()
            found[f"{zone}.{table.name}"] = data.sort_by([(c, "ascending") for c in data.column_names]).to_pylist()
    return found


def test_pieces_give_what_one_pass_gives_and_pause_between_them(region, tmp_path):
    paused = []
    whole = run_baseline(region, tmp_path / "whole")
    pieces = run_baseline(region, tmp_path / "pieces", pieces=3, pause=paused.append)

    assert paused == [1, 2]
    assert whole["resources"] > 0 and whole["pieces"] == 1 and pieces["pieces"] == 3
    for figure in ("records", "resources", "gold_rows"):
        assert pieces[figure] == whole[figure], figure
    assert _tables(tmp_path / "pieces") == _tables(tmp_path / "whole")


def test_a_sample_is_cut_by_counts(region, tmp_path):
    result = run_baseline(region, tmp_path / "sample", limit=40, pieces=2)
    assert result["records"] == 40 and result["limited_to"] == 40


def test_files_are_cut_in_order_into_pieces_of_about_equal_bytes(region):
    config = load_config(region)
    files = landing_files(config.feeds, Lake.from_config(config, region.parent).landing, config.csv_mappings)
    groups = _by_bytes(files, 3)

    assert [f["source"] + str(f["entity"]) for g in groups for f in g] == [f["source"] + str(f["entity"]) for f in files]
    assert all(groups)


def test_the_child_pauses_on_its_protocol_and_ends_with_its_figures(region, tmp_path):
    child = BaselineChild(region, tmp_path / "child", pieces=2, limit=None, seed=7)
    assert child.run_piece() is None  # paused after the first piece
    done = child.run_piece()
    assert done["pieces"] == 2 and done["resources"] > 0 and done["peak_rss_mb"] > 0
    assert child.process.returncode == 0
