"""End-to-end throughput and memory of carelake, side by side with a naive baseline (issue #8).

    python -m bench --patients N [--hospitals H] [--volume V] [--engines sail[,spark]] [--rounds R]
                    [--no-baseline | --baseline-records N] [--workdir DIR] [--keep] [--json]

1. Generates the synthetic region with `carelake.demo.prepare_demo` (all three feed kinds). `--volume V`
   makes each person's history V times as long as the generator's default (1-6 encounters with 0-8
   labs per person and hospital), by drawing V encounter lists per person: the default V=8 gives tens
   of encounters and about a hundred lab results per person and hospital, over years.
2. Runs every stage on the embedded Sail engine in one `carelake.pipeline.run_pipeline` call (what
   `carelake run` does) with a throw-away key, and reports per stage: records in, resources out, wall seconds, CPU
   seconds of the whole process tree, resources/s, and peak RSS of the process tree (the Sail server
   and the UDF workers are in it), sampled every 0.1 s with psutil.
3. The naive baseline, on the same landing files: the obvious per-record Python loop (split, map,
   validate every resource with fhir.resources, keep the latest resource per id, evaluate the views,
   de-identify, write with deltalake). Its `resources` are distinct resources kept, as carelake's are.
   `--baseline-records N` runs it on a uniform random sample of N records instead of all of them.
4. With `--engines sail,spark` and Java present: the same transforms on classic PySpark (local[2], no
   Delta jars, so Parquet) in a child process (`bench/spark_child.py`).

`--json` prints one JSON object as the last line. Benchmarks are not tests: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- measuring ------------------------------------------------------------------------------------


class TreeMonitor:
    """Peak RSS (MiB) of this process and all its descendants, sampled in a background thread; beside
    the tree's, the peaks of this process alone (`client_peak`: the pipeline's client, the in-process
    engine with it) and of its largest descendant (`worker_peak`: a UDF worker), which say where a
    tree's peak sits.

    Measuring runs inside the measured process, so it must cost the run little. Listing the tree reads
    every process of the machine (psutil scans /proc), and each read hands the GIL to the run's
    threads and waits to get it back: 130 readings at a run's step ends took 1.9 s of a 10.6 s run
    (20 patients), and the sampling thread forced as many switches on the run's threads. So the tree
    is listed again only every `relist` seconds, each reading reads only the listed processes' own
    files, and a step's end (`step_done`, `sampled_cpu_seconds`) takes the background thread's last
    figures, at most `interval` old; the stage boundaries and the run's start and end read afresh
    (`cpu_seconds`, `reset_peak`). A process started since the last listing counts from the next.
    """

    def __init__(self, interval: float = 0.1, relist: float = 0.5):
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval, self.relist = interval, relist
        self._procs: list | None = None
        self._listed = 0.0
        self.peak = self.overall_peak = self.step_peak = 0.0
        self.client_peak = self.worker_peak = 0.0
        self._last_rss, self._last_cpu = 0.0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> list:
        """This process and its descendants, as listed at most `relist` seconds ago."""
        now = time.monotonic()
        if self._procs is None or now - self._listed >= self.relist:
            procs = [self._me]
            try:
                procs += self._me.children(recursive=True)
            except self._psutil.Error:
                pass
            self._procs, self._listed = procs, now
        return self._procs

    def _sample(self) -> tuple[float, float, float]:
        """(the tree's RSS, this process's, the largest descendant's), MiB."""
        total = own = largest = 0
        for proc in self.tree():
            try:
                rss = proc.memory_info().rss
            except self._psutil.Error:
                continue
            total += rss
            if proc is self._me:
                own = rss
            else:
                largest = max(largest, rss)
        return total / 2**20, own / 2**20, largest / 2**20

    def sampled_cpu_seconds(self) -> float:
        """`cpu_seconds` as the background thread last read it (at most `interval` old)."""
        return self.cpu_seconds() if self._last_cpu is None else self._last_cpu

    def cpu_seconds(self) -> float:
        """User + system CPU of the live tree, plus what finished children used."""
        total = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
                if proc is self._me:
                    total += times.children_user + times.children_system
            except self._psutil.Error:
                pass
        return total

    def reset_peak(self) -> None:
        """Start a new peak (a stage's); `overall_peak` keeps the run's."""
        self.peak, self.client_peak, self.worker_peak = self._sample()
        self.overall_peak = max(self.overall_peak, self.peak)

    def step_done(self) -> float:
        """The peak since the last call (a step's, for `bench.stages`), and start the next; from the
        background thread's samples, the last of them included."""
        peak, self.step_peak = max(self.step_peak, self._last_rss), 0.0
        return peak

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now, own, worker = self._sample()
            self._last_rss, self._last_cpu = now, self.cpu_seconds()
            self.peak, self.step_peak = max(self.peak, now), max(self.step_peak, now)
            self.client_peak, self.worker_peak = max(self.client_peak, own), max(self.worker_peak, worker)
            self.overall_peak = max(self.overall_peak, self.peak)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- generating -----------------------------------------------------------------------------------


def generate(workdir: Path, *, patients: int, hospitals: int, volume: int, seed: int) -> Path:
    """The demo's landing files and conf/, with `volume` times the default history per person."""
    from carelake import synth
    from carelake.demo import prepare_demo

    original = synth._encounters

    def longer(rng, person, counters, *args, **kwargs):
        found = [e for _ in range(volume) for e in original(rng, person, counters, *args, **kwargs)]
        return sorted(found, key=lambda e: e.start)

    synth._encounters = longer  # the bench's own scale knob; the generator stays as the demo knows it
    try:
        return prepare_demo(workdir, hospitals=hospitals, patients=patients, seed=seed)
    finally:
        synth._encounters = original


def generate_apart(workdir: Path, **options) -> Path:
    """`generate` in a child process: the heap the generator leaves behind (a few GiB at 25,000 patients)
    must not count in the pipeline's peak RSS, which is measured on this process's tree."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bench import __main__ as importable  # run as `python -m bench`, this module is not importable as __main__

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(importable.generate, workdir, **options).result()


# -- carelake on the embedded engine --------------------------------------------------------------


def _table_rows(path: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_dataset().count_rows() if (path / "_delta_log").is_dir() else 0


def _zone_rows(lake, prefix: str) -> int:
    return sum(t.rows for t in lake.tables() if t.name.startswith(prefix))


#: the runner's line at the end of each step (carelake.context.Progress): label, seconds, detail
STEP_DONE = "%s done in %.1fs%s"


class StepLog(logging.Handler):
    """Splits one pipeline run into its stages: the runner's "stage <name> starts" lines close the
    previous stage's figures (wall, CPU of the process tree, peak RSS), and its "<step> done in <s>s"
    lines show where each stage's time went."""

    def __init__(self, monitor: TreeMonitor):
        super().__init__(logging.INFO)
        self.monitor = monitor
        self.stages: dict[str, dict] = {}
        self._current: str | None = None
        self._started = self._cpu = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "stage %s starts (run %s)":
            self.close()
            self._current = str(record.args[0])
            self._started, self._cpu = time.monotonic(), self.monitor.cpu_seconds()
            self.monitor.reset_peak()
            self.stages[self._current] = {"steps": {}}
        elif record.msg == STEP_DONE and len(record.args) >= 2 and self._current:
            self.stages[self._current]["steps"][str(record.args[0])] = round(float(record.args[1]), 1)

    def close(self) -> None:
        if self._current:
            self.stages[self._current].update({
                "seconds": round(time.monotonic() - self._started, 2),
                "cpu_seconds": round(self.monitor.cpu_seconds() - self._cpu, 1), "peak_rss_mb": round(self.monitor.peak),
                "client_peak_rss_mb": round(self.monitor.client_peak), "worker_peak_rss_mb": round(self.monitor.worker_peak)})
            self._current = None


def run_carelake(conf: Path, workdir: Path, monitor: TreeMonitor, *, stages: list[str] | None = None, full: bool = False,
                 handlers: tuple[logging.Handler, ...] = ()) -> dict:
    """All stages (or `stages`) in one `run_pipeline` call, as `carelake run` does; the figures of each
    stage from its log lines, which `handlers` see too. The engine's start is in the total, before the
    first stage."""
    from carelake.config import load_config
    from carelake.lake import Lake
    from carelake.pipeline import STAGES, run_pipeline

    config = load_config(conf)
    lake = Lake.from_config(config, workdir)
    total_started, total_cpu = time.monotonic(), monitor.cpu_seconds()
    steps = StepLog(monitor)
    logger = logging.getLogger("carelake")
    for handler in (steps, *handlers):
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        summary = run_pipeline(config, workdir, list(stages or STAGES), triggered_by="bench", full=full)
    finally:
        steps.close()
        for handler in (steps, *handlers):
            logger.removeHandler(handler)
    seconds, cpu_seconds = time.monotonic() - total_started, monitor.cpu_seconds() - total_cpu
    per_stage, error = steps.stages, summary.error
    if error:
        per_stage.setdefault(error.split(":", 1)[0], {})["error"] = error

    bronze = _table_rows(lake.path("bronze.records"))
    silver = _zone_rows(lake, "silver.")
    gold = _zone_rows(lake, "gold.")
    marts = _zone_rows(lake, "marts.")
    counts = {"ingest": (None, bronze), "normalize": (bronze, silver), "validate": (silver, silver),
              "curate": (silver, gold), "marts": (gold, marts)}
    for stage, figures in per_stage.items():
        records_in, out = counts[stage]
        figures.update({"records_in": records_in, "rows_out": out})
        # "resources" is the unit of the targets: resources normalized to silver
        figures["resources_per_s"] = round(silver / figures["seconds"]) if stage != "ingest" and figures["seconds"] else None
    figures_total = {
        "engine": "sail", "bronze_records": bronze, "resources": silver, "gold_rows": gold, "mart_rows": marts,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
        "resources_per_s": round(silver / seconds) if seconds else None,
        "resources_per_cpu_s": round(silver / cpu_seconds) if cpu_seconds else None,
        "stages": per_stage, "error": error,
    }
    return figures_total


# -- JVM Spark in a child process -----------------------------------------------------------------


def run_spark_child(conf: Path, out_dir: Path) -> dict:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return {"skipped": "no Java on this machine"}
    command = [sys.executable, "-m", "bench.spark_child", "--conf", str(conf), "--out", str(out_dir)]
    # the parent's Spark Connect session marks the environment as connect-only; the child is classic
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE")}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"spark child exited {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(lines[-1])


# -- main -----------------------------------------------------------------------------------------


def machine() -> dict:
    import psutil

    from carelake.engine import DEFAULT_ENGINE_MEMORY_MB

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "load_average_1m": round(os.getloadavg()[0], 1),
            "engine_memory_mb": int(os.environ.get("CARELAKE_ENGINE_MEMORY_MB") or DEFAULT_ENGINE_MEMORY_MB),
            "udf_processes": _udf_processes(), "mappers": _compiled_status()}


def _compiled_status() -> str:
    """"compiled" where the UDF workers run the mypyc build of the mappers, else why not (`transforms._compiled`)."""
    from transforms import _compiled

    return _compiled.status


def _udf_processes() -> int:
    """The worker pool size the embedded engine's stages use (`transforms.arrow.udf_processes`)."""
    import pysail.spark  # noqa: F401 - the pool is for the process that hosts the Sail server

    from transforms.arrow import udf_processes

    return udf_processes()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--volume", type=int, default=8, help="history length, times the generator's default")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engines", default="sail", help="comma-separated: sail, spark")
    parser.add_argument("--rounds", type=int, default=2,
                        help="carelake runs, each on a fresh copy of the landing, between pieces of the baseline")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-records", type=int, default=None,
                        help="run the naive baseline on a random sample of this many records (its rate is what counts)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    from carelake.keys import KEY_ENV, throwaway_key

    from bench.baseline import BaselineChild

    os.environ.setdefault(KEY_ENV, throwaway_key())
    os.environ.setdefault("RUST_LOG", "error")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="carelake-bench-"))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                    "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "patients": args.patients, "hospitals": args.hospitals, "volume": args.volume}
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    rounds = args.rounds if "sail" in engines else 0
    baseline = None
    try:
        started = time.monotonic()
        conf = generate_apart(workdir / "run", patients=args.patients, hospitals=args.hospitals, volume=args.volume, seed=args.seed)
        result["generate_seconds"] = round(time.monotonic() - started, 1)
        say(f"generated {args.patients} patients x {args.hospitals} hospitals (volume {args.volume}) in {result['generate_seconds']} s")
        if rounds > 1:  # each round starts from the same landing, before the first round writes a lake
            shutil.copytree(workdir / "run", workdir / "untouched", symlinks=True)
        if not args.no_baseline:
            # B C B C ... B: the baseline's pieces bracket carelake's rounds, so both meet the same
            # machine; this machine's speed drifts by 10-30 % within minutes
            baseline = BaselineChild(conf, workdir / "baseline-out", pieces=rounds + 1, limit=args.baseline_records, seed=args.seed)
            baseline.run_piece()
        runs = []
        for number in range(1, rounds + 1):
            run_dir = workdir / ("run" if number == 1 else f"run-{number}")
            if number > 1:
                shutil.copytree(workdir / "untouched", run_dir, symlinks=True)
            figures = run_round(run_dir)
            runs.append(figures)
            for stage, f in figures["stages"].items():
                say(f"  {stage:10s} in {f['records_in'] or '-':>9} out {f['rows_out']:>9}  {f['seconds']:8.1f} s"
                    f"  cpu {f['cpu_seconds']:7.1f} s  peak {f['peak_rss_mb']:6d} MiB"
                    f" (client {f.get('client_peak_rss_mb', 0):6d}, a worker {f.get('worker_peak_rss_mb', 0):5d})")
            say(f"sail, round {number}: {figures['resources']} resources in {figures['seconds']} s = {figures['resources_per_s']}/s "
                f"({figures['resources_per_cpu_s']}/cpu-s), peak RSS {figures['peak_rss_mb']} MiB" + (f", ERROR {figures['error']}" if figures["error"] else ""))
            if number > 1:
                shutil.rmtree(run_dir, ignore_errors=True)
            if number == rounds and "spark" in engines:
                result["spark"] = run_spark_child(conf, workdir / "spark-out")
                say(f"spark: {result['spark']}")
            if baseline is not None:
                done = baseline.run_piece()
                if done is not None:
                    result["baseline"] = done
        if "spark" in engines and not rounds:
            result["spark"] = run_spark_child(conf, workdir / "spark-out")
            say(f"spark: {result['spark']}")
        if baseline is not None and "baseline" not in result:
            result["baseline"] = baseline.run_piece()
        if runs:
            result["sail"] = _over_rounds(runs)
        if result.get("baseline"):
            b = result["baseline"]
            say(f"baseline ({b['pieces']} pieces): {b['resources']} resources in {b['seconds']} s = {b['resources_per_s']}/s")
    finally:
        if baseline is not None and baseline.process.poll() is None:
            baseline.process.kill()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(workdir / "untouched", ignore_errors=True)

    sail = result.get("sail") or {}
    result["resources"] = sail.get("resources")
    result["seconds"] = sail.get("seconds")
    result["resources_per_s"] = sail.get("resources_per_s")
    result["peak_rss_mb"] = sail.get("peak_rss_mb")
    result["load_average_1m_end"] = round(os.getloadavg()[0], 1)
    result["stages"] = sail.get("stages")
    if result.get("baseline"):
        result["baseline_resources_per_s"] = result["baseline"]["resources_per_s"]
        if sail.get("resources_per_s") and result["baseline_resources_per_s"]:
            result["speedup_vs_baseline"] = round(sail["resources_per_s"] / result["baseline_resources_per_s"], 2)
            if result["baseline"].get("resources_per_cpu_s") and sail.get("resources_per_cpu_s"):
                # under load from other processes wall time says more about the neighbours than about
                # carelake; CPU seconds of the process tree do not
                result["cpu_efficiency_vs_baseline"] = round(sail["resources_per_cpu_s"] / result["baseline"]["resources_per_cpu_s"], 2)
            say(f"speed-up over the naive baseline: {result['speedup_vs_baseline']}x")
    if args.json:
        print(json.dumps(result, default=str))
    return result


def run_round(run_dir: Path) -> dict:
    """One carelake run over `run_dir` (all stages), in a process of its own (`bench.stages --json`):
    each round starts the engine, its UDF workers and the imports afresh, as a `carelake run` does,
    and its peak RSS is its own process tree's."""
    from carelake.pipeline import STAGES

    done = subprocess.run([sys.executable, "-m", "bench.stages", str(run_dir), *STAGES, "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the carelake round in {run_dir} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def _over_rounds(runs: list[dict]) -> dict:
    """carelake's figures over its rounds: the first round's stages and counts, the mean wall and CPU
    seconds, the highest peak; each round's own totals under "rounds"."""
    first = runs[0]
    seconds = sum(r["seconds"] for r in runs) / len(runs)
    cpu = sum(r["cpu_seconds"] for r in runs) / len(runs)
    return {**first, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "resources_per_s": round(first["resources"] / seconds) if seconds else None,
            "resources_per_cpu_s": round(first["resources"] / cpu) if cpu else None,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "error": next((r["error"] for r in runs if r["error"]), None),
            "rounds": [{k: r[k] for k in ("resources", "seconds", "cpu_seconds", "resources_per_s", "peak_rss_mb")} for r in runs]}


if __name__ == "__main__":
    main()
