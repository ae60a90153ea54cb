"""Load and check a conf/ directory: hospitals and feeds, zones, policy, regions, maps, views.

Everything is checked at load, so a broken conf stops the run before any work with a message that
names the file and the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


from carelake.engine import EngineSettings, engine_settings
from carelake.errors import ConfigError
from carelake.yamlconf import load_mapping
from transforms.terminology import Terminology

__all__ = [
    "Feed", "Hospital", "Config", "load_config", "default_conf_dir", "FEED_KINDS", "FEED_OPTIONS", "PROJECT_ROOT",
    "load_linkage", "load_concept_map",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: hl7v2, csv, fhir read files under landing (or, given an absolute path, in place); jdbc reads a SQL
#: database. fhir-rest (pull from a FHIR server into landing, then read as fhir) is accepted in conf
#: but not implemented yet: ingest stops on it with a ConfigError (see docs/feeds.md).
FEED_KINDS = ("hl7v2", "csv", "fhir", "jdbc", "fhir-rest")
#: Options each kind accepts besides kind, path and mapping (see docs/feeds.md).
FEED_OPTIONS = {
    "hl7v2": set(),
    "csv": set(),
    "fhir": {"reference_files"},
    "jdbc": {"url", "url_env"},
    "fhir-rest": {"url", "mode", "types", "auth_env", "airflow_conn", "page_size"},
}


@dataclass(frozen=True)
class Feed:
    """One delivery channel of a hospital.

    `path`: a glob (csv: a folder) under landing, or an absolute path read in place; for jdbc the
    database is in `options` (``url`` or ``url_env``) and `path` names the feed (a label, also the
    key of its watermarks in phi.feed_state). `mapping`: a conf/csv_mappings
    name (csv, jdbc). `options`: kind-specific settings (`FEED_OPTIONS`).
    """

    hospital: str
    kind: str
    path: str
    mapping: str | None = None
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.hospital}/{self.kind}"


@dataclass(frozen=True)
class Hospital:
    id: str
    name: str
    feeds: tuple[Feed, ...]
    schedule: str = "@daily"
    hl7v2: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    conf_dir: Path
    hospitals: tuple[Hospital, ...]
    zones: dict[str, str]
    deid: dict
    regions: list[dict]
    terminology: Terminology
    csv_mappings: dict[str, dict]
    views: dict[str, dict]
    engine: EngineSettings
    expectations_dir: Path
    linkage: dict = field(default_factory=dict)

    @property
    def feeds(self) -> list[Feed]:
        return [feed for hospital in self.hospitals for feed in hospital.feeds]

    def hospital(self, hospital_id: str) -> Hospital:
        for hospital in self.hospitals:
            if hospital.id == hospital_id:
                return hospital
        raise ConfigError(f"no hospital {hospital_id!r} in {self.conf_dir / 'hospitals'}; known: {', '.join(h.id for h in self.hospitals)}")


def default_conf_dir() -> Path:
    """$CARELAKE_CONF, else ./conf when it exists, else the conf/ shipped with the project."""
    if os.environ.get("CARELAKE_CONF"):
        return Path(os.environ["CARELAKE_CONF"])
    if Path("conf/lake.yaml").exists():
        return Path("conf")
    return PROJECT_ROOT / "conf"


def _yaml(path: Path, *, required: bool = True) -> dict:
    return load_mapping(path, required=required)


def _hospital(path: Path) -> Hospital:
    data = _yaml(path)
    hospital_id = data.get("id")
    if not hospital_id or not isinstance(hospital_id, str):
        raise ConfigError(f"{path}: 'id' is required (a short name such as hosp-a)")
    feeds = []
    for index, raw in enumerate(data.get("feeds") or []):
        where = f"{path}: feeds[{index}]"
        if not isinstance(raw, dict) or raw.get("kind") not in FEED_KINDS:
            raise ConfigError(f"{where}: 'kind' must be one of {', '.join(FEED_KINDS)}")
        if not raw.get("path"):
            raise ConfigError(f"{where}: 'path' is required (a glob under the landing zone)")
        if raw["kind"] in ("csv", "jdbc") and not raw.get("mapping"):
            raise ConfigError(f"{where}: a {raw['kind']} feed needs 'mapping' (a file name in conf/csv_mappings/)")
        options = raw.get("options") or {}
        unknown = sorted(set(options) - FEED_OPTIONS[raw["kind"]]) if isinstance(options, dict) else ["(not a mapping)"]
        if unknown:
            raise ConfigError(f"{where}: unknown options {unknown} for a {raw['kind']} feed; known: {sorted(FEED_OPTIONS[raw['kind']])}")
        if raw["kind"] == "jdbc" and not (options.get("url") or options.get("url_env")):
            raise ConfigError(f"{where}: a jdbc feed needs options.url_env (an environment variable holding the "
                              "database URL) or options.url (without password)")
        feeds.append(Feed(hospital_id, raw["kind"], raw["path"], raw.get("mapping"), dict(options)))
    if not feeds:
        raise ConfigError(f"{path}: 'feeds' is empty; a hospital needs at least one feed")
    return Hospital(hospital_id, data.get("name", hospital_id), tuple(feeds), data.get("schedule", "@daily"), data.get("hl7v2") or {})


def load_config(conf_dir: Path | str | None = None) -> Config:
    """Read every file of `conf_dir` and check that they fit together."""
    conf_dir = Path(conf_dir) if conf_dir else default_conf_dir()
    if not conf_dir.is_dir():
        raise ConfigError(f"configuration folder {conf_dir} does not exist")
    hospitals = tuple(_hospital(p) for p in sorted((conf_dir / "hospitals").glob("*.yaml")))
    ids = [h.id for h in hospitals]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{conf_dir / 'hospitals'}: hospital ids must be unique, found {ids}")
    mappings = {p.stem: _yaml(p) for p in sorted((conf_dir / "csv_mappings").glob("*.yaml"))}
    for feed in (f for h in hospitals for f in h.feeds):
        if feed.mapping and feed.mapping not in mappings:
            raise ConfigError(f"hospital {feed.hospital}: csv mapping {feed.mapping!r} not found in {conf_dir / 'csv_mappings'}")
    views = {}
    for path in sorted((conf_dir / "views").glob("*.json")):
        try:
            views[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    lake = _yaml(conf_dir / "lake.yaml")
    zones = {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports", **(lake.get("zones") or {})}
    try:
        terminology = Terminology.from_csv_files(sorted((conf_dir / "terminology").glob("*.csv")))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    concept_maps = {}
    for path in sorted((conf_dir / "terminology").glob("*.json")):
        concept_maps.update(load_concept_map(path))
    if concept_maps:
        terminology = Terminology({**concept_maps, **terminology.entries})
    expectations = lake.get("expectations")
    return Config(
        conf_dir=conf_dir,
        hospitals=hospitals,
        zones=zones,
        deid=_yaml(conf_dir / "deid.yaml"),
        regions=(_yaml(conf_dir / "regions.yaml", required=False).get("regions") or []),
        terminology=terminology,
        csv_mappings=mappings,
        views=views,
        engine=engine_settings(conf_dir),
        expectations_dir=(conf_dir / expectations) if expectations else PROJECT_ROOT / "expectations",
        linkage=load_linkage(conf_dir),
    )


def load_concept_map(path: Path) -> dict:
    """A FHIR ConceptMap (JSON) as terminology entries: (source system, code) -> target `Concept`.

    Only ``equivalent``/``equal``/``wider``/``relatedto`` (or no relationship) targets are used: a
    ``narrower``, ``inexact`` or ``unmatched`` target would change what the code means.
    """
    from transforms.terminology import Concept

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("resourceType") != "ConceptMap":
        raise ConfigError(f"{path}: expected a FHIR ConceptMap (resourceType ConceptMap)")
    entries = {}
    for index, group in enumerate(data.get("group") or []):
        source, target = group.get("source"), group.get("target")
        if not source or not target:
            raise ConfigError(f"{path}: group[{index}] needs 'source' and 'target' code systems")
        for element in group.get("element") or []:
            for t in element.get("target") or []:
                if t.get("equivalence", "equivalent") in ("equivalent", "equal", "wider", "relatedto") and t.get("code"):
                    entries[(source, element["code"])] = Concept(target, t["code"], t.get("display"))
                    break
    return entries


_LINKAGE_FIELDS = ("national_id", "mrn", "family", "given", "birth_date", "birth_date_unordered", "sex",
                   "postal_code", "hospital")


def load_linkage(conf_dir: Path) -> dict:
    """conf/linkage.yaml (else the project's): ordered rules, national id systems; checked here."""
    path = conf_dir / "linkage.yaml"
    if not path.exists():
        path = PROJECT_ROOT / "conf" / "linkage.yaml"
    data = _yaml(path, required=False)
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{path}: 'rules' must be a list of {{name, fields}}")
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not rule.get("name") or not isinstance(rule.get("fields"), list) or not rule["fields"]:
            raise ConfigError(f"{path}: rules[{index}] needs 'name' and a non-empty list 'fields'")
        unknown = sorted(set(rule["fields"]) - set(_LINKAGE_FIELDS))
        if unknown:
            raise ConfigError(f"{path}: rules[{index}] ({rule['name']}) has unknown fields {unknown}; known: {list(_LINKAGE_FIELDS)}")
    systems = data.get("national_id_systems") or []
    if not isinstance(systems, list):
        raise ConfigError(f"{path}: 'national_id_systems' must be a list of identifier system URIs")
    return {"rules": rules, "national_id_systems": systems, "source": str(path)}
