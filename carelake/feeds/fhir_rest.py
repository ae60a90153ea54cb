"""fhir-rest feed: pull resources from a hospital's FHIR server into landing, then ingest reads them as FHIR.

The pull writes what the server returns as NDJSON files under the feed's folder in landing, one folder
per run (``<path>/<run id>-<mode>/``), and `carelake.ingest` splits those files like the NDJSON of a
``fhir`` feed: one bronze record per resource (feed ``fhir`` in bronze, so the same resource delivered as
a file or pulled from the server is one record), then normalize validates each one and quarantines a bad
one alone. Landing keeps what the server sent, as for any other delivery.

Two modes (``options.mode``):

- ``search`` (default): per resource type, ``GET [url]/[type]?_lastUpdated=gt<mark>&_count=<page_size>``,
  following ``Bundle.link[relation=next]`` until there is none. The type's new mark is the largest
  ``meta.lastUpdated`` seen.
- ``bulk``: Bulk Data ``$export`` kick-off (``GET [url]/$export?_type=...&_since=<mark>`` with
  ``Prefer: respond-async``; ``url`` may itself end in ``$export`` for a Patient- or Group-level export),
  then polling of the ``Content-Location`` status URL (honouring ``Retry-After``, bounded by
  ``max_wait_minutes``) until the manifest, then download of every ``output[].url``. The manifest's
  ``transactionTime`` is the next mark.

Marks live in ``phi.feed_state`` (`carelake.feeds.state`) and are committed by ingest only after the
records are in bronze, so a failed run pulls again.

Auth: a bearer token from the environment variable ``options.auth_env``, or from the Airflow connection
``options.airflow_conn`` (its password, else ``extra.token``), looked up only when that option is set. The
token is sent only to the server's own origin (and to bulk file URLs when the manifest says
``requiresAccessToken``), never across a redirect, and never logged. Errors and logs name URLs with query
values blanked (``_lastUpdated=*``), because a query or a paging cursor can carry identifying values.

Only the standard library (``urllib.request``) talks HTTP: no new dependency for a few GETs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import Request, urlopen

from carelake.config import Feed
from carelake.errors import CarelakeError, ConfigError

__all__ = ["FhirServerError", "FhirClient", "Pull", "pull", "pull_into", "feed_token", "redact_url", "DEFAULT_TYPES",
           "EXPORT_ENTITY"]

log = logging.getLogger("carelake")

#: Resource types pulled when ``options.types`` is not set: those the FHIR feed maps
#: (`transforms.fhir_feed.SUPPORTED_TYPES`, repeated so that pulling needs no transforms import).
DEFAULT_TYPES = ("Patient", "Encounter", "Observation", "Condition", "Procedure", "MedicationRequest", "Immunization",
                 "AllergyIntolerance", "DiagnosticReport")
DEFAULT_PAGE_SIZE = 200
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_WAIT_MINUTES = 360.0
#: attempts per request when the server is busy (429, 503, 502, 504) or the connection drops
MAX_ATTEMPTS = 5
#: one wait (Retry-After, or our own back-off) is never longer than this, whatever the server asks
MAX_RETRY_AFTER_SECONDS = 120.0
#: phi.feed_state entity of a bulk feed's mark (the types are appended: another type list starts afresh)
EXPORT_ENTITY = "$export"
_RETRY_STATUS = (429, 502, 503, 504)
_FHIR_JSON = "application/fhir+json"
_NDJSON = "application/fhir+ndjson"
_CHUNK = 1 << 20


class FhirServerError(CarelakeError):
    """The FHIR server failed (5xx after retries, a broken answer, an export that never finished); a
    later run may succeed, so Airflow retries it (unlike a ConfigError)."""


def redact_url(url: str) -> str:
    """`url` without credentials and with every query value blanked: safe for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    query = "&".join(f"{key}=*" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _outcome_codes(body: bytes) -> str:
    """The issue codes of an OperationOutcome body ('processing, not-found'): codes only, because
    diagnostics text may echo the values a request carried."""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return ""
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return ""
    codes = sorted({str(i.get("code")) for i in data.get("issue") or [] if isinstance(i, dict) and i.get("code")})
    return f" (OperationOutcome: {', '.join(codes)})" if codes else ""


@dataclass
class _Answer:
    status: int
    headers: dict
    url: str
    response: object = None  # the open response when the caller streams the body

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class FhirClient:
    """GETs against one FHIR server: bearer token for its origin, timeouts, bounded retries."""

    def __init__(self, base_url: str, *, token: str | None, token_source: str | None, feed_name: str,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.token_source = token_source
        self.feed_name = feed_name
        self.timeout = timeout
        self.sleep = sleep
        self.requests = 0

    def __repr__(self) -> str:  # never shows the token
        return f"FhirClient({redact_url(self.base_url)!r}, token={'set' if self._token else 'none'})"

    def _wait(self, seconds: float) -> None:
        self.sleep(min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS))

    def open(self, url: str, *, accept: str, send_token: bool | None = None, extra_headers: dict | None = None,
             method: str = "GET", stream: bool = False) -> tuple[_Answer, bytes | None]:
        """(answer, body) of a 2xx response; with `stream` the body is left unread in `answer.response`.

        Retries 429/5xx-busy answers and dropped connections up to MAX_ATTEMPTS times, waiting what
        Retry-After says (bounded) or backing off; raises a ConfigError for a refusal no retry can fix
        (401, 403, other 4xx) and FhirServerError for the rest, naming the redacted URL."""
        shown = redact_url(url)
        if send_token is None:
            send_token = _origin(url) == _origin(self.base_url)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            request = Request(url, method=method, headers={"Accept": accept, **(extra_headers or {})})
            if send_token and self._token:
                # unredirected: urllib would otherwise copy the header to wherever a redirect points
                request.add_unredirected_header("Authorization", f"Bearer {self._token}")
            self.requests += 1
            try:
                response = urlopen(request, timeout=self.timeout)
                answer = _Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.url, response)
                if stream:
                    return answer, None
                with response:
                    return answer, response.read()
            except HTTPError as exc:
                body = exc.read() if exc.fp else b""
                if exc.code in _RETRY_STATUS and attempt < MAX_ATTEMPTS:
                    wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                    wait = min(2.0 ** attempt, 30.0) if wait is None else wait
                    log.info("%s: %s answered %d; retry %d/%d in %.0fs", self.feed_name, shown, exc.code, attempt,
                             MAX_ATTEMPTS - 1, min(wait, MAX_RETRY_AFTER_SECONDS))
                    self._wait(wait)
                    continue
                raise self._refusal(exc.code, shown, body, send_token) from None
            except (URLError, TimeoutError, ConnectionError) as exc:
                # the reason's class only: its text can repeat the URL with its query
                reason = type(getattr(exc, "reason", exc)).__name__
                if attempt < MAX_ATTEMPTS:
                    log.info("%s: %s did not answer (%s); retry %d/%d", self.feed_name, shown, reason, attempt, MAX_ATTEMPTS - 1)
                    self._wait(min(2.0 ** attempt, 30.0))
                    continue
                raise FhirServerError(f"{self.feed_name}: FHIR server at {shown} did not answer after {MAX_ATTEMPTS} "
                                      f"attempts ({reason}); check options.url and the network") from None
        raise AssertionError("unreachable")

    def _refusal(self, code: int, shown: str, body: bytes, sent_token: bool) -> CarelakeError:
        try:  # the standard phrase, not the server's own text
            phrase = f" {HTTPStatus(code).phrase}"
        except ValueError:
            phrase = ""
        where = f"{self.feed_name}: FHIR server answered {code}{phrase} for {shown}"
        outcome = _outcome_codes(body)
        if code == 401:
            if not self._token:
                return ConfigError(f"{where}: it needs a token and none is configured; set options.auth_env (an "
                                   "environment variable holding a bearer token) or options.airflow_conn in the hospital's conf")
            if not sent_token:
                return ConfigError(f"{where}: this URL is on another origin than options.url, so the token was not sent "
                                   "(carelake sends it only to the server's own origin)")
            return ConfigError(f"{where}: the token from {self.token_source} was refused (expired or wrong?){outcome}")
        if code == 403:
            return ConfigError(f"{where}: the token from {self.token_source or '(none)'} is not allowed to read this{outcome}")
        if code in _RETRY_STATUS or code >= 500:
            return FhirServerError(f"{where}{outcome}" + (f" after {MAX_ATTEMPTS} attempts" if code in _RETRY_STATUS else ""))
        return ConfigError(f"{where}{outcome}; check options.url, types and mode against what the server supports")

    def get_json(self, url: str, **kwargs) -> tuple[_Answer, dict | None]:
        answer, body = self.open(url, accept=_FHIR_JSON, **kwargs)
        if not body:
            return answer, None
        try:
            data = json.loads(body.decode("utf-8"))
        except ValueError:
            raise FhirServerError(f"{self.feed_name}: {redact_url(url)} answered {answer.status} without valid JSON") from None
        if not isinstance(data, dict):
            raise FhirServerError(f"{self.feed_name}: {redact_url(url)} answered a JSON {type(data).__name__}, not an object")
        return answer, data


# -- auth --------------------------------------------------------------------------------------------


def feed_token(feed: Feed) -> tuple[str | None, str | None]:
    """(token, where it came from) for `feed`: `$auth_env`, or the Airflow connection `airflow_conn`."""
    options = feed.options
    token, source = None, None
    if options.get("auth_env"):
        source = f"${options['auth_env']}"
        token = os.environ.get(options["auth_env"])
        if not token:
            raise ConfigError(f"{feed.name}: options.auth_env names {source}, which is not set; export the server's "
                              "bearer token in it (never in conf/)")
    elif options.get("airflow_conn"):
        conn_id = options["airflow_conn"]
        source = f"Airflow connection {conn_id!r}"
        try:
            from airflow.sdk import Connection  # only here: importing Airflow costs seconds
        except ImportError:
            raise ConfigError(f"{feed.name}: options.airflow_conn needs Apache Airflow installed; outside Airflow "
                              "use options.auth_env") from None
        try:
            conn = Connection.get(conn_id)
        except Exception as exc:  # the SDK's not-found class moved between versions
            raise ConfigError(f"{feed.name}: Airflow connection {conn_id!r} is not defined: add it with `airflow "
                              f"connections add {conn_id} --conn-password <token>` or in the secrets backend "
                              f"({type(exc).__name__})") from None
        extra = conn.extra_dejson or {}
        token = conn.password or extra.get("token") or extra.get("access_token")
        if not token:
            raise ConfigError(f"{feed.name}: Airflow connection {conn_id!r} has no password and no extra 'token'")
    if token and os.environ.get("AIRFLOW_CTX_DAG_ID"):
        try:  # in an Airflow task, make the log masker hide the token whatever prints it
            from airflow.sdk.log import mask_secret

            mask_secret(token)
        except ImportError:
            pass
    return token, source


# -- the pull ------------------------------------------------------------------------------------------


@dataclass
class Pull:
    """What one pull wrote and the marks it reached (committed by ingest once the records are in bronze)."""

    mode: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    resources: dict[str, int] = field(default_factory=dict)  # per resource type
    pending: dict[str, str] = field(default_factory=dict)  # entity -> new mark
    previous: dict[str, str] = field(default_factory=dict)
    pages: int = 0
    requests: int = 0
    error_files: int = 0
    skipped_files: int = 0

    def rows_per_mark(self) -> dict[str, int]:
        """Resources read per new mark (a type's own count; the whole export for a bulk mark)."""
        return {entity: self.resources.get(entity, sum(self.resources.values())) for entity in self.pending}

    def summary(self, landing: Path | None = None) -> dict:
        """Counts for the run summary (no URLs, no tokens, no content); `folder` relative to `landing`."""
        folder = self.folder.relative_to(landing) if landing and self.folder.is_relative_to(landing) else self.folder
        return {"mode": self.mode, "folder": str(folder), "files": len(self.files), "resources": sum(self.resources.values()),
                "per_type": dict(self.resources), "pages": self.pages, "requests": self.requests,
                "error_files": self.error_files, "skipped_files": self.skipped_files, "previous": dict(self.previous), "new_marks": dict(self.pending)}


def _options(feed: Feed) -> dict:
    options = feed.options
    types = options.get("types") or DEFAULT_TYPES
    if isinstance(types, str):
        types = [t.strip() for t in types.split(",") if t.strip()]
    return {"url": str(options["url"]).rstrip("/"), "mode": options.get("mode") or "search", "types": tuple(types),
            "page_size": int(options.get("page_size") or DEFAULT_PAGE_SIZE),
            "timeout": float(options.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            "max_wait": 60.0 * float(options.get("max_wait_minutes") or DEFAULT_MAX_WAIT_MINUTES)}


def _instant(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _later(mark: str | None, candidate: str | None) -> str | None:
    """The later of two FHIR instants, as the server wrote it (its own format goes back in `gt...`)."""
    a, b = _instant(mark), _instant(candidate)
    if b is None:
        return mark
    if a is None or b > a:
        return candidate
    return mark


def _next_link(bundle: dict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return link["url"]
    return None


def _search(client: FhirClient, feed: Feed, settings: dict, folder: Path, marks: dict, pull_: Pull) -> None:
    for resource_type in settings["types"]:
        params = {"_count": settings["page_size"]}
        if marks.get(resource_type):
            params["_lastUpdated"] = f"gt{marks[resource_type]}"
        url: str | None = f"{settings['url']}/{resource_type}?{urlencode(params)}"
        seen: set[str] = set()
        path = folder / f"{resource_type}.ndjson"
        count, newest, handle = 0, None, None
        try:
            while url:
                if url in seen:  # a server that links a page to itself would page forever
                    raise FhirServerError(f"{feed.name}: the next link of {redact_url(url)} points back to a page already read")
                seen.add(url)
                _, bundle = client.get_json(url)
                if not bundle or bundle.get("resourceType") != "Bundle":
                    raise FhirServerError(f"{feed.name}: {redact_url(url)} answered no searchset Bundle "
                                          f"(resourceType {(bundle or {}).get('resourceType')!r})")
                pull_.pages += 1
                for entry in bundle.get("entry") or []:
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if not isinstance(resource, dict) or (entry.get("search") or {}).get("mode") == "outcome":
                        continue  # an OperationOutcome about the search, not a record of the hospital
                    if handle is None:
                        handle = open(path, "w", encoding="utf-8")
                    handle.write(json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n")
                    count += 1
                    if resource.get("resourceType") == resource_type:
                        newest = _later(newest, (resource.get("meta") or {}).get("lastUpdated"))
                log.info("%s: %s page %d, %d resources so far", feed.name, resource_type, len(seen), count)
                link = _next_link(bundle)
                url = urljoin(url, link) if link else None
        finally:
            if handle is not None:
                handle.close()
        if count:
            pull_.files.append(path)
            pull_.resources[resource_type] = count
            if newest is None:
                log.warning("%s: the server's %s resources carry no meta.lastUpdated: every run pulls them all again",
                            feed.name, resource_type)
        if newest and newest != marks.get(resource_type):
            pull_.pending[resource_type] = newest


def export_entity(types: tuple[str, ...]) -> str:
    """The phi.feed_state entity of a bulk feed's mark: one per type list, so that adding a type pulls it whole."""
    return f"{EXPORT_ENTITY}:{','.join(sorted(types))}"


def _bulk(client: FhirClient, feed: Feed, settings: dict, folder: Path, marks: dict, pull_: Pull) -> None:
    # _type always: an export of every type would bring Claims and the like, which the FHIR feed does not map
    types = settings["types"]
    entity = export_entity(types)
    base = settings["url"]
    kickoff = base if base.rsplit("/", 1)[-1] == "$export" else f"{base}/$export"
    params = {"_type": ",".join(types)}
    if marks.get(entity):
        params["_since"] = marks[entity]
    url = f"{kickoff}?{urlencode(params)}"
    answer, _ = client.open(url, accept=_FHIR_JSON, extra_headers={"Prefer": "respond-async"})
    location = answer.header("Content-Location")
    if answer.status != 202 or not location:
        found = f"{answer.status}" + ("" if location else " without Content-Location")
        raise FhirServerError(f"{feed.name}: $export kick-off at {redact_url(url)} answered {found}; expected 202 Accepted "
                              "with a status URL (does the server support Bulk Data export?)")
    status_url = urljoin(url, location)
    log.info("%s: $export accepted; polling %s", feed.name, redact_url(status_url))
    deadline = time.monotonic() + settings["max_wait"]
    delay = 2.0
    while True:
        answer, body = client.open(status_url, accept="application/json")
        if answer.status == 200:
            break
        if answer.status != 202:
            raise FhirServerError(f"{feed.name}: export status {redact_url(status_url)} answered {answer.status}; expected 202 or 200")
        wait = _retry_after(answer.header("Retry-After"))
        if wait is None:  # no hint: back off from 2 s to a minute
            wait, delay = delay, min(delay * 1.5, 60.0)
        wait = min(wait, MAX_RETRY_AFTER_SECONDS)
        if time.monotonic() + wait > deadline:
            raise FhirServerError(f"{feed.name}: the export at {redact_url(status_url)} was not complete after "
                                  f"{settings['max_wait'] / 60:.0f} minutes (options.max_wait_minutes); a later run starts a new one")
        log.info("%s: export in progress; next poll in %.0fs", feed.name, wait)
        client._wait(wait)
    try:
        manifest = json.loads((body or b"").decode("utf-8"))
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("output", []), list):
        raise FhirServerError(f"{feed.name}: the export status {redact_url(status_url)} answered 200 without a manifest")
    transaction_time = manifest.get("transactionTime")
    if _instant(transaction_time) is None:
        raise FhirServerError(f"{feed.name}: the export manifest has no valid transactionTime, so the next run could not be incremental")
    token_needed = bool(manifest.get("requiresAccessToken"))
    outputs = [o for o in manifest.get("output") or [] if isinstance(o, dict) and o.get("url")]
    ignored = [o for o in outputs if o.get("type") not in types]
    if ignored:  # a server that does not honour _type: what was not asked for is not downloaded
        log.warning("%s: the export holds %d files of types not asked for; not downloaded", feed.name, len(ignored))
        outputs = [o for o in outputs if o.get("type") in types]
    pull_.skipped_files = len(ignored)
    log.info("%s: export complete: %d files to download", feed.name, len(outputs))
    for index, item in enumerate(outputs):
        kind = item["type"]  # one of the types asked for: a safe file name
        path = folder / f"{kind}-{index:04d}.ndjson"
        lines = _download(client, urljoin(status_url, item["url"]), path, send_token=token_needed or None)
        pull_.files.append(path)
        pull_.resources[kind] = pull_.resources.get(kind, 0) + lines
        log.info("%s: downloaded file %d/%d (%s, %d resources)", feed.name, index + 1, len(outputs), kind, lines)
    errors = [o for o in manifest.get("error") or [] if isinstance(o, dict) and o.get("url")]
    for index, item in enumerate(errors):  # OperationOutcomes about the export: kept for operators, not ingested
        _download(client, urljoin(status_url, item["url"]), folder / "_errors" / f"OperationOutcome-{index:04d}.ndjson",
                  send_token=token_needed or None)
    pull_.error_files = len(errors)
    if errors:
        log.warning("%s: the server reported %d export error files (OperationOutcome), kept under %s/_errors",
                    feed.name, len(errors), folder.name)
    pull_.pending[entity] = transaction_time
    try:  # tell the server the files may go (optional in the spec; a failure changes nothing here)
        client.open(status_url, accept=_FHIR_JSON, method="DELETE")
    except CarelakeError:
        pass


def _download(client: FhirClient, url: str, path: Path, *, send_token: bool | None) -> int:
    """Stream one NDJSON file to `path`; returns its number of non-blank lines (resources)."""
    answer, _ = client.open(url, accept=_NDJSON, send_token=send_token, stream=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with answer.response as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)
    with open(path, "rb") as handle:  # counted afterwards: a line may span two chunks of the stream
        return sum(1 for line in handle if line.strip())


def pull_into(feed: Feed, folder: Path, marks: dict[str, str], *, sleep=time.sleep) -> Pull:
    """Pull `feed`'s server into `folder` (emptied first: a retried run pulls again) from `marks` on."""
    settings = _options(feed)
    token, source = feed_token(feed)
    client = FhirClient(settings["url"], token=token, token_source=source, feed_name=feed.name,
                        timeout=settings["timeout"], sleep=sleep)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    result = Pull(settings["mode"], folder, previous=dict(marks))
    started = time.monotonic()
    if settings["mode"] == "bulk":
        _bulk(client, feed, settings, folder, marks, result)
    else:
        _search(client, feed, settings, folder, marks, result)
    result.requests = client.requests
    log.info("%s: pulled %d resources in %d files (%s, %d requests, %.1fs)", feed.name, sum(result.resources.values()),
             len(result.files), settings["mode"], client.requests, time.monotonic() - started)
    return result


def pull(ctx, feed: Feed) -> Pull:
    """Pull `feed` into landing (``<path>/<run id>-<mode>/``) from its marks in phi.feed_state."""
    from carelake.feeds.state import read_marks

    root = Path(feed.path) if Path(feed.path).is_absolute() else ctx.lake.landing / feed.path
    run = re.sub(r"[^A-Za-z0-9_-]", "_", ctx.run_id)[-80:]
    return pull_into(feed, root / f"{run}-{feed.options.get('mode') or 'search'}", read_marks(ctx, feed))
