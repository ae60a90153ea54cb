"""Shared fixtures: one embedded Sail session for the whole test run, paths to external data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTDATA = (ROOT.parent / "shared" / "extdata").resolve()

# Great Expectations phones home by default; tests run offline.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def extdata(*parts: str) -> Path:
    """Path inside ../shared/extdata, skipping the calling test when it is absent."""
    path = EXTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"external test data not found at {path} (expected ../shared/extdata beside the project)")
    return path


def run_in_small_pool(script: str, *args: str, pool_mb: int, cwd) -> "subprocess.CompletedProcess":
    """Run Python `script` (source text) with `args` in a child process whose embedded engine has a
    memory pool of `pool_mb` MiB: a fresh server, not this process's session or pool."""
    import subprocess
    import sys

    env = {**os.environ, "CARELAKE_ENGINE_MEMORY_MB": str(pool_mb), "PYTHONPATH": str(ROOT)}
    for name in list(env):
        if name.startswith("SAIL_RUNTIME__") or name in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
            del env[name]
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def spark():
    """The process-wide session from carelake.engine (embedded Sail), as the pipeline uses it."""
    from carelake.engine import get_spark, stop_spark

    session = get_spark()
    yield session
    stop_spark()


TEST_KEY = "test-key-0123456789abcdef-0123456789abcdef"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, spark):
    """One `carelake demo` run with defaults (3 hospitals, 1000 patients), shared by the end-to-end tests."""
    from carelake.demo import run_demo

    workdir = tmp_path_factory.mktemp("demo") / "home"
    os.environ["CARELAKE_DEID_KEY"] = TEST_KEY
    summary, made_key = run_demo(workdir)
    assert not made_key
    return workdir, summary


@pytest.fixture()
def demo_ctx(demo_run, tmp_path, spark):
    """A RunContext over a private copy of the shared demo's working directory: the test may change it."""
    import shutil

    from carelake.config import load_config
    from carelake.context import RunContext
    from carelake.lake import Lake

    home = tmp_path / "home"
    shutil.copytree(demo_run[0], home)
    config = load_config(home / "conf")
    return RunContext(config, Lake.from_config(config, home), spark)
