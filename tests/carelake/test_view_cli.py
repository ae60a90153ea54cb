import csv
import io
import json

from click.testing import CliRunner

from carelake.cli import cli
from tests.conftest import ROOT

BUNDLE = {"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-05-17"}},
    {"resource": {"resourceType": "Patient", "id": "p2", "gender": "male"}},
    {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": {}}},
]}
VIEW = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "gender", "path": "gender"}]}]}


def _files(tmp_path, view=VIEW):
    (tmp_path / "view.json").write_text(json.dumps(view))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bundle.json").write_text(json.dumps(BUNDLE))
    (tmp_path / "data" / "more.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p3"}) + "\n")
    return str(tmp_path / "view.json"), str(tmp_path / "data")


def test_json_rows_from_a_folder_of_bundles_and_ndjson(tmp_path):
    view, data = _files(tmp_path)
    out = CliRunner().invoke(cli, ["view", "run", "--view", view, "--resources", data])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [{"id": "p1", "gender": "female"}, {"id": "p2", "gender": "male"}, {"id": "p3", "gender": None}]


def test_csv_from_one_file(tmp_path):
    view, data = _files(tmp_path)
    out = CliRunner().invoke(cli, ["view", "run", "--view", view, "--resources", f"{data}/bundle.json", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert list(csv.reader(io.StringIO(out.output))) == [["id", "gender"], ["p1", "female"], ["p2", "male"]]


def test_invalid_view_exits_non_zero_and_says_why(tmp_path):
    bad = {**VIEW, "select": [{"column": [{"name": "id", "path": "gender.where("}]}]}
    view, data = _files(tmp_path, bad)
    out = CliRunner().invoke(cli, ["view", "run", "--view", view, "--resources", data])
    assert out.exit_code != 0
    assert "invalid ViewDefinition" in out.output
    (tmp_path / "broken.json").write_text("{not json")
    out = CliRunner().invoke(cli, ["view", "run", "--view", str(tmp_path / "broken.json"), "--resources", data])
    assert out.exit_code != 0 and "is not valid JSON" in out.output


def test_a_file_without_fhir_resources_is_refused_not_empty():
    out = CliRunner().invoke(cli, ["view", "run", "--view", str(ROOT / "conf" / "views" / "encounter.json"),
                                   "--resources", str(ROOT / "pyproject.toml")])
    assert out.exit_code != 0 and "not valid JSON" in out.output
