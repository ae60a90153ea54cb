"""The naive baseline: the obvious per-record Python pipeline that carelake is compared with (issue #8).

    python -m bench.baseline CONF OUT [--pieces K] [--records N] [--seed S]

Run by `python -m bench` in a child process, in K pieces with carelake's runs between them (B C B C B):
this machine's speed drifts by 10-30 % within minutes, and a baseline that ran only after carelake saw
another machine than carelake did. The pieces split the same work, in the same order, as one pass: the
child keeps its state while it waits, and its clock and its CPU only count the pieces. Protocol on the
child's stdio: after each piece but the last it prints ``paused <piece>`` and waits for a line on stdin;
at the end it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_baseline(conf: Path, out_dir: Path, *, limit: int | None = None, seed: int = 7, pieces: int = 1,
                 pause: Callable[[int], None] = lambda piece: None) -> dict:
    """The obvious per-record pipeline: a Python loop on the driver over every record and resource.

    Like carelake's silver it keeps the latest resource per id (a dict, as such a script would), so
    `resources` counts what carelake's figure counts: distinct resources kept, not every copy of a
    Patient that each HL7 v2 message repeats. With `limit`, it runs on a uniform random sample of that
    many records (drawn before the clock starts, so the feeds' mix is the input's); a sample repeats
    fewer ids than the whole input and its split is not timed, both in the baseline's favour.

    `pieces` > 1 cuts the records into that many runs of consecutive files (of about equal bytes; of
    equal counts for a sample) and calls `pause(piece)` after each but the last, off the clock; the
    views, de-identification and writes belong to the last piece.
    """
    from deltalake import write_deltalake
    import pyarrow as pa

    from carelake.config import load_config
    from carelake.curate import deid_policy
    from carelake.ingest import landing_files
    from carelake.lake import Lake
    from carelake.normalize import mapping_for
    from transforms import deid
    from transforms.fhir_validate import validate
    from transforms.ingest import split_file
    from transforms.record_rows import RESOURCE_TABLES, _resources
    from transforms.sqlonfhir import compile_view

    config = load_config(conf)
    lake = Lake.from_config(config, conf.parent)
    mapping = mapping_for(config)
    policy = deid_policy(config, datetime.now(timezone.utc).date())
    tables = {}
    for name, table_policy in (config.deid.get("tables") or {}).items():
        view = config.views[table_policy.get("source", name)]
        lines = [(l["column"], l["action"], l.get("as", l["column"])) for l in table_policy["columns"] if l["action"] != "drop"]
        tables.setdefault(view["resource"], []).append((name, compile_view(view), lines))

    files = landing_files(config.feeds, lake.landing, config.csv_mappings)
    if limit:
        sample = _sample((row for landing in files for row in split_file(landing)), limit, seed)
        parts: list[Iterable[dict]] = [sample[len(sample) * i // pieces:len(sample) * (i + 1) // pieces] for i in range(pieces)]
    else:
        parts = [(row for landing in group for row in split_file(landing)) for group in _by_bytes(files, pieces)]

    seconds = cpu = 0.0
    records = 0
    silver: dict[str, dict] = {}
    for piece, part in enumerate(parts, start=1):
        started, cpu_started = time.monotonic(), time.process_time()
        for row in part:
            records += 1
            try:
                found = _resources(row, mapping)
                for resource in found:
                    validate(resource)
            except Exception:
                continue  # quarantined: the baseline only counts what it keeps
            for resource in found:
                table = RESOURCE_TABLES.get(resource.get("resourceType"))
                if table is not None:  # a later delivery of the same id replaces the earlier one
                    silver.setdefault(table, {})[resource["id"]] = (row["hospital"], row["record_id"], resource)
        if piece < len(parts):
            seconds, cpu = seconds + time.monotonic() - started, cpu + time.process_time() - cpu_started
            pause(piece)
    gold: dict[str, list] = {}
    for table, kept in silver.items():
        rows = []
        for hospital, record_id, resource in kept.values():
            text = json.dumps(resource, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            rows.append({"id": resource["id"], "hospital": hospital, "record_id": record_id, "resource": text})
            for name, compiled, lines in tables.get(resource["resourceType"], []):
                for flat in compiled.evaluate(json.loads(text)):
                    flat = {**flat, "hospital": hospital, "person_key": resource.get("id")}
                    gold.setdefault(name, []).append(
                        {out: deid._apply(action, flat.get(column), policy, flat.get("person_key")) for column, action, out in lines})
        write_deltalake(str(out_dir / "silver" / table), pa.Table.from_pylist(rows), mode="overwrite")
    for name, rows in gold.items():
        table = pa.Table.from_pylist([{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows])
        write_deltalake(str(out_dir / "gold" / name), table, mode="overwrite")
    seconds, cpu = seconds + time.monotonic() - started, cpu + time.process_time() - cpu_started
    resources = sum(map(len, silver.values()))
    return {"records": records, "limited_to": limit, "pieces": len(parts), "resources": resources,
            "gold_rows": sum(map(len, gold.values())), "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "resources_per_s": round(resources / seconds) if seconds else None,
            "resources_per_cpu_s": round(resources / cpu) if cpu else None}


def _by_bytes(files: list[dict], pieces: int) -> list[list[dict]]:
    """`files` cut into `pieces` runs of consecutive files of about equal bytes (a file goes to the
    piece its middle byte falls in), so the pieces keep one pass's order."""
    sizes = [_file_bytes(f) for f in files]
    total = sum(sizes) or 1
    groups: list[list[dict]] = [[] for _ in range(pieces)]
    before = 0
    for landing, size in zip(files, sizes):
        groups[min(pieces - 1, int((before + size / 2) * pieces / total))].append(landing)
        before += size
    return groups


def _file_bytes(landing: dict) -> int:
    path = Path(landing["path"])
    if landing.get("entity"):  # a CSV export: the folder, with the entity's file in its options
        path = path / json.loads(landing["options"])["entities"][landing["entity"]]["file"]
    return path.stat().st_size


def _sample(rows, size: int, seed: int) -> list:
    """A uniform random sample of `size` rows in their input order (reservoir sampling, one pass)."""
    import random

    chosen: list = []
    draw = random.Random(seed)
    for seen, row in enumerate(rows):
        if seen < size:
            chosen.append((seen, row))
        elif (slot := draw.randrange(seen + 1)) < size:
            chosen[slot] = (seen, row)
    return [row for _, row in sorted(chosen, key=lambda pair: pair[0])]


class BaselineChild:
    """`python -m bench.baseline` in a child process, driven piece by piece from the bench: its memory
    and CPU stay out of the tree the bench measures for carelake (`pid` is what to leave out)."""

    def __init__(self, conf: Path, out_dir: Path, *, pieces: int, limit: int | None, seed: int):
        import subprocess

        command = [sys.executable, "-m", "bench.baseline", str(conf), str(out_dir), "--pieces", str(pieces), "--seed", str(seed)]
        if limit:
            command += ["--records", str(limit)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        self._paused = False

    def run_piece(self) -> dict | None:
        """Let the child run its next piece; None when it paused, its figures when it finished."""
        if self._paused:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        self._paused = line.startswith("paused")
        if self._paused:
            return None
        if self.process.wait() != 0 or not line.strip():
            raise RuntimeError(f"the baseline child failed (exit {self.process.returncode}); its errors are above")
        return json.loads(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("conf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pieces", type=int, default=1)
    parser.add_argument("--records", type=int, default=None, help="a uniform random sample of this many records")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    # the protocol keeps stdout to itself: whatever else writes there (Python or native code) goes to stderr
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def pause(piece: int) -> None:
        print(f"paused {piece}", file=protocol, flush=True)
        sys.stdin.readline()

    result = run_baseline(args.conf, args.out, limit=args.records, seed=args.seed, pieces=args.pieces, pause=pause)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    print(json.dumps(result), file=protocol, flush=True)


if __name__ == "__main__":
    main()
