"""transforms._compiled: the mappers compiled with mypyc are served only while they match their sources,
and they split and map every record as the sources do (same rows, same quarantine reasons)."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import EXTDATA
from transforms import _compiled

ROOT = Path(__file__).resolve().parents[2]
BUILT = (_compiled.BUILD_DIR / "manifest.json").is_file() and os.environ.get("CARELAKE_COMPILED", "1") != "0"
needs_build = pytest.mark.skipif(not BUILT, reason="no compiled mappers: bin/setup builds them (not with CARELAKE_COMPILE=0)")

# Run in a process of its own, from the sources (CARELAKE_COMPILED=0), and in this one, compiled.
_SPLIT_AND_MAP = """
import pickle, sys
from pathlib import Path
from carelake.config import load_config
from carelake.ingest import landing_files
from carelake.normalize import mapping_for
from transforms.ingest import split_file
from transforms.normalize import normalize_record_tuples

def split_and_map(conf, extra):
    config = load_config(conf)
    files = landing_files(config.feeds, Path(conf).parent / "landing", config.csv_mappings)
    records = [record for row in sorted(files, key=lambda r: r["source"]) for record in split_file(row)]
    mapping = mapping_for(config)
    return records, [list(normalize_record_tuples(r, mapping)) for r in records + extra]

if __name__ == "__main__":
    conf, extra, out = sys.argv[1:]
    with open(extra, "rb") as f:
        extra = pickle.load(f)
    with open(out, "wb") as f:
        pickle.dump(split_and_map(conf, extra), f)
"""


@needs_build
def test_the_built_modules_are_the_ones_imported():
    assert _compiled.status == "compiled", f"mappers: {_compiled.status}"  # after an edit: bin/setup compiles again
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in _compiled.MODULES:
        __import__(name)
        assert sys.modules[name].__file__.endswith(suffix), name


def _manifest(target: Path, **changes) -> None:
    manifest = {"abi": _compiled._abi(), "sources": _compiled._digests(), "files": {m: "x.so" for m in _compiled.MODULES}}
    manifest.update(changes)
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_a_build_that_does_not_match_the_sources_is_not_served(tmp_path, monkeypatch):
    monkeypatch.setattr(_compiled, "BUILD_DIR", tmp_path / "built")
    assert _compiled._install().startswith("source (nothing built")
    sources = _compiled._digests()
    sources["transforms.csv_feed"] = "0" * 64  # csv_feed.py edited since the build
    _manifest(tmp_path / "built", sources=sources)
    assert _compiled._install() == "source (sources changed since the build: run bin/setup)"
    _manifest(tmp_path / "built", abi="cpython-312 .cpython-312-x86_64-linux-gnu.so")
    assert _compiled._install() == "source (built for another Python: run bin/setup)"
    _manifest(tmp_path / "built")  # matches, but its files are missing
    assert _compiled._install().startswith("source (incomplete build")
    monkeypatch.setenv("CARELAKE_COMPILED", "0")
    assert _compiled._install() == "source (CARELAKE_COMPILED=0)"
    assert not any(isinstance(f, _compiled._Finder) for f in sys.meta_path[1:])  # none of these added a finder


def _edited(rng: random.Random, text: str) -> str:
    at = rng.randrange(max(1, len(text)))
    edit = rng.choice(("drop", "double", "|", "^", "~", "\\", ",", '"', "9", "x", "-", ":", "+", " ", "", "cut"))
    if edit == "drop":
        return text[:at] + text[at + 1:]
    if edit == "double":
        return text[:at + 1] + text[at:]
    if edit == "cut":
        return text[:at]
    return text[:at] + edit + text[at + 1:]


def _mutants(records: list[dict], count: int) -> list[dict]:
    """Records with one edit each (a character dropped, doubled or replaced by a delimiter, a digit or a
    letter, or the text cut short): the mappers' error paths, where a compiled type check would show.
    HL7 v2 and FHIR records are edited as delivered; a CSV record in one cell (its bronze payload is
    JSON that ingest wrote, not the hospital)."""
    rng = random.Random(20261207)
    out = []
    for n in range(count):
        record = rng.choice(records)
        text = record["payload"] or ""
        if record["feed"] == "csv":
            delivered = json.loads(text)
            cells = delivered["row"]
            column = rng.choice(sorted(cells))
            if isinstance(cells[column], str):
                cells[column] = _edited(rng, cells[column])
            text = json.dumps(delivered)
        else:
            text = _edited(rng, text)
        out.append({**record, "record_id": f"mutant-{n}", "payload": text})
    return out


def _extdata_messages() -> list[dict]:
    """Every public HL7 v2 message of ../shared/extdata as a bronze record, nHapi's fuzzed bad inputs
    included (none where the data is absent)."""
    from transforms.hl7v2 import split_file_messages

    out = []
    for path in sorted((EXTDATA / "hl7v2").rglob("*")) if (EXTDATA / "hl7v2").is_dir() else []:
        if path.is_file():  # .hl7, .txt, and nHapi's fuzzed inputs, which have no suffix
            with open(path, "rb") as handle:
                try:
                    messages = list(split_file_messages(handle))
                except Exception:  # not a file of messages: the split's own tests cover those
                    continue
            out += [{"record_id": f"ext-{len(out) + i}", "hospital": "hosp-a", "feed": "hl7v2", "format": "hl7v2",
                     "source": path.name, "position": i, "received_at": "2026-01-01T00:00:00Z", "payload": m}
                    for i, m in enumerate(messages)]
    return out


@needs_build
def test_compiled_mappers_split_and_map_as_their_sources(tmp_path):
    from carelake.demo import prepare_demo

    conf = prepare_demo(tmp_path / "demo", hospitals=3, patients=60, seed=11)
    namespace: dict = {}
    exec(compile(_SPLIT_AND_MAP, "split_and_map", "exec"), namespace)
    records, _ = namespace["split_and_map"](conf, [])
    extra = _mutants(records, 3000) + _extdata_messages()
    (tmp_path / "extra.pkl").write_bytes(pickle.dumps(extra))
    env = {**os.environ, "CARELAKE_COMPILED": "0"}
    done = subprocess.run([sys.executable, "-c", _SPLIT_AND_MAP, str(conf), str(tmp_path / "extra.pkl"), str(tmp_path / "out.pkl")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    source_records, source_rows = pickle.loads((tmp_path / "out.pkl").read_bytes())
    compiled_records, compiled_rows = namespace["split_and_map"](conf, extra)

    assert compiled_records == source_records
    assert len(compiled_rows) == len(source_rows) == len(records) + len(extra) > 3000
    for record, compiled, source in zip(records + extra, compiled_rows, source_rows):
        assert compiled == source, (record["record_id"], record["feed"])
    outcomes = {row[6] for rows in compiled_rows for row in rows}
    reasons = {row[7] for rows in compiled_rows for row in rows if row[6] == "quarantined"}
    assert outcomes == {"normalized", "quarantined"} and "MAPPING_BUG" not in reasons, reasons


def test_a_run_warns_when_a_build_is_not_used(tmp_path, monkeypatch, caplog):
    import logging

    from carelake.pipeline import _say_how_mappers_run

    monkeypatch.setattr(logging.getLogger("carelake"), "propagate", True)  # a bench run in this process turns it off
    monkeypatch.setattr(_compiled, "BUILD_DIR", tmp_path)
    _manifest(tmp_path)
    monkeypatch.setattr(_compiled, "status", "source (sources changed since the build: run bin/setup)")
    with caplog.at_level("INFO", logger="carelake"):
        _say_how_mappers_run()
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "run bin/setup" in caplog.text
    caplog.clear()
    monkeypatch.setenv("CARELAKE_COMPILED", "0")  # asked for: no warning
    monkeypatch.setattr(_compiled, "status", "source (CARELAKE_COMPILED=0)")
    with caplog.at_level("INFO", logger="carelake"):
        _say_how_mappers_run()
    assert [r.levelname for r in caplog.records] == ["INFO"]
