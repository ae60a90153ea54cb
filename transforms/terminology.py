"""Local codes to standard ones (LOINC, ICD-10, SNOMED CT).

Maps are data in ``conf/terminology/*.csv`` with the columns
``source_system,source_code,target_system,target_code,target_display``; `carelake.config` loads them
into a `Terminology`. A code without a mapping is kept with its local system and counted, not dropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Terminology", "Concept", "COLUMNS"]

COLUMNS = ("source_system", "source_code", "target_system", "target_code", "target_display")


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str | None = None

    def coding(self) -> dict:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


@dataclass(frozen=True)
class Terminology:
    """Lookup table (source_system, source_code) -> standard `Concept`."""

    entries: dict[tuple[str, str], Concept] = field(default_factory=dict)

    def translate(self, system: str, code: str) -> Concept | None:
        return self.entries.get((system, code))

    @classmethod
    def from_csv_files(cls, paths: list[Path]) -> "Terminology":
        entries: dict[tuple[str, str], Concept] = {}
        for path in paths:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = set(COLUMNS) - set(reader.fieldnames or ())
                if missing:
                    raise ValueError(f"{path}: terminology map lacks columns {sorted(missing)}; expected {list(COLUMNS)}")
                for row in reader:
                    entries[(row["source_system"], row["source_code"])] = Concept(
                        row["target_system"], row["target_code"], row["target_display"] or None
                    )
        return cls(entries)

    def to_rows(self) -> list[tuple[str, str, str, str, str | None]]:
        return [(s, c, t.system, t.code, t.display) for (s, c), t in sorted(self.entries.items())]
