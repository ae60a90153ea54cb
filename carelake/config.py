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
from carelake.hospital_conf import FEED_KINDS, FEED_OPTIONS, check_mappings_exist, check_unique_ids, read_hospital
from carelake.yamlconf import load_mapping
from transforms.terminology import Terminology

__all__ = [
    "Feed", "Hospital", "Config", "load_config", "default_conf_dir", "FEED_KINDS", "FEED_OPTIONS", "PROJECT_ROOT",
    "load_linkage", "load_concept_map",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# FEED_KINDS, FEED_OPTIONS: defined with the hospital-file rules (carelake.hospital_conf), which the
# Airflow DAG factory shares.


@dataclass(frozen=True)
class Feed:
    """One delivery channel of a hospital.

    `path`: a glob (csv: a folder) under landing, or an absolute path read in place; for jdbc the
    database is in `options` (``url`` or ``url_env``) and `path` names the feed (a label, also the
    key of its watermarks in phi.feed_state); for fhir-rest `path` is the folder under landing the
    pulls are written to (and the key of its marks). `mapping`: a conf/csv_mappings name (csv, jdbc).
    `options`: kind-specific settings (`FEED_OPTIONS`).
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


def _hospital_of(conf) -> Hospital:
    """A checked conf/hospitals/<id>.yaml (carelake.hospital_conf: the rules the DAG factory applies too)."""
    feeds = tuple(Feed(conf.id, f.kind, f.path, f.mapping, dict(f.options)) for f in conf.feeds)
    return Hospital(conf.id, conf.name, feeds, conf.schedule if conf.schedule_set else "@daily", conf.hl7v2)


def load_config(conf_dir: Path | str | None = None) -> Config:
    """Read every file of `conf_dir` and check that they fit together."""
    conf_dir = Path(conf_dir) if conf_dir else default_conf_dir()
    if not conf_dir.is_dir():
        raise ConfigError(f"configuration folder {conf_dir} does not exist")
    confs = [read_hospital(p) for p in sorted((conf_dir / "hospitals").glob("*.yaml"))]
    check_unique_ids(confs)
    check_mappings_exist(confs, conf_dir / "csv_mappings")
    hospitals = tuple(_hospital_of(c) for c in confs)
    mappings = {p.stem: _yaml(p) for p in sorted((conf_dir / "csv_mappings").glob("*.yaml"))}
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
