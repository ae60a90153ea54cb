"""Helpers of the reliability tests: small generated regions, child runs, table snapshots."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
KEY = "test-key-0123456789abcdef-0123456789abcdef"
#: Not compared between runs: the audit has one row per run by design.
RUN_TABLES = {"phi.audit"}


def prepare_region(workdir: Path, *, seed: int = 11, hospitals: int = 2, patients: int = 60) -> Path:
    from carelake.demo import prepare_demo

    return prepare_demo(workdir, hospitals=hospitals, patients=patients, seed=seed)


def clone(src: Path, dst: Path) -> Path:
    """A copy that keeps file times: bronze keeps each file's modification time as received_at."""
    shutil.copytree(src, dst, copy_function=shutil.copy2, symlinks=True)
    return dst


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELAKE_FAULT")}
    env.update({"CARELAKE_DEID_KEY": KEY, "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}, **extra)
    return env


class Child:
    """A pipeline run in its own process group: its engine's worker processes die with it.

    Output goes to files, not pipes: a killed child's orphaned workers would keep a pipe open.
    """

    def __init__(self, workdir: Path, stages: str, *, hospitals: str | None = None, **env: str):
        import tempfile

        args = [sys.executable, str(CHILD), str(workdir), str(workdir / "conf"), stages] + ([hospitals] if hospitals else [])
        self._out = tempfile.TemporaryFile("w+")
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=child_env(**env), stdout=self._out, stderr=self._err,
                                     text=True, start_new_session=True)

    def kill(self) -> None:
        self._killpg(signal.SIGKILL)

    def _killpg(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 600):
        """(returncode, summary or None, stderr) once the child has ended; its workers are reaped."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._killpg(signal.SIGKILL)  # the pool workers of a killed run
        self._out.seek(0)
        self._err.seek(0)
        out, err = self._out.read(), self._err.read()
        summary = next((json.loads(line[8:]) for line in out.splitlines() if line.startswith("SUMMARY ")), None)
        return code, summary, err


def start_child(workdir: Path, stages: str, *, hospitals: str | None = None, **env: str) -> Child:
    return Child(workdir, stages, hospitals=hospitals, **env)


def run_child(workdir: Path, stages: str, *, hospitals: str | None = None, timeout: float = 600, **env: str):
    """Run to the end (or to its fault); returns (returncode, summary dict or None, stderr)."""
    return Child(workdir, stages, hospitals=hospitals, **env).wait(timeout)


def delta_folders(workdir: Path) -> dict[str, Path]:
    """Every Delta table of the phi and curated zones by its table name (staging left out)."""
    from carelake.lake import Lake

    lake = Lake(workdir, {"landing": "landing", "phi": "phi", "curated": "curated", "reports": "reports"})
    return {t.name: Path(t.path) for t in lake.tables()}


def assert_tables_readable(workdir: Path) -> dict[str, int]:
    """Each table opens with delta-rs at a committed version and reads whole; returns versions."""
    from deltalake import DeltaTable

    versions = {}
    for name, folder in delta_folders(workdir).items():
        table = DeltaTable(str(folder))
        table.to_pyarrow_table()  # every file the log names must exist and be readable
        versions[name] = table.version()
    return versions


def snapshot(workdir: Path) -> dict[str, list]:
    """Table -> its rows, sorted (order within a Delta table is not part of its content)."""
    from deltalake import DeltaTable

    out = {}
    for name, folder in delta_folders(workdir).items():
        if name in RUN_TABLES:
            continue
        rows = DeltaTable(str(folder)).to_pyarrow_table().to_pylist()
        out[name] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def diff(a: dict[str, list], b: dict[str, list]) -> list[str]:
    problems = [f"{t}: only in one run" for t in sorted(set(a) ^ set(b))]
    for table in sorted(set(a) & set(b)):
        if a[table] != b[table]:
            only_a, only_b = set(a[table]) - set(b[table]), set(b[table]) - set(a[table])
            problems.append(f"{table}: {len(a[table])} vs {len(b[table])} rows, {len(only_a)} / {len(only_b)} differ")
    return problems
