"""fhir-rest feed: search with paging and `_lastUpdated`, Bulk Data `$export`, auth, errors.

No real FHIR server can run here (no HAPI, no network): the server is a stand-in built on
`http.server` in a thread, speaking the parts of FHIR R4 search and Bulk Data export that carelake uses
(searchset Bundles with `next` links, `_lastUpdated=gt`, `$export` kick-off with `Prefer: respond-async`,
202 + `Retry-After` polling, a manifest with `requiresAccessToken`, NDJSON downloads) and checking the
bearer token. What it serves is real data where there is some: the resources of one Synthea patient
bundle (google-fhir-data-pipes-synthea-hiv-small) and official R4 examples, plus a few generated ones
(a local lab code, a resource that fails validation). The pulled records then go through the real
lake (Sail, Delta): ingest, normalize, validation, quarantine.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from carelake.config import Feed, load_config
from carelake.errors import ConfigError
from carelake.feeds.fhir_rest import DEFAULT_TYPES, FhirClient, FhirServerError, pull_into, redact_url, _retry_after
from carelake.lake import Lake
from carelake.pipeline import run_pipeline
from tests.carelake.test_linkage_synthea_paired import make_conf
from tests.conftest import EXTDATA, TEST_KEY, extdata

TOKEN = "stand-in-token-0123456789abcdef"
LOCAL_LAB = "http://hosp-r.example/lab"
SERVED_TYPES = ["Patient", "Encounter", "Condition", "Observation", "Immunization"]


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class StandInFhirServer:
    """A FHIR server stand-in: `resources` per type, every request logged, a bearer token checked."""

    def __init__(self, resources: dict[str, list[dict]], *, token: str | None = None):
        self.resources = resources
        self.token = token
        self.requests: list[dict] = []
        self.busy = 0  # the next `busy` requests are answered 429 with Retry-After: 0
        self.polls_before_ready = 1
        self.ignore_type = False  # like a server that does not support _type: every type is exported
        self.transaction_time = "2024-06-01T00:00:00Z"
        self.jobs: dict[str, dict] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._handle(self, "GET")

            def do_DELETE(self):
                server._handle(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answers --------------------------------------------------------------------------------

    def _send(self, handler, status: int, body=None, headers: dict | None = None, content_type="application/fhir+json"):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if data:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _outcome(code: str) -> dict:
        return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                              "diagnostics": "Patient Jane Doe is not yours"}]}

    def _handle(self, handler, method: str):
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        auth = handler.headers.get("Authorization")
        self.requests.append({"method": method, "path": parts.path, "query": query, "auth": auth,
                              "accept": handler.headers.get("Accept"), "prefer": handler.headers.get("Prefer")})
        if self.token and auth != f"Bearer {self.token}":
            return self._send(handler, 401, self._outcome("login"), {"WWW-Authenticate": "Bearer"})
        if self.busy:
            self.busy -= 1
            return self._send(handler, 429, self._outcome("throttled"), {"Retry-After": "0"})
        path = parts.path.removeprefix("/fhir/")
        if path == "$export":
            if handler.headers.get("Prefer") != "respond-async":
                return self._send(handler, 400, self._outcome("invalid"))
            job = str(len(self.jobs) + 1)
            wanted = query.get("_type", "").split(",") if query.get("_type") and not self.ignore_type else list(self.resources)
            self.jobs[job] = {"types": wanted,
                              "since": query.get("_since"), "polls": 0}
            return self._send(handler, 202, headers={"Content-Location": f"{self.base}/_status/{job}"})
        if path.startswith("_status/"):
            job = self.jobs[path.split("/")[1]]
            if method == "DELETE":
                job["deleted"] = True
                return self._send(handler, 202)
            job["polls"] += 1
            if job["polls"] <= self.polls_before_ready:
                return self._send(handler, 202, headers={"Retry-After": "1", "X-Progress": "working"})
            manifest = {"transactionTime": self.transaction_time, "request": f"{self.base}/$export", "requiresAccessToken": True,
                        "output": [{"type": t, "url": f"{self.base}/_files/{path.split('/')[1]}/{t}.ndjson"}
                                   for t in job["types"] if self._since(t, job["since"])],
                        "error": [{"type": "OperationOutcome", "url": f"{self.base}/_files/{path.split('/')[1]}/errors.ndjson"}]}
            return self._send(handler, 200, manifest, content_type="application/json")
        if path.startswith("_files/"):
            _, job_id, name = path.split("/")
            job = self.jobs[job_id]
            if name == "errors.ndjson":
                lines = [self._outcome("not-found")]
            else:
                lines = self._since(name.removesuffix(".ndjson"), job["since"])
            body = "".join(json.dumps(r) + "\n" for r in lines).encode("utf-8")
            return self._send(handler, 200, body, content_type="application/fhir+ndjson")
        resource_type = path
        if resource_type not in self.resources and resource_type not in DEFAULT_TYPES:  # a type it holds none of: empty
            return self._send(handler, 404, self._outcome("not-found"))
        since = query.get("_lastUpdated", "")
        matching = self._since(resource_type, since.removeprefix("gt") if since else None)
        count, offset = int(query.get("_count", 50)), int(query.get("_offset", 0))
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matching),
                  "link": [{"relation": "self", "url": f"{self.base}/{resource_type}?{parts.query}"}],
                  "entry": [{"resource": r, "search": {"mode": "match"}} for r in matching[offset:offset + count]]}
        if offset + count < len(matching):
            params = {k: v for k, v in query.items() if k != "_offset"} | {"_offset": offset + count}
            bundle["link"].append({"relation": "next", "url": f"{self.base}/{resource_type}?{urlencode(params)}"})
        return self._send(handler, 200, bundle)

    def _since(self, resource_type: str, since: str | None) -> list[dict]:
        rows = self.resources.get(resource_type, [])
        if since:
            rows = [r for r in rows if _instant(r["meta"]["lastUpdated"]) > _instant(since)]
        return sorted(rows, key=lambda r: (r["meta"]["lastUpdated"], r["id"]))

    def searches(self, resource_type: str | None = None) -> list[dict]:
        return [r for r in self.requests if r["path"].count("/") == 2 and not r["path"].startswith("/fhir/_")
                and "$export" not in r["path"] and (resource_type is None or r["path"] == f"/fhir/{resource_type}")]


# -- what the stand-in serves --------------------------------------------------------------------


def _real_resources() -> list[dict]:
    """One Synthea patient's resources (references resolved as a server holds them) and official R4 examples."""
    from transforms.fhir_bundle import resolve_bundle

    folder = extdata("synthea", "google-fhir-data-pipes-synthea-hiv-small")
    smallest = min(folder.glob("*.json"), key=lambda p: p.stat().st_size)
    bundle = json.loads(smallest.read_text(encoding="utf-8"))
    out = [r for _, r, skipped in resolve_bundle(bundle) if not skipped and r["resourceType"] in SERVED_TYPES]
    examples = EXTDATA / "fhir-r4-examples" / "hl7-fhir-r4-core-examples-4.0.1"
    for name in ("Patient-example", "Encounter-example", "Condition-example", "Observation-example", "Immunization-example"):
        out.append(json.loads((examples / f"{name}.json").read_text(encoding="utf-8")))
    return out


def _generated() -> list[dict]:
    """Resources no real file has: local lab codes (one mapped by conf/terminology, one not) and an
    Observation without its required status, which validation must quarantine."""
    subject = {"reference": "Patient/gen-p1"}
    return [
        {"resourceType": "Patient", "id": "gen-p1", "gender": "female", "birthDate": "1970-02-03",
         "identifier": [{"system": "urn:hosp-r:mrn", "value": "R-0001"}]},
        {"resourceType": "Observation", "id": "gen-o1", "status": "final", "subject": subject,
         "code": {"coding": [{"system": LOCAL_LAB, "code": "K-42"}]}, "valueQuantity": {"value": 4.2, "unit": "mmol/L"}},
        {"resourceType": "Observation", "id": "gen-o2", "status": "final", "subject": subject,
         "code": {"coding": [{"system": LOCAL_LAB, "code": "GLU"}]}, "valueQuantity": {"value": 5.1, "unit": "mmol/L"}},
        {"resourceType": "Observation", "id": "gen-bad", "subject": subject, "code": {"text": "no status"}},
    ]


def _served() -> dict[str, list[dict]]:
    resources = _real_resources() + _generated()
    by_type: dict[str, list[dict]] = {}
    for index, resource in enumerate(resources):
        resource = copy.deepcopy(resource)
        stamp = f"2024-01-{1 + index % 28:02d}T{index % 24:02d}:{index % 60:02d}:00.{index % 1000:03d}+00:00"
        resource["meta"] = {**(resource.get("meta") or {}), "lastUpdated": stamp}
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return by_type


@pytest.fixture
def server():
    stand_in = StandInFhirServer(_served(), token=TOKEN)
    yield stand_in
    stand_in.close()


def _conf(tmp_path, options: dict):
    conf = make_conf(tmp_path, {"hosp-r": [{"kind": "fhir-rest", "path": "hosp-r/fhir-rest", "options": options}]})
    (conf / "terminology").mkdir()
    (conf / "terminology" / "hosp-r.csv").write_text(
        "source_system,source_code,target_system,target_code,target_display\n"
        f"{LOCAL_LAB},GLU,http://loinc.org,2345-7,Glucose [Mass/volume] in Serum or Plasma\n")
    return conf


def _silver(lake, spark, table: str) -> dict[str, dict]:
    return {r["id"]: json.loads(r["resource"]) for r in lake.read(spark, f"silver.{table}").collect()}


# -- search -------------------------------------------------------------------------------------


def test_search_follows_every_page_then_pulls_only_newer_resources(server, tmp_path, spark, monkeypatch, caplog):
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("HOSP_R_FHIR_TOKEN", TOKEN)
    page_size = 25
    config = load_config(_conf(tmp_path, {"url": server.base, "types": SERVED_TYPES, "page_size": page_size,
                                          "auth_env": "HOSP_R_FHIR_TOKEN"}))
    workdir = tmp_path / "home"
    total = sum(len(v) for v in server.resources.values())
    assert total > 100 and len(server.resources["Observation"]) > 2 * page_size  # several pages per type

    with caplog.at_level(logging.INFO, logger="carelake"):
        first = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert first.error is None, first.error
    for resource_type in SERVED_TYPES:  # every page was read, in order, and no page twice
        pages = server.searches(resource_type)
        assert len(pages) == math.ceil(len(server.resources[resource_type]) / page_size), resource_type
        assert [int(p["query"].get("_offset", 0)) for p in pages] == [i * page_size for i in range(len(pages))]
        assert all("_lastUpdated" not in p["query"] for p in pages)  # first run: everything
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in server.requests)  # the token from the environment was sent
    ingest = first.results["ingest"]
    assert ingest["feeds"]["hosp-r/fhir-rest"] == {"read": total, "new": total}
    assert ingest["fhir_rest"]["hosp-r/fhir-rest"]["resources"] == total
    folder = ingest["fhir_rest"]["hosp-r/fhir-rest"]["folder"]  # under landing, one folder per run
    assert folder.startswith("hosp-r/fhir-rest/") and folder.endswith("-search")
    assert sorted(p.name for p in (workdir / "landing" / folder).iterdir()) == sorted(f"{t}.ndjson" for t in SERVED_TYPES)
    assert ingest["fhir_rest"]["hosp-r/fhir-rest"]["pages"] == sum(len(server.searches(t)) for t in SERVED_TYPES)

    # pulled resources are validated like any others: the one without status is quarantined, with a reason
    lake = Lake.from_config(config, workdir)
    quarantine = [r.asDict() for r in lake.read(spark, "phi.quarantine").collect()]
    assert [(q["hospital"], q["error_code"], q["reason"]) for q in quarantine] == [
        ("hosp-r", "FHIR_INVALID", "Observation.status: model_field_validation.missing")]
    assert quarantine[0]["source"].startswith("hosp-r/fhir-rest/") and quarantine[0]["source"].endswith("/Observation.ndjson")
    # conservation: every pulled resource is one bronze record, normalized or quarantined
    balance = first.results["normalize"]["conservation"]["hosp-r/fhir"]
    assert balance == {"bronze": total, "normalized": total - 1, "quarantined": 1, "balanced": True}
    counts = {t: lake.read(spark, f"silver.{t.lower()}").count() for t in SERVED_TYPES}
    expected = {t: len(server.resources[t]) - (1 if t == "Observation" else 0) for t in SERVED_TYPES}
    assert counts == expected

    # local codes: the one conf/terminology maps is not counted, the other is, in the run summary
    unmapped = first.results["normalize"]["unmapped_codes"]["hosp-r"]
    assert unmapped[LOCAL_LAB] == {"codes": 1, "resources": 1, "top": {"K-42": 1}}

    # marks: the newest meta.lastUpdated per type, kept in phi.feed_state once the records were in bronze
    marks = {r["entity"]: r["watermark"] for r in lake.read(spark, "phi.feed_state").collect()}
    for resource_type in SERVED_TYPES:
        assert marks[resource_type] == max((r["meta"]["lastUpdated"] for r in server.resources[resource_type]), key=_instant)

    # the hospital corrects a patient and adds an encounter; nothing else changes
    patient = next(r for r in server.resources["Patient"] if r["id"] == "gen-p1")
    patient["gender"] = "other"
    patient["meta"]["lastUpdated"] = "2024-03-01T00:00:00+00:00"
    encounter = copy.deepcopy(server.resources["Encounter"][0])
    encounter["id"] = "gen-e-new"
    encounter["meta"] = {"lastUpdated": "2024-03-01T00:00:01+00:00"}
    server.resources["Encounter"].append(encounter)
    server.requests.clear()
    second = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert second.error is None, second.error
    for resource_type in SERVED_TYPES:  # one page each, asking only for what is newer than the mark
        (request,) = server.searches(resource_type)
        assert request["query"]["_lastUpdated"] == f"gt{marks[resource_type]}"
    assert second.results["ingest"]["feeds"]["hosp-r/fhir-rest"] == {"read": 2, "new": 2}
    assert lake.read(spark, "silver.patient").count() == counts["Patient"]  # updated, not duplicated
    assert lake.read(spark, "silver.encounter").count() == counts["Encounter"] + 1
    assert sorted(p["gender"] for p in _silver(lake, spark, "patient").values() if p.get("birthDate") == "1970-02-03") == ["other"]
    balance = second.results["normalize"]["conservation"]["hosp-r/fhir"]
    assert balance == {"bronze": total + 2, "normalized": total + 1, "quarantined": 1, "balanced": True}

    # a third run finds nothing new and keeps the marks
    server.requests.clear()
    third = run_pipeline(config, workdir, ["ingest"])
    assert third.error is None and third.results["ingest"]["feeds"]["hosp-r/fhir-rest"] == {"read": 0, "new": 0}

    # the token and the server's PHI never reach a log line or the run summary
    text = caplog.text + json.dumps([first.to_dict(), second.to_dict()], default=str)
    assert TOKEN not in text and "1970-02-03" not in text and "R-0001" not in text
    assert "Observation page 3" in caplog.text  # progress is logged, with counts


# -- bulk export ------------------------------------------------------------------------------------


def test_bulk_export_kicks_off_polls_downloads_and_continues_from_the_transaction_time(server, tmp_path, spark, monkeypatch):
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("HOSP_R_FHIR_TOKEN", TOKEN)
    types = ["Patient", "Encounter", "Observation"]
    config = load_config(_conf(tmp_path, {"url": server.base, "mode": "bulk", "types": types, "auth_env": "HOSP_R_FHIR_TOKEN"}))
    workdir = tmp_path / "home"
    server.polls_before_ready = 2  # two 202 answers with Retry-After: 1 before the manifest
    server.ignore_type = True  # and a manifest with every type it holds, not only those asked for
    first = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert first.error is None, first.error
    kickoff = [r for r in server.requests if r["path"] == "/fhir/$export"]
    assert len(kickoff) == 1 and kickoff[0]["prefer"] == "respond-async" and kickoff[0]["accept"] == "application/fhir+json"
    assert kickoff[0]["query"] == {"_type": "Patient,Encounter,Observation"}  # first run: no _since
    polls = [r for r in server.requests if r["path"] == "/fhir/_status/1" and r["method"] == "GET"]
    assert len(polls) == 3
    downloads = [r for r in server.requests if r["path"].startswith("/fhir/_files/1/")]
    assert sorted(r["path"] for r in downloads) == sorted(
        [f"/fhir/_files/1/{t}.ndjson" for t in types] + ["/fhir/_files/1/errors.ndjson"])
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in downloads)  # requiresAccessToken: true
    assert server.jobs["1"].get("deleted")  # the server is told the files may go
    total = sum(len(server.resources[t]) for t in types)
    pulled = first.results["ingest"]["fhir_rest"]["hosp-r/fhir-rest"]
    assert (pulled["resources"], pulled["files"], pulled["error_files"], pulled["skipped_files"]) == (total, 3, 1, 2)
    assert first.results["ingest"]["feeds"]["hosp-r/fhir-rest"] == {"read": total, "new": total}
    assert first.results["normalize"]["conservation"]["hosp-r/fhir"] == {
        "bronze": total, "normalized": total - 1, "quarantined": 1, "balanced": True}
    lake = Lake.from_config(config, workdir)
    marks = {r["entity"]: r["watermark"] for r in lake.read(spark, "phi.feed_state").collect()}
    assert marks == {"$export:Encounter,Observation,Patient": server.transaction_time}

    # the next export asks only for what changed since the last transaction time; a busy server is waited for
    patient = server.resources["Patient"][0]
    patient["gender"] = "unknown" if patient.get("gender") != "unknown" else "other"
    patient["meta"]["lastUpdated"] = "2024-07-01T00:00:00+00:00"
    server.transaction_time, server.polls_before_ready, server.ignore_type = "2024-07-02T00:00:00Z", 0, False
    server.requests.clear()
    server.busy = 1  # the kick-off is answered 429 once
    second = run_pipeline(config, workdir, ["ingest", "normalize"])
    assert second.error is None, second.error
    kickoffs = [r for r in server.requests if r["path"] == "/fhir/$export"]
    assert len(kickoffs) == 2 and kickoffs[1]["query"] == {"_type": "Patient,Encounter,Observation",
                                                           "_since": "2024-06-01T00:00:00Z"}
    assert second.results["ingest"]["feeds"]["hosp-r/fhir-rest"] == {"read": 1, "new": 1}
    assert lake.read(spark, "silver.patient").count() == len(server.resources["Patient"])
    assert {r["watermark"] for r in lake.read(spark, "phi.feed_state").collect()} == {"2024-07-02T00:00:00Z"}


# -- auth and errors (no lake needed) ----------------------------------------------------------------


def _feed(server, **options) -> Feed:
    return Feed("hosp-r", "fhir-rest", "hosp-r/fhir-rest", None, {"url": server.base, "types": ["Patient"], **options})


def test_a_401_without_a_token_says_how_to_configure_one(server, tmp_path):
    with pytest.raises(ConfigError) as info:
        pull_into(_feed(server), tmp_path / "pull", {"Patient": "2024-01-01T00:00:00Z"})
    message = str(info.value)
    assert "hosp-r/fhir-rest: FHIR server answered 401" in message and "options.auth_env" in message
    assert f"{server.base}/Patient?_count=*&_lastUpdated=*" in message  # the URL, without its query values
    assert "2024-01-01" not in message and "Jane Doe" not in message
    assert server.requests[0]["auth"] is None


def test_a_refused_token_is_named_by_where_it_came_from_never_shown(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WRONG_TOKEN", "not-the-token-at-all")
    with pytest.raises(ConfigError) as info:
        pull_into(_feed(server, auth_env="WRONG_TOKEN"), tmp_path / "pull", {})
    assert "the token from $WRONG_TOKEN was refused" in str(info.value)
    assert "not-the-token-at-all" not in str(info.value)
    assert "OperationOutcome: login" in str(info.value) and "Jane Doe" not in str(info.value)
    monkeypatch.delenv("WRONG_TOKEN")
    with pytest.raises(ConfigError, match=r"options.auth_env names \$WRONG_TOKEN, which is not set"):
        pull_into(_feed(server, auth_env="WRONG_TOKEN"), tmp_path / "pull", {})


def test_a_token_from_an_airflow_connection(server, tmp_path, monkeypatch):
    pytest.importorskip("airflow.sdk")
    monkeypatch.setenv("AIRFLOW_CONN_HOSP_R_FHIR", json.dumps({"conn_type": "http", "password": TOKEN}))
    result = pull_into(_feed(server, airflow_conn="hosp_r_fhir"), tmp_path / "pull", {})
    assert result.resources == {"Patient": len(server.resources["Patient"])}
    assert {r["auth"] for r in server.requests} == {f"Bearer {TOKEN}"}
    with pytest.raises(ConfigError, match="Airflow connection 'nowhere' is not defined"):
        pull_into(_feed(server, airflow_conn="nowhere"), tmp_path / "pull", {})


def test_busy_answers_are_retried_then_a_persistent_failure_is_named(server, tmp_path, monkeypatch):
    monkeypatch.setenv("T", TOKEN)
    server.busy = 2
    waits: list[float] = []
    result = pull_into(_feed(server, auth_env="T"), tmp_path / "pull", {}, sleep=waits.append)
    assert result.resources == {"Patient": len(server.resources["Patient"])} and waits == [0.0, 0.0]
    server.busy = 100
    with pytest.raises(FhirServerError, match=r"answered 429 .* after 5 attempts"):
        pull_into(_feed(server, auth_env="T"), tmp_path / "pull", {}, sleep=waits.append)
    assert len(waits) == 2 + 4


def test_an_unknown_type_and_an_unreachable_server_fail_with_the_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("T", TOKEN)
    with pytest.raises(ConfigError, match=r"answered 404 .*/fhir/Claimz\?_count=\* \(OperationOutcome: not-found\)"):
        pull_into(_feed(server, auth_env="T", types=["Claimz"]), tmp_path / "pull", {})
    feed = Feed("hosp-r", "fhir-rest", "x", None, {"url": "http://127.0.0.1:9/fhir", "types": ["Patient"]})
    with pytest.raises(FhirServerError, match=r"at http://127.0.0.1:9/fhir/Patient\?_count=\* did not answer after 5 attempts"):
        pull_into(feed, tmp_path / "pull", {}, sleep=lambda s: None)


def test_the_token_goes_to_the_server_origin_only_and_urls_are_redacted():
    assert redact_url("https://u:p@fhir.example:8443/r4/Patient?name=Jane&_count=5#x") == \
        "https://fhir.example:8443/r4/Patient?name=*&_count=*"
    assert _retry_after("7") == 7.0 and _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    client = FhirClient("https://fhir.example/r4", token=TOKEN, token_source="$T", feed_name="f")
    assert TOKEN not in repr(client)


# -- failure and ad-hoc runs ----------------------------------------------------------------------


def test_a_failed_bronze_write_keeps_the_marks_so_the_next_run_pulls_again(server, tmp_path, spark, monkeypatch):
    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("T", TOKEN)
    config = load_config(_conf(tmp_path, {"url": server.base, "types": ["Patient"], "auth_env": "T"}))
    workdir = tmp_path / "home"
    merge = Lake.merge

    def failing_merge(self, spark_, df, table, **kwargs):
        if table == "bronze.records":
            raise OSError(28, "No space left on device")
        return merge(self, spark_, df, table, **kwargs)

    monkeypatch.setattr(Lake, "merge", failing_merge)
    failed = run_pipeline(config, workdir, ["ingest"])
    assert failed.error and "No space left on device" in failed.error
    lake = Lake.from_config(config, workdir)
    assert not lake.exists("phi.feed_state")  # no mark: the pull did not reach bronze
    monkeypatch.setattr(Lake, "merge", merge)
    server.requests.clear()
    again = run_pipeline(config, workdir, ["ingest"])
    assert again.error is None, again.error
    assert all("_lastUpdated" not in r["query"] for r in server.searches("Patient"))  # pulled again from the start
    patients = len(server.resources["Patient"])
    assert again.results["ingest"]["feeds"]["hosp-r/fhir-rest"] == {"read": patients, "new": patients}


def test_an_adhoc_run_pulls_a_server_given_on_the_command_line(server, tmp_path, spark, monkeypatch):
    from click.testing import CliRunner

    from carelake.adhoc import parse_feed
    from carelake.cli import cli

    monkeypatch.setenv("CARELAKE_DEID_KEY", TEST_KEY)
    monkeypatch.setenv("HOSP_R_FHIR_TOKEN", TOKEN)
    feed = parse_feed(f"r=fhir-rest:{server.base}@HOSP_R_FHIR_TOKEN", {})
    assert (feed.kind, feed.path, feed.options) == ("fhir-rest", "adhoc/r/fhir-rest",
                                                    {"url": server.base, "auth_env": "HOSP_R_FHIR_TOKEN"})
    assert parse_feed(f"r=fhir-rest:{server.base}/$export", {}).options == {"url": f"{server.base}/$export", "mode": "bulk"}
    with pytest.raises(ConfigError, match="must not carry credentials"):
        parse_feed("r=fhir-rest:https://user:pw@fhir.example/r4", {})
    result = CliRunner().invoke(cli, ["run", "--workdir", str(tmp_path / "home"), "--stage", "ingest",
                                      "--feed", f"r=fhir-rest:{server.base}@HOSP_R_FHIR_TOKEN"])
    assert result.exit_code == 0, result.output
    served = {t for t, rows in server.resources.items() if rows}
    assert {r["path"].removeprefix("/fhir/") for r in server.searches()} >= served  # the mapped types, searched
    assert sorted(p.name for p in (tmp_path / "home" / "landing" / "adhoc" / "r" / "fhir-rest").glob("*/*.ndjson")) == \
        sorted(f"{t}.ndjson" for t in served)


def test_the_token_is_not_sent_to_another_origin(server):
    other = StandInFhirServer({"Patient": []})
    try:
        client = FhirClient(server.base, token=TOKEN, token_source="$T", feed_name="hosp-r/fhir-rest")
        client.get_json(f"{server.base}/Patient?_count=1")
        client.get_json(f"{other.base}/Patient?_count=1")  # e.g. a next link pointing elsewhere
        assert server.requests[0]["auth"] == f"Bearer {TOKEN}" and other.requests[0]["auth"] is None
    finally:
        other.close()


def test_the_default_types_are_those_the_fhir_feed_maps():
    from transforms.fhir_feed import SUPPORTED_TYPES

    assert set(DEFAULT_TYPES) == set(SUPPORTED_TYPES)
