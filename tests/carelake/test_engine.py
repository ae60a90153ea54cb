from pathlib import Path

import pytest

from carelake.engine import EngineSettings, engine_settings, get_spark
from carelake.errors import ConfigError, EngineError

ROOT = Path(__file__).resolve().parents[2]


def test_default_engine_is_embedded_sail():
    assert engine_settings(ROOT / "conf", env={}).kind == "sail"


def test_environment_overrides_conf():
    settings = engine_settings(ROOT / "conf", env={"CARELAKE_ENGINE": "spark-connect", "CARELAKE_SPARK_REMOTE": "sc://cluster:15002"})
    assert (settings.kind, settings.remote) == ("spark-connect", "sc://cluster:15002")


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="engine kind 'flink' is not one of sail, spark-connect, spark"):
        engine_settings(None, env={"CARELAKE_ENGINE": "flink"})


def test_session_is_shared_and_runs_sql(spark):
    assert get_spark() is spark
    assert spark.sql("SELECT 40 + 2 AS x").collect()[0].x == 42


def test_the_session_records_no_python_call_sites(spark):
    # on, every pyspark.sql.functions call walks the stack (DEFAULT_CONF)
    from pyspark.errors.utils import is_debugging_enabled

    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    assert is_debugging_enabled() is False


def test_the_embedded_engine_is_queried_without_reattachable_execution(spark):
    # loopback to a server in this process: nothing to reattach to, and each query made more calls
    assert spark.client._use_reattachable_execute is False
    assert spark.range(3).count() == 3


def test_conf_settings_override_the_defaults():
    from carelake.engine import DEFAULT_CONF, _apply_conf

    class Builder:
        def __init__(self):
            self.conf = {}

        def config(self, key, value):
            self.conf[key] = value
            return self

    settings = EngineSettings(kind="sail", conf={"spark.python.sql.dataFrameDebugging.enabled": "true", "a": "b"})
    assert _apply_conf(Builder(), settings).conf == {**DEFAULT_CONF, "spark.python.sql.dataFrameDebugging.enabled": "true", "a": "b"}


def test_asking_for_another_kind_while_running_fails(spark):
    with pytest.raises(EngineError, match="already running"):
        get_spark(EngineSettings(kind="spark-connect"))


def _delta_jars_available() -> str | None:
    """Why classic Spark with Delta cannot run here, or None when it can."""
    import glob
    import os

    ivy = os.path.expanduser("~/.ivy2*/jars/io.delta_delta-spark_*.jar")
    if glob.glob(ivy) or os.environ.get("CARELAKE_TEST_CLASSIC_SPARK"):
        return None
    return "Delta jars are not in the local Ivy cache and this machine reaches no Maven repository; set CARELAKE_TEST_CLASSIC_SPARK=1 where it does"


def test_classic_spark_with_delta_writes_and_reads(tmp_path):
    reason = _delta_jars_available()
    if reason:
        pytest.skip(reason)
    import subprocess
    import sys

    # A classic session cannot share the process with the Spark Connect client session; run it apart.
    code = (
        "from carelake.engine import get_spark, EngineSettings;"
        "s = get_spark(EngineSettings(kind='spark'));"
        f"s.range(3).write.format('delta').save('{tmp_path}/t');"
        f"print(s.read.format('delta').load('{tmp_path}/t').count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip().splitlines()[-1] == "3", out.stderr[-2000:]


def test_the_embedded_engine_has_a_bounded_memory_pool(spark):
    """Sail's pool is unbounded by default; carelake starts it with a fair pool and a limit (see
    docs/performance.md, Memory). The limit is read when the server starts, so it is set in the
    environment first, like RUST_LOG."""
    import os

    from carelake.engine import DEFAULT_ENGINE_MEMORY_MB

    assert os.environ["SAIL_RUNTIME__MEMORY_POOL__TYPE"] == "fair"
    expected = int(os.environ.get("CARELAKE_ENGINE_MEMORY_MB") or DEFAULT_ENGINE_MEMORY_MB) * 2**20
    assert int(os.environ["SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE"]) == expected
    assert spark.range(100_000).orderBy("id", ascending=False).first()["id"] == 99_999


def test_the_embedded_engine_hands_on_batches_of_at_most_its_batch_rows(spark):
    """Smaller batches than Sail's default keep what the engine's allocator holds down (see
    carelake.engine); the setting must reach the engine, which a UDF sees in the batches it gets."""
    import os

    from carelake.engine import ENGINE_BATCH_ROWS

    limit = int(os.environ.get("SAIL_EXECUTION__BATCH_SIZE") or ENGINE_BATCH_ROWS)

    def sizes(batches):
        import pyarrow as pa

        for batch in batches:
            yield pa.RecordBatch.from_pydict({"rows": [batch.num_rows]})

    got = [r["rows"] for r in spark.range(0, 20_000, 1, 1).mapInArrow(sizes, "rows long").collect()]
    assert sum(got) == 20_000 and max(got) <= limit  # Sail alone makes batches of 8,192
