"""One reading of ``conf/hospitals/<id>.yaml``, shared by `carelake run` (`carelake.config`) and the
Airflow DAG factory (`carelake.airflow_tasks`), so both accept and refuse the same files with the same
messages.

Light on purpose: the DAG processor parses DAG files every few seconds, so this module needs only the
standard library and PyYAML (via `carelake.yamlconf`); no engine, no carelake.config. Each check raises
`error` (ConfigError, or the DAG side's DagConfError) with the file, the key and what was expected.

A hospital file::

    id: hosp-a                  # lower-case letters, digits, '-' or '_': it names DAGs, folders, partitions
    name: Hospital A            # optional
    schedule: '@daily'          # optional: cron or preset, null for manual runs only (Airflow)
    airflow: {retries: 5}       # optional per-hospital Airflow settings
    hl7v2: {...}                # optional HL7 v2 mapping overrides (transforms.hl7v2)
    feeds:
      - {kind: csv, path: hosp-a/csv, mapping: his-a}
      - {kind: fhir-rest, path: hosp-a/fhir-rest, options: {url: 'https://fhir.hosp-a.example/r4', auth_env: HOSP_A_FHIR_TOKEN}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from carelake.errors import ConfigError
from carelake.yamlconf import load_mapping

__all__ = ["FEED_KINDS", "FEED_OPTIONS", "HOSPITAL_KEYS", "FeedConf", "HospitalConf", "read_hospital", "check_feed", "check_schedule",
           "check_unique_ids", "check_mappings_exist", "ID_PATTERN"]

#: hl7v2, csv, fhir read files under landing (or, given an absolute path, in place); jdbc reads a SQL
#: database; fhir-rest pulls a FHIR server into landing, then reads what it pulled as fhir (docs/feeds.md).
FEED_KINDS = ("hl7v2", "csv", "fhir", "jdbc", "fhir-rest")
#: Options each kind accepts besides kind, path and mapping (see docs/feeds.md).
FEED_OPTIONS = {
    "hl7v2": set(),
    "csv": set(),
    "fhir": {"reference_files"},
    "jdbc": {"url", "url_env"},
    "fhir-rest": {"url", "mode", "types", "auth_env", "airflow_conn", "page_size", "timeout_seconds", "max_wait_minutes"},
}
#: Top-level keys of a hospital file; another key is a typo that would otherwise be ignored.
HOSPITAL_KEYS = ("id", "name", "schedule", "feeds", "hl7v2", "airflow")
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_AIRFLOW_KEYS = ("retries",)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class FeedConf:
    kind: str
    path: str
    mapping: str | None = None
    options: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class HospitalConf:
    """A checked hospital file. `schedule` is None both when absent and when null: `schedule_set` tells."""

    id: str
    name: str
    feeds: tuple[FeedConf, ...]
    source: Path
    schedule: str | None = None
    schedule_set: bool = False
    hl7v2: dict = field(default_factory=dict, compare=False, hash=False)
    airflow: dict = field(default_factory=dict, compare=False, hash=False)


def check_schedule(value, where: str, key: str = "schedule", *, error: type[ConfigError] = ConfigError) -> str | None:
    """A cron expression or an Airflow preset, or None (manual runs only)."""
    if value is None:
        return None
    if not isinstance(value, str) or not (value.startswith("@") or len(value.split()) == 5):
        raise error(f"{where}: '{key}' must be a cron expression ('0 2 * * *') or a preset ('@daily'), "
                    f"or null for manual runs only; found {value!r}")
    return value


def _positive(options: dict, key: str, where: str, error, *, integer: bool = False, maximum: float | None = None) -> None:
    if key not in options:
        return
    value = options[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0 or (maximum is not None and value > maximum):
        bound = f" and <= {maximum:,}" if maximum is not None else ""
        raise error(f"{where}: 'options.{key}' must be a {'whole ' if integer else ''}number > 0{bound}, found {value!r}")


def _check_http_url(value, where: str, key: str, error) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"{where}: '{key}' must be the server's base URL (https://host/path), found {value!r}")
    if parts.username or parts.password:
        raise error(f"{where}: '{key}' must not carry credentials; put the token in options.auth_env or options.airflow_conn")
    if parts.query or parts.fragment:
        raise error(f"{where}: '{key}' must be the server's base URL without '?' or '#' parts")


def _check_fhir_rest(options: dict, where: str, error) -> None:
    if not options.get("url"):
        raise error(f"{where}: a fhir-rest feed needs options.url (the FHIR server's base URL, e.g. https://fhir.example/r4)")
    _check_http_url(options["url"], where, "options.url", error)
    mode = options.get("mode", "search")
    if mode not in ("search", "bulk"):
        raise error(f"{where}: 'options.mode' must be search or bulk, found {mode!r}")
    types = options.get("types")
    if types is not None and (not isinstance(types, list) or not types
                              or not all(isinstance(t, str) and _RESOURCE_TYPE.match(t) for t in types)):
        raise error(f"{where}: 'options.types' must be a non-empty list of FHIR resource types such as [Patient, Encounter], "
                    f"found {types!r}")
    _positive(options, "page_size", where, error, integer=True, maximum=_MAX_PAGE_SIZE)
    _positive(options, "timeout_seconds", where, error)
    _positive(options, "max_wait_minutes", where, error)
    auth_env = options.get("auth_env")
    if auth_env is not None and (not isinstance(auth_env, str) or not _ENV_NAME.match(auth_env)):
        raise error(f"{where}: 'options.auth_env' must name an environment variable (e.g. HOSP_A_FHIR_TOKEN), found {auth_env!r}")
    if auth_env and options.get("airflow_conn"):
        raise error(f"{where}: set one of options.auth_env and options.airflow_conn, not both")


def check_feed(raw, where: str, *, error: type[ConfigError] = ConfigError) -> FeedConf:
    """One feed entry ({kind, path, mapping, options}) checked; `where` names it in messages."""
    if not isinstance(raw, dict) or raw.get("kind") not in FEED_KINDS:
        raise error(f"{where}: 'kind' must be one of {', '.join(FEED_KINDS)}")
    kind = raw["kind"]
    if not raw.get("path") or not isinstance(raw["path"], str):
        raise error(f"{where}: 'path' is required (a glob, or for csv a folder, under landing; for jdbc and fhir-rest "
                    "a label and folder name)")
    unknown_keys = sorted(set(raw) - {"kind", "path", "mapping", "options"})
    if unknown_keys:
        raise error(f"{where}: unknown keys {unknown_keys}; a feed has kind, path, mapping and options")
    mapping = raw.get("mapping")
    if kind in ("csv", "jdbc") and not mapping:
        raise error(f"{where}: a {kind} feed needs 'mapping' (a file name in conf/csv_mappings/)")
    if mapping is not None and not isinstance(mapping, str):
        raise error(f"{where}: 'mapping' must be a file name in conf/csv_mappings/ (without .yaml), found {mapping!r}")
    options = raw.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise error(f"{where}: 'options' must be a mapping")
    unknown = sorted(set(options) - FEED_OPTIONS[kind])
    if unknown:
        raise error(f"{where}: unknown options {unknown} for a {kind} feed; known: {sorted(FEED_OPTIONS[kind])}")
    connection = options.get("airflow_conn")
    if connection is not None and not isinstance(connection, str):
        raise error(f"{where}: 'options.airflow_conn' must be an Airflow connection id, found {connection!r}")
    if kind == "jdbc":
        if not (options.get("url") or options.get("url_env")):
            raise error(f"{where}: a jdbc feed needs options.url_env (an environment variable holding the "
                        "database URL) or options.url (without password)")
        if isinstance(options.get("url"), str) and urlsplit(options["url"]).password:
            raise error(f"{where}: options.url carries a password; put the URL in an environment variable named by options.url_env")
    if kind == "fhir" and "reference_files" in options:
        files = options["reference_files"]
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise error(f"{where}: 'options.reference_files' must be a list of globs, found {files!r}")
    if kind == "fhir-rest":
        _check_fhir_rest(options, where, error)
    return FeedConf(kind, raw["path"], mapping, dict(options))


def read_hospital(path: Path, *, error: type[ConfigError] = ConfigError) -> HospitalConf:
    """Read and check one hospital file; `error` (with the file and key in its message) when it is wrong."""
    data = load_mapping(path, error=error)
    hospital_id = data.get("id")
    if not isinstance(hospital_id, str) or not ID_PATTERN.match(hospital_id):
        raise error(f"{path}: 'id' is required: lower-case letters, digits, '-' or '_' (e.g. hosp-a); found {hospital_id!r}")
    unknown = sorted(set(data) - set(HOSPITAL_KEYS))
    if unknown:
        raise error(f"{path}: unknown keys {unknown}; a hospital file has {', '.join(HOSPITAL_KEYS)}")
    raw_feeds = data.get("feeds") or []
    if not isinstance(raw_feeds, list):
        raise error(f"{path}: 'feeds' must be a list of feeds ({{kind, path, ...}})")
    feeds = tuple(check_feed(raw, f"{path}: feeds[{index}]", error=error) for index, raw in enumerate(raw_feeds))
    if not feeds:
        raise error(f"{path}: 'feeds' is empty; a hospital needs at least one feed")
    for key in ("hl7v2", "airflow"):
        if not isinstance(data.get(key) or {}, dict):
            raise error(f"{path}: '{key}' must be a mapping")
    _check_hl7v2(data.get("hl7v2"), path, error)
    airflow = data.get("airflow") or {}
    unknown = sorted(set(airflow) - set(_AIRFLOW_KEYS))
    if unknown:
        raise error(f"{path}: airflow: unknown keys {unknown}; known: {', '.join(_AIRFLOW_KEYS)}")
    retries = airflow.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise error(f"{path}: airflow: 'retries' must be a whole number >= 0, found {retries!r}")
    return HospitalConf(
        id=hospital_id, name=str(data.get("name") or hospital_id), feeds=feeds, source=path,
        schedule=check_schedule(data.get("schedule"), str(path), error=error), schedule_set="schedule" in data,
        hl7v2=dict(data.get("hl7v2") or {}), airflow=dict(airflow),
    )


def _check_hl7v2(overrides: dict | None, path: Path, error: type[ConfigError]) -> None:
    # A bad timezone or Z-segment rule would otherwise surface only per message, as MAPPING_BUG quarantines.
    if not overrides:
        return  # most files have no hl7v2 block: DAG parsing then never imports the HL7 v2 package
    from transforms.hl7v2.to_fhir import check_overrides  # pure Python: safe for DAG parsing

    try:
        check_overrides(overrides)
    except ValueError as exc:
        raise error(f"{path}: {exc}") from None


def check_unique_ids(hospitals, *, error: type[ConfigError] = ConfigError) -> None:
    """Two files declaring one hospital id would share DAGs, folders and partitions."""
    seen: dict[str, Path] = {}
    for hospital in hospitals:
        if hospital.id in seen:
            raise error(f"hospital id {hospital.id!r} is declared twice: {seen[hospital.id]} and {hospital.source}")
        seen[hospital.id] = hospital.source


def check_mappings_exist(hospitals, mappings_dir: Path, *, error: type[ConfigError] = ConfigError) -> None:
    """Every feed's mapping names a file in conf/csv_mappings/."""
    for hospital in hospitals:
        for feed in hospital.feeds:
            if feed.mapping and not (mappings_dir / f"{feed.mapping}.yaml").is_file():
                raise error(f"hospital {hospital.id}: csv mapping {feed.mapping!r} not found in {mappings_dir} "
                            f"({hospital.source})")
