"""Time some stages on a lake that a bench run kept: for A/B runs of two code trees on the same input.

    python -m bench.stages WORKDIR STAGE [STAGE ...] [--full] [--json]

WORKDIR is a bench working directory's ``run`` folder (``python -m bench --keep --workdir W`` leaves
``W/run``), or a copy of it; the stages run there with a throw-away key unless CARELAKE_DEID_KEY is
set. Prints, per stage, wall and CPU seconds of the process tree and peak RSS, then each step's wall
seconds with the CPU seconds, from the start to the step's end, of the client process (Sail runs
inside it) and of the UDF workers, and the process tree's peak RSS since the step before (which
holds any work between the two). ``--full`` makes normalize map every record again. ``--remap``
first gives every record in phi.record_status a mapping fingerprint no code produces (not timed), so
that normalize re-maps every record into the existing silver, as after a change of mapper code. ``--json``
prints the figures as one JSON object on stdout (the rest on stderr): `python -m bench` runs each of
its rounds this way, in a process of its own.

To compare two trees, run each from its own checkout (``cd TREE && python -m bench.stages ...``: the
UDF workers import what the parent imports) on fresh copies of one kept lake, alternating A and B:
the machine's speed drifts by 10-30 % within minutes, so one run of each says little.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from bench.__main__ import STEP_DONE, TreeMonitor, run_carelake


class _StepCpu(logging.Handler):
    """At each "<step> done" line: CPU seconds since the handler was made, of this process and of its
    children (the UDF workers), and the process tree's peak RSS since the step before.

    Read without touching /proc in the run's thread (see `TreeMonitor`): this process's CPU from the
    clock, the tree's from the monitor's last sample, at most its interval old (so the workers' share
    of a step is good to about 0.1 s of two cores)."""

    def __init__(self, monitor: TreeMonitor):
        super().__init__(logging.INFO)
        self.monitor, self.lines = monitor, []
        self.start = self._now()

    def _now(self) -> tuple[float, float]:
        return time.process_time(), self.monitor.sampled_cpu_seconds()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == STEP_DONE and len(record.args) >= 2:
            own, total = self._now()
            own -= self.start[0]
            others = max(0.0, total - self.start[1] - own)  # the two readings are a moment apart
            self.lines.append((str(record.args[0]), float(record.args[1]), own, others, self.monitor.step_done()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("stages", nargs="+")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--remap", action="store_true", help="mark every record's mapping stale first (a re-map)")
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object on stdout, the rest on stderr")
    args = parser.parse_args(argv)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print

    from carelake.keys import KEY_ENV, throwaway_key

    os.environ.setdefault(KEY_ENV, throwaway_key())
    os.environ.setdefault("RUST_LOG", "error")
    if args.remap:
        say(f"marked {mark_stale(args.workdir)} records' mapping stale")
    with TreeMonitor() as monitor:
        cpu = _StepCpu(monitor)
        result = run_carelake(args.workdir / "conf", args.workdir, monitor, stages=args.stages, full=args.full, handlers=(cpu,))
    result["peak_rss_mb"] = round(monitor.overall_peak)
    for name, figures in result["stages"].items():
        say(f"{name}: {figures['seconds']} s, cpu {figures['cpu_seconds']} s, peak {figures['peak_rss_mb']} MiB "
            f"(client {figures['client_peak_rss_mb']}, a worker {figures['worker_peak_rss_mb']})")
    say(f"{'wall s':>7} {'client cpu':>10} {'workers cpu':>11} {'peak MiB':>8}  step")
    for step, wall, own, others, peak in cpu.lines:
        say(f"{wall:7.1f} {own:10.1f} {others:11.1f} {peak:8.0f}  {step}")
    say(f"total {result['seconds']} s, cpu {result['cpu_seconds']} s" + (f", ERROR {result['error']}" if result["error"] else ""))
    if args.json:
        print(json.dumps(result))
    return result


def mark_stale(workdir: Path) -> int:
    """Give every record in the lake's phi.record_status a mapping fingerprint that no code produces, so
    that the next normalize maps every record again and merges into the existing silver. Returns how many
    records phi.record_status holds."""
    from pyspark.sql import functions as F

    from carelake.config import load_config
    from carelake.engine import get_spark
    from carelake.lake import Lake

    spark, lake = get_spark(), Lake.from_config(load_config(workdir / "conf"), workdir)
    status = lake.read(spark, "phi.record_status")
    lake.overwrite(status.withColumn("mapping", F.lit("stale")), "phi.record_status", partition_by=["hospital"])
    return lake.read(spark, "phi.record_status").count()


if __name__ == "__main__":
    main()
