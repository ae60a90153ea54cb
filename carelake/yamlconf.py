"""Read one YAML file of conf/ that must hold a mapping; light enough for DAG parse time (PyYAML only)."""

from __future__ import annotations

from pathlib import Path

import yaml

from carelake.errors import ConfigError

__all__ = ["load_mapping"]


def load_mapping(path: Path, *, error: type[ConfigError] = ConfigError, required: bool = True) -> dict:
    """The mapping in `path` ({} for an empty or, unless `required`, a missing file); `error` otherwise."""
    if not path.exists():
        if required:
            raise error(f"{path} is missing")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping at the top level, found {type(data).__name__}")
    return data
