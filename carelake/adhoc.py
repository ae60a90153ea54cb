"""Ad-hoc runs: `carelake run --feed HOSPITAL=KIND:PATH ...` on inputs given on the command line.

Everything but the hospitals comes from the conf folder (engine, lake zones, de-identification, views,
regions, linkage, terminology, csv mappings); the hospitals are made from the ``--feed`` options in
memory, so nothing is written to conf/. PATH is read in place, wherever it is.

- ``hl7v2:PATH``, ``fhir:PATH``: a file, a glob, or a folder (every file under it, recursively).
- ``csv:PATH``: a folder of CSV files; the layout is detected by header among the conf's csv mappings
  (the built-in Synthea layout and the demo layouts his-a/b/c). ``csv:PATH@MAPPING`` names it instead.
- ``jdbc:MAPPING@ENV``: the tables or queries of conf/csv_mappings/MAPPING.yaml, read from the database
  whose URL is in the environment variable ENV (a URL carries a password: never on the command line).
- ``fhir-rest:URL`` or ``fhir-rest:URL@ENV``: pull a FHIR server (search over the types the FHIR feed
  maps; a URL ending in ``/$export`` means a Bulk Data export) with the bearer token in the environment
  variable ENV, into ``adhoc/HOSPITAL/fhir-rest`` under the working directory's landing zone.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from carelake.config import Config, Feed, Hospital, load_config
from carelake.errors import ConfigError
from carelake.hospital_conf import check_feed

__all__ = ["parse_feed", "adhoc_config", "detect_csv_mapping", "ADHOC_KINDS"]

ADHOC_KINDS = ("hl7v2", "csv", "fhir", "jdbc", "fhir-rest")
_SPEC = re.compile(r"(?P<hospital>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<kind>[a-z0-9-]+):(?P<path>.+)")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def detect_csv_mapping(folder: Path, mappings: dict[str, dict]) -> str:
    """The name of the first csv mapping whose files in `folder` all have the headers it expects."""
    from transforms.csv_feed import header_matches

    for name, mapping in sorted(mappings.items()):
        entities = mapping.get("entities") or {}
        present = [(spec, folder / spec["file"]) for spec in entities.values() if spec.get("file") and (folder / spec["file"]).exists()]
        if not present:
            continue
        ok = True
        for spec, path in present:
            with open(path, newline="", encoding=mapping.get("encoding", "utf-8"), errors="replace") as handle:
                header = next(csv.reader(handle, delimiter=mapping.get("delimiter", ",")), [])
            header = [h.strip().lstrip("\ufeff") for h in header]
            if not header_matches(header, spec):
                ok = False
                break
        if ok:
            return name
    raise ConfigError(f"{folder}: no csv mapping in conf/csv_mappings fits these files' headers; "
                      f"name one with csv:{folder}@MAPPING (known: {', '.join(sorted(mappings))})")


def parse_feed(spec: str, mappings: dict[str, dict]) -> Feed:
    """One ``HOSPITAL=KIND:PATH`` option as a `Feed`."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None or match["kind"] not in ADHOC_KINDS:
        raise ConfigError(f"--feed {spec!r}: expected HOSPITAL=KIND:PATH with KIND one of {', '.join(ADHOC_KINDS)}")
    hospital, kind, path = match["hospital"], match["kind"], match["path"]
    if kind == "jdbc":
        mapping, _, env = path.partition("@")
        if mapping not in mappings or not env:
            raise ConfigError(f"--feed {hospital}=jdbc:{path}: expected jdbc:MAPPING@ENV_VAR with MAPPING in conf/csv_mappings")
        return Feed(hospital, "jdbc", f"adhoc-{mapping}", mapping, {"url_env": env})
    if kind == "fhir-rest":
        return _fhir_rest_feed(hospital, path)
    mapping = None
    if kind == "csv" and "@" in path:
        path, mapping = path.rsplit("@", 1)
    target = Path(path).expanduser().resolve()
    if kind == "csv":
        if not target.is_dir():
            raise ConfigError(f"--feed {hospital}=csv:{path}: not a folder")
        if mapping is None:
            mapping = detect_csv_mapping(target, mappings)
        elif mapping not in mappings:
            raise ConfigError(f"--feed {hospital}=csv:...@{mapping}: no such mapping in conf/csv_mappings")
        return Feed(hospital, "csv", str(target), mapping)
    if target.is_dir():
        pattern = str(target / "**" / ("*.*json" if kind == "fhir" else "*"))
    elif target.exists() or any(ch in path for ch in "*?["):
        pattern = str(target) if target.exists() else str(Path(path).expanduser().absolute())
    else:
        raise ConfigError(f"--feed {hospital}={kind}:{path}: no such file or folder")
    return Feed(hospital, kind, pattern)


def _fhir_rest_feed(hospital: str, spec: str) -> Feed:
    url, _, env = spec.rpartition("@")
    if not url or not _ENV.fullmatch(env):  # no @ENV: the whole spec is the URL
        url, env = spec, ""
    options = {"url": url.rstrip("/")}
    if options["url"].endswith("/$export"):
        options = {"url": options["url"], "mode": "bulk"}
    if env:
        options["auth_env"] = env
    feed = check_feed({"kind": "fhir-rest", "path": f"adhoc/{hospital}/fhir-rest", "options": options},
                      f"--feed {hospital}=fhir-rest:...")
    return Feed(hospital, "fhir-rest", feed.path, None, feed.options)


def adhoc_config(conf_dir: Path | str | None, feeds: list[str]) -> Config:
    """The conf folder's settings with hospitals made from `feeds` (``HOSPITAL=KIND:PATH``)."""
    base = load_config(conf_dir)
    by_hospital: dict[str, list[Feed]] = {}
    for spec in feeds:
        feed = parse_feed(spec, base.csv_mappings)
        by_hospital.setdefault(feed.hospital, []).append(feed)
    hospitals = tuple(Hospital(h, h, tuple(f)) for h, f in by_hospital.items())
    return replace(base, hospitals=hospitals)
