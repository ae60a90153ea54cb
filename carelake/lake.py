"""Zones, table paths and Delta I/O.

A table is named ``<layer>.<name>``; the layer decides its zone and folder:

============  ========  ====================
layer         zone      folder
============  ========  ====================
bronze        phi       phi/bronze/<name>
silver        phi       phi/silver/<name>
phi           phi       phi/<name>  (quarantine, person_xref, record_status, audit)
staging       phi       phi/_staging/<name>  (gold before the quality gate lets it out)
gold          curated   curated/gold/<name>
marts         curated   curated/marts/<name>
============  ========  ====================

Writes are idempotent: `merge` upserts on a key and rewrites a row only when it changed; `overwrite`
replaces a whole table or one partition.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from carelake.config import Config
from carelake.errors import ConfigError

__all__ = ["Lake", "TableInfo", "LAYERS", "default_workdir"]

LAYERS = {
    "bronze": ("phi", "bronze"),
    "silver": ("phi", "silver"),
    "phi": ("phi", ""),
    "staging": ("phi", "_staging"),
    "gold": ("curated", "gold"),
    "marts": ("curated", "marts"),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def default_workdir() -> Path:
    return Path(os.environ.get("CARELAKE_HOME") or "carelake-home")


@dataclass(frozen=True)
class TableInfo:
    name: str
    zone: str
    path: str
    rows: int
    version: int


@dataclass(frozen=True)
class Lake:
    """The zones of one working directory, as `conf/lake.yaml` lays them out."""

    workdir: Path
    zones: dict[str, str]

    @classmethod
    def from_config(cls, config: Config, workdir: Path | str | None = None) -> "Lake":
        return cls(Path(workdir or default_workdir()).resolve(), dict(config.zones))

    def zone(self, zone: str) -> Path:
        if zone not in self.zones:
            raise ConfigError(f"unknown zone {zone!r}; zones: {', '.join(self.zones)}")
        root = Path(self.zones[zone])
        return root if root.is_absolute() else self.workdir / root

    @property
    def landing(self) -> Path:
        return self.zone("landing")

    @property
    def reports(self) -> Path:
        return self.zone("reports")

    def zone_of(self, table: str) -> str:
        layer, _ = self._split(table)
        return LAYERS[layer][0]

    def path(self, table: str) -> Path:
        """Folder of `table`; a curated table can never resolve inside the phi zone, nor the reverse."""
        layer, name = self._split(table)
        zone, folder = LAYERS[layer]
        path = self.zone(zone) / folder / name
        other = self.zone("phi" if zone == "curated" else "curated").resolve()
        if other == path.resolve() or other in path.resolve().parents:
            raise ConfigError(f"table {table} would be written inside the {('phi' if zone == 'curated' else 'curated')} zone ({path}); give the zones separate roots in conf/lake.yaml")
        return path

    def exists(self, table: str) -> bool:
        return (self.path(table) / "_delta_log").is_dir()

    @staticmethod
    def _split(table: str) -> tuple[str, str]:
        layer, _, name = table.partition(".")
        if layer not in LAYERS or not _NAME.match(name):
            raise ValueError(f"table name {table!r} must be <layer>.<name> with layer one of {', '.join(LAYERS)}")
        return layer, name

    # -- reading and writing ------------------------------------------------------------------

    def read(self, spark, table: str, *, version: int | None = None):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(str(self.path(table)))

    def overwrite(self, df, table: str, *, partition_by: list[str] | None = None, replace_where: str | None = None) -> None:
        """Replace the table (or, with `replace_where`, the rows of one partition) by `df`."""
        writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if replace_where and self.exists(table):
            writer = writer.option("replaceWhere", replace_where)
        writer.save(str(self.path(table)))

    def merge(self, spark, df, table: str, *, keys: list[str], partition_by: list[str] | None = None,
              delete_when: str | None = None, insert_when: str | None = None, update: bool = True) -> None:
        """Upsert `df` into `table` on `keys`; a matched row is rewritten only when a column changed.

        `df` must hold each key once. `delete_when` / `insert_when` are SQL conditions on the source
        (alias ``s``) that delete matched rows or limit which unmatched rows are inserted.
        """
        if not self.exists(table):
            rows = df.alias("s").filter(insert_when).select(*df.columns) if insert_when else df
            writer = rows.write.format("delta").mode("overwrite")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.save(str(self.path(table)))
            return
        view = f"carelake_src_{abs(hash((table, id(df)))) % 10**12}"
        df.createOrReplaceTempView(view)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in df.columns if c not in keys)
        clauses = []
        if delete_when:
            clauses.append(f"WHEN MATCHED AND ({delete_when}) THEN DELETE")
        if update and changed:
            clauses.append(f"WHEN MATCHED AND ({changed}) THEN UPDATE SET *")
        clauses.append(f"WHEN NOT MATCHED {('AND (' + insert_when + ')') if insert_when else ''} THEN INSERT *")
        spark.sql(f"MERGE INTO delta.`{self.path(table)}` AS t USING {view} AS s ON {on} " + " ".join(clauses)).collect()
        spark.catalog.dropTempView(view)

    # -- listing ------------------------------------------------------------------------------

    def tables(self, zones: tuple[str, ...] = ("phi", "curated")) -> list[TableInfo]:
        """Every Delta table in `zones`, with row counts read from the Delta log (no engine needed)."""
        from deltalake import DeltaTable

        found = []
        for zone in zones:
            root = self.zone(zone)
            if not root.exists():
                continue
            for log in sorted(root.rglob("_delta_log")):
                folder = log.parent
                relative = folder.relative_to(root).parts
                if relative and relative[0] == "_staging":
                    continue
                name = _table_name(zone, relative)
                table = DeltaTable(str(folder))
                found.append(TableInfo(name, zone, str(folder), _row_count(table), table.version()))
        return found


def _table_name(zone: str, parts: tuple[str, ...]) -> str:
    if len(parts) == 2 and parts[0] in LAYERS:
        return f"{parts[0]}.{parts[1]}"
    return f"{'phi' if zone == 'phi' else 'curated'}.{'/'.join(parts)}"


def _row_count(table) -> int:
    """Rows from the file statistics in the Delta log; scans only when a writer left no statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    actions = pa.table(table.get_add_actions(flatten=True))
    if "num_records" in actions.column_names and actions.column("num_records").null_count == 0:
        return int(pc.sum(actions.column("num_records")).as_py() or 0)
    return table.to_pyarrow_dataset().count_rows()
