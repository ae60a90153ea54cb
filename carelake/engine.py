"""The one place that hands out a SparkSession.

``kind`` comes from ``conf/engine.yaml`` (overridable by ``CARELAKE_ENGINE``):

- ``sail`` (default): an embedded Sail Spark Connect server, started once per process on a free
  loopback port and stopped at exit. No JVM; Delta read/write/MERGE built in.
- ``spark-connect``: an existing Spark 4 cluster at ``CARELAKE_SPARK_REMOTE`` / ``spark_connect.url``.
- ``spark``: classic PySpark with delta-spark, its jars fetched by ``configure_spark_with_delta_pip``
  (needs a Maven repository) or already on the cluster's classpath (``delta_jars: cluster``).

Nothing else in carelake builds a session: every runner calls `get_spark`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from carelake.errors import ConfigError, EngineError

__all__ = ["EngineSettings", "get_spark", "stop_spark", "engine_settings", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("sail", "spark-connect", "spark")
#: The embedded engine's memory pool limit (MiB) unless CARELAKE_ENGINE_MEMORY_MB says otherwise.
DEFAULT_ENGINE_MEMORY_MB = 1536
#: Rows per engine batch unless SAIL_EXECUTION__BATCH_SIZE says otherwise (Sail's own default: 8,192).
ENGINE_BATCH_ROWS = 2048
#: Session settings every kind gets unless conf/engine.yaml's `conf` says otherwise. PySpark's DataFrame
#: debugging records the Python call site of every `pyspark.sql.functions` call (it walks the stack and,
#: each time, tries to import IPython): about 35 us per call against 8, and each query carries the sites.
#: The pipeline and Great Expectations make about 4,500 such calls per run; carelake's own errors name the
#: stage, table and record instead.
DEFAULT_CONF = {"spark.python.sql.dataFrameDebugging.enabled": "false"}

_lock = threading.Lock()
_session = None
_server = None
_settings_in_use: "EngineSettings | None" = None


@dataclass(frozen=True)
class EngineSettings:
    kind: str = "sail"
    remote: str = "sc://localhost:15002"
    master: str = "local[2]"
    delta_jars: str = "pip"
    conf: dict = field(default_factory=dict)


def engine_settings(conf_dir: Path | None = None, env: dict | None = None) -> EngineSettings:
    """Read ``engine.yaml`` from `conf_dir` (if any), then apply the environment overrides."""
    env = os.environ if env is None else env
    data: dict = {}
    if conf_dir is not None and (Path(conf_dir) / "engine.yaml").exists():
        data = yaml.safe_load((Path(conf_dir) / "engine.yaml").read_text()) or {}
    kind = env.get("CARELAKE_ENGINE") or data.get("kind") or "sail"
    if kind not in KINDS:
        raise ConfigError(f"engine kind {kind!r} is not one of {', '.join(KINDS)} (conf/engine.yaml or CARELAKE_ENGINE)")
    return EngineSettings(
        kind=kind,
        remote=env.get("CARELAKE_SPARK_REMOTE") or (data.get("spark_connect") or {}).get("url") or "sc://localhost:15002",
        master=env.get("CARELAKE_SPARK_MASTER") or (data.get("spark") or {}).get("master") or "local[2]",
        delta_jars=(data.get("spark") or {}).get("delta_jars") or "pip",
        conf={str(k): str(v) for k, v in (data.get("conf") or {}).items()},
    )


def get_spark(settings: EngineSettings | None = None):
    """The process's SparkSession, created on first call with `settings` (default: sail)."""
    global _session, _settings_in_use
    with _lock:
        settings = settings or _settings_in_use or EngineSettings()
        if _session is not None:
            if settings.kind != _settings_in_use.kind:
                raise EngineError(f"a {_settings_in_use.kind} session is already running; stop it before asking for {settings.kind}")
            return _session
        builder = {"sail": _sail, "spark-connect": _spark_connect, "spark": _classic}[settings.kind]
        _session = builder(settings)
        _settings_in_use = settings
        atexit.register(stop_spark)
        return _session


def stop_spark() -> None:
    """Stop the session and, for sail, the embedded server. Safe to call twice."""
    global _session, _server, _settings_in_use
    with _lock:
        if _session is not None:
            try:
                _session.stop()
            except Exception:  # a session already gone is not an error at shutdown
                log.debug("spark session stop failed", exc_info=True)
        if _server is not None:
            _server.stop()
        _session = _server = _settings_in_use = None


def _apply_conf(builder, settings: EngineSettings):
    for key, value in {**DEFAULT_CONF, **settings.conf}.items():
        builder = builder.config(key, value)
    return builder


def _sail(settings: EngineSettings):
    global _server
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    # Sail logs every session at INFO on stderr; carelake reports its own progress. RUST_LOG wins.
    os.environ.setdefault("RUST_LOG", "error")
    # Sail drops a session idle for a while; a pipeline can spend minutes in Python between queries.
    os.environ.setdefault("SAIL_SPARK__SESSION_TIMEOUT_SECS", "86400")
    # Sail's memory pool is unbounded by default: sorts, windows, aggregations and joins of a large run
    # hold whatever they need. A "fair" pool with a limit makes the spillable operators (sort, window,
    # aggregate, repartition) spill to temporary files instead, so the engine's share of memory stays
    # bounded as data grows. CARELAKE_ENGINE_MEMORY_MB sets the limit; Sail's own SAIL_RUNTIME__* win.
    # Not spillable (a hash join's build side) still needs its memory: the limit must leave room for it.
    limit_mb = int(os.environ.get("CARELAKE_ENGINE_MEMORY_MB") or DEFAULT_ENGINE_MEMORY_MB)
    os.environ.setdefault("SAIL_RUNTIME__MEMORY_POOL__TYPE", "fair")
    os.environ.setdefault("SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE", str(limit_mb * 2**20))
    # Batches of 2,048 rows, not 8,192: a batch of silver rows carries their FHIR JSON, megabytes per
    # column buffer, and the engine's allocator keeps freed buffers that size a while before it gives
    # them back. Writing silver at 50,000 patients peaked at 2.0 instead of 3.0 GiB, and whole runs at
    # 4,000 patients were no slower (docs/performance.md, "Smaller engine batches").
    os.environ.setdefault("SAIL_EXECUTION__BATCH_SIZE", str(ENGINE_BATCH_ROWS))
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    _server = server
    _, port = server.listening_address
    log.info("embedded Sail engine listening on 127.0.0.1:%s", port)
    session = _apply_conf(SparkSession.builder.remote(f"sc://127.0.0.1:{port}"), settings).getOrCreate()
    if os.environ.get("CARELAKE_ENGINE_REATTACH") != "1":
        # Reattachable execution lets a client resume a result stream that a network broke, at the cost
        # of more calls per query (reattach, release). Over loopback to a server in this very process
        # there is no network to break: a trivial query took 4.1-4.8 ms with it and 1.8-2.1 ms without
        # (CPU 5.2-6.0 against 2.1-2.4 ms), and a run sends some 650 queries and writes.
        session.client.disable_reattachable_execute()
    return session


def _spark_connect(settings: EngineSettings):
    from pyspark.sql import SparkSession

    try:
        return _apply_conf(SparkSession.builder.remote(settings.remote), settings).getOrCreate()
    except Exception as exc:
        raise EngineError(f"cannot reach Spark Connect at {settings.remote}: {exc}") from exc


def _classic(settings: EngineSettings):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master).appName("carelake")
    builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension").config(
        "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    )
    builder = _apply_conf(builder, settings)
    if settings.delta_jars == "pip":
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    try:
        return builder.getOrCreate()
    except Exception as exc:
        raise EngineError(f"classic Spark with Delta could not start (master {settings.master}): {exc}") from exc
