"""Disaster recovery: a table's history and its restore to an earlier version (delta-rs).

Every write is a Delta commit, so each table keeps its earlier versions until a vacuum removes their
files (carelake.maintenance keeps at least 7 days). `restore` adds a new commit whose content is that
of the chosen version: history is never rewritten, and a restore can itself be undone.

Gold and marts need no backup of their own: they are derived from silver, and
``carelake run --stage curate --stage marts`` derives them again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from carelake.errors import CarelakeError
from carelake.lake import Lake

__all__ = ["history", "restore_table", "RestoreError"]


class RestoreError(CarelakeError):
    """The table or the version to restore does not exist, or its files were vacuumed."""


def _table(lake: Lake, table: str):
    from deltalake import DeltaTable

    if table.startswith("staging."):
        raise RestoreError(f"{table}: staging tables are private to a run and are not restored")
    if not lake.exists(table):
        raise RestoreError(f"{table} does not exist at {lake.path(table)}; `carelake tables` lists the tables")
    return DeltaTable(str(lake.path(table)))


def history(lake: Lake, table: str) -> list[dict]:
    """Versions of `table`, newest first: version, timestamp (UTC), operation, rows after the commit."""
    dt = _table(lake, table)
    out = []
    for entry in dt.history():
        version = entry.get("version")
        stamp = entry.get("timestamp")
        when = datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat(timespec="seconds") if stamp else None
        out.append({"version": version, "timestamp": when, "operation": entry.get("operation")})
    return out


def restore_table(lake: Lake, table: str, version: int) -> dict:
    """Make `version` the current content of `table` (a new commit); returns old and new versions."""
    from deltalake import DeltaTable

    dt = _table(lake, table)
    current = dt.version()
    if version < 0 or version > current:
        raise RestoreError(f"{table} has versions 0..{current}; version {version} does not exist")
    if version == current:
        return {"table": table, "restored_to": version, "from_version": current, "new_version": current}
    try:
        dt.restore(version)
    except Exception as exc:
        raise RestoreError(f"{table}: version {version} cannot be restored ({type(exc).__name__}); its files may have been "
                           "vacuumed — `carelake lake history` shows what is left") from None
    return {"table": table, "restored_to": version, "from_version": current,
            "new_version": DeltaTable(str(lake.path(table))).version()}
