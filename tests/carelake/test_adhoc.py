"""Ad-hoc runs: --feed HOSPITAL=KIND:PATH, read in place, csv layout detected by header."""

from __future__ import annotations

import pytest

from carelake.adhoc import adhoc_config, detect_csv_mapping, parse_feed
from carelake.config import load_config
from carelake.errors import ConfigError
from tests.conftest import TEST_KEY, extdata


def test_detects_the_synthea_layout_by_header():
    folder = extdata("synthea", "jijones12-synthea-ma-11pt-paired", "csv")
    assert detect_csv_mapping(folder, load_config(None).csv_mappings) == "synthea"


def test_detects_demo_layouts(tmp_path):
    from carelake.synth import csv_mapping_for, generate

    region = generate(tmp_path / "landing", hospitals=3, patients=30, seed=3, postal_prefixes=["101"], truth_dir=tmp_path / "t")
    mappings = load_config(None).csv_mappings
    for hospital in region.hospitals:
        assert detect_csv_mapping(region.landing / hospital / "csv", mappings) == csv_mapping_for(hospital)


def test_feed_specs_are_checked(tmp_path):
    mappings = load_config(None).csv_mappings
    with pytest.raises(ConfigError, match="HOSPITAL=KIND:PATH"):
        parse_feed("h1=xml:/tmp", mappings)
    with pytest.raises(ConfigError, match="no such file or folder"):
        parse_feed(f"h1=hl7v2:{tmp_path}/nothing.hl7", mappings)
    feed = parse_feed(f"h1=fhir:{tmp_path}", mappings)
    assert feed.path == f"{tmp_path}/**/*.*json"
    assert parse_feed("h2=jdbc:his-a@MY_DB_URL", mappings).options == {"url_env": "MY_DB_URL"}


def test_adhoc_run_from_the_command_line(tmp_path, spark, monkeypatch):
    from click.testing import CliRunner

    from carelake.cli import cli

    root = extdata("synthea", "jijones12-synthea-ma-11pt-paired")
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    config = adhoc_config(None, [f"a=csv:{root / 'csv'}", f"b=fhir:{root / 'fhir' / 'Temika*.json'}"])
    assert [(h.id, h.feeds[0].kind, h.feeds[0].mapping) for h in config.hospitals] == [("a", "csv", "synthea"), ("b", "fhir", None)]
    result = CliRunner().invoke(cli, ["run", "--workdir", str(tmp_path / "home"), "--stage", "ingest",
                                      "--feed", f"b=fhir:{root / 'fhir' / 'Temika*.json'}"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "home" / "landing").exists()  # read in place: nothing copied into landing
    assert (tmp_path / "home" / "phi" / "bronze" / "records").exists()
