"""The quality officer's one-page run report, and the history of runs it draws its trends from.

At the end of every run (`carelake.pipeline.run_pipeline`) `write_run_report` gathers counts only:

- per hospital and feed: bronze records in, normalized, quarantined (bronze.records, phi.record_status);
- quarantined records by hospital, feed, error code and reason (phi.quarantine);
- per table: rows (per hospital where the table has a ``hospital`` column), expectations evaluated,
  failed by severity, and each failed expectation with its sample ids (``reports/validation/<run>/``);

appends them to the history (`HISTORY`, a Delta table in the reports zone: it holds counts, ids of
failing rows and expectation names, never a field value, so it needs no phi-zone protection), and
renders ``reports/runs/<run_id>/report.html`` plus a copy at ``reports/latest.html``. The page is
self-contained: inline CSS, inline SVG charts, no script, no network.

Reads the Delta tables with delta-rs, so rendering needs no engine.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from carelake.quality import CRITICAL, QualityReport, load_report

__all__ = ["HISTORY", "HISTORY_SCHEMA", "TREND_RUNS", "write_run_report", "collect", "record_history", "read_history", "render", "report_path"]

log = logging.getLogger(__name__)

HISTORY = "history"
"""Folder of the history Delta table inside the reports zone."""
TREND_RUNS = 30
"""How many past runs the trend charts show."""

HISTORY_SCHEMA = [
    ("run_id", "string"), ("finished_at", "string"), ("status", "string"), ("verdict", "string"),
    ("scope", "string"), ("hospital", "string"), ("feed", "string"), ("table_name", "string"),
    ("rows_in", "int64"), ("rows_passed", "int64"), ("quarantined", "int64"),
    ("expectations", "int64"), ("failed_critical", "int64"), ("failed_warning", "int64"),
]


def report_path(reports_dir: Path, run_id: str) -> Path:
    return Path(reports_dir) / "runs" / run_id / "report.html"


# --- gathering ------------------------------------------------------------------------------------


def _delta(path: Path, columns: list[str] | None = None) -> list[dict]:
    from deltalake import DeltaTable

    if not (path / "_delta_log").is_dir():
        return []
    return DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist()


def collect(lake, spark, run_id: str, *, status: str, error: str | None, results: Mapping[str, Any] | None = None,
            finished_at: str | None = None) -> dict[str, Any]:
    """Everything the report shows about one run, as plain data (counts, names and ids only).

    `results` is the run's per-stage results (`RunSummary.results`); it tells which curated layers
    this run published. Counting runs on the engine: bronze can be large.
    """
    from carelake.normalize import outcome_counts

    finished_at = finished_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    # the counts of the conservation check: at 10 M records a join of bronze to phi.record_status held
    # every record id in a hash table (3.2 GiB peak RSS at the end of a 50,000-patient run)
    feeds = {key: {"rows_in": c["bronze"], "normalized": c["normalized"], "quarantined": c["quarantined"]}
             for key, c in outcome_counts(lake, spark).items()}
    reasons: dict[tuple, int] = {}
    if lake.exists("phi.quarantine"):
        grouped = lake.read(spark, "phi.quarantine").groupBy("hospital", "feed", "stage", "error_code", "reason").count()
        reasons = {(r["hospital"], r["feed"], r["stage"], r["error_code"], r["reason"]): r["count"] for r in grouped.collect()}

    try:
        quality = load_report(lake.reports, run_id)
    except Exception:  # no table was validated in this run (e.g. only ingest ran)
        quality = QualityReport(run_id=run_id)
    tables: dict[str, dict[str, Any]] = {}
    for info in lake.tables():
        if not info.name.startswith(("silver.", "gold.", "marts.")):
            continue
        df = lake.read(spark, info.name)
        per_hospital = {r["hospital"]: r["count"] for r in df.groupBy("hospital").count().collect()} if "hospital" in df.columns else {}
        tables[info.name] = {"rows": info.rows, "per_hospital": dict(per_hospital), "validated": False,
                             "expectations": 0, "failed_critical": 0, "failed_warning": 0, "failures": []}
    for outcome in quality.results:
        entry = tables.setdefault(outcome.table, {"rows": None, "per_hospital": {}, "validated": False, "expectations": 0,
                                                  "failed_critical": 0, "failed_warning": 0, "failures": []})
        entry["validated"] = True
        entry["expectations"] += 1
        if not outcome.success:
            entry["failed_critical" if outcome.severity == CRITICAL else "failed_warning"] += 1
            entry["failures"].append(outcome.to_dict())
    verdict = quality.verdict if quality.results else "none"
    return {
        "run_id": run_id, "finished_at": finished_at, "status": status, "error": error, "verdict": verdict,
        "published": [layer for stage, layer in (("curate", "gold"), ("marts", "marts"))
                      if isinstance((results or {}).get(stage), Mapping) and "error" not in results[stage] and not results[stage].get("skipped")],
        "feeds": [{"hospital": h, "feed": f, **c} for (h, f), c in sorted(feeds.items())],
        "quarantine": [{"hospital": h, "feed": f, "stage": s, "error_code": c, "reason": r, "records": n}
                       for (h, f, s, c, r), n in sorted(reasons.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "", -kv[1]))],
        "tables": dict(sorted(tables.items(), key=lambda kv: (_LAYER_ORDER.get(kv[0].split(".")[0], 9), kv[0]))),
        "expectations": len(quality.results),
        "failed_critical": len(quality.critical_failures),
        "failed_warning": len(quality.warnings),
    }


_LAYER_ORDER = {"phi": 0, "silver": 1, "gold": 2, "marts": 3}


# --- history --------------------------------------------------------------------------------------


def _history_rows(data: Mapping[str, Any]) -> list[dict]:
    base = {"run_id": data["run_id"], "finished_at": data["finished_at"], "status": data["status"], "verdict": data["verdict"]}
    empty = {k: None for k, _ in HISTORY_SCHEMA if k not in base}
    feeds = data["feeds"]
    rows = [{**empty, **base, "scope": "run", "rows_in": sum(f["rows_in"] for f in feeds),
             "rows_passed": sum(f["normalized"] for f in feeds), "quarantined": sum(f["quarantined"] for f in feeds),
             # a run that validated nothing has no failures to chart, rather than zero of them
             **({} if data["verdict"] == "none" else {"expectations": data["expectations"], "failed_critical": data["failed_critical"],
                                                     "failed_warning": data["failed_warning"]})}]
    for f in feeds:
        rows.append({**empty, **base, "scope": "feed", "hospital": f["hospital"], "feed": f["feed"], "rows_in": f["rows_in"],
                     "rows_passed": f["normalized"], "quarantined": f["quarantined"]})
    for name, t in data["tables"].items():
        rows.append({**empty, **base, "scope": "table", "table_name": name, "rows_in": t["rows"],
                     "expectations": t["expectations"] if t["validated"] else None,
                     "failed_critical": t["failed_critical"] if t["validated"] else None,
                     "failed_warning": t["failed_warning"] if t["validated"] else None})
        for hospital, n in sorted(t["per_hospital"].items(), key=lambda kv: str(kv[0])):
            rows.append({**empty, **base, "scope": "table", "table_name": name, "hospital": hospital, "rows_in": n})
    return rows


def record_history(reports_dir: Path, data: Mapping[str, Any]) -> None:
    """Replace this run's rows in the history table (a rerun of a run id does not count twice)."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = Path(reports_dir) / HISTORY
    schema = pa.schema([(name, pa.string() if kind == "string" else pa.int64()) for name, kind in HISTORY_SCHEMA])
    table = pa.Table.from_pylist(_history_rows(data), schema=schema)
    if (path / "_delta_log").is_dir():
        run_id = str(data["run_id"]).replace("'", "''")
        DeltaTable(str(path)).delete(f"run_id = '{run_id}'")
        write_deltalake(str(path), table, mode="append")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(str(path), table, mode="overwrite")


def read_history(reports_dir: Path) -> list[dict]:
    """Every history row, oldest run first."""
    rows = _delta(Path(reports_dir) / HISTORY)
    return sorted(rows, key=lambda r: (r["finished_at"] or "", r["run_id"]))


# --- rendering ------------------------------------------------------------------------------------

_PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626", "#475569")
_VERDICT = {"pass": ("PASS", "#15803d", "#dcfce7"), "warn": ("PASS WITH WARNINGS", "#a16207", "#fef9c3"),
            "fail": ("BLOCKED", "#b91c1c", "#fee2e2"), "none": ("NOT VALIDATED", "#475569", "#e2e8f0")}

_CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#0f172a;margin:0;background:#f1f5f9}
main{max-width:1200px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:26px 0 8px;padding-bottom:4px;border-bottom:1px solid #cbd5e1}
.sub{color:#475569;font-size:13px}.muted{color:#64748b}
.banner{display:flex;align-items:center;gap:18px;padding:14px 18px;border-radius:8px;margin:14px 0;border:1px solid}
.banner b{font-size:20px;letter-spacing:.02em}.banner p{margin:0}
.cards{display:grid;grid-template-columns:repeat(5,1fr);gap:10px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 12px}
.card .n{font-size:22px;font-weight:650}.card .l{color:#475569;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0;border-radius:6px;font-size:13px}
th,td{padding:5px 9px;border-bottom:1px solid #e2e8f0;text-align:left;vertical-align:top}
th{background:#f8fafc;font-weight:600;color:#334155}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fef2f2}tr.warn td{background:#fefce8}
.pill{display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;font-weight:650;text-transform:uppercase}
.pill.critical,.pill.fail{background:#fee2e2;color:#b91c1c}.pill.warning,.pill.warn{background:#fef9c3;color:#a16207}
.pill.pass{background:#dcfce7;color:#15803d}.pill.none{background:#e2e8f0;color:#475569}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}.chart{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 12px}
.chart h3{font-size:13px;margin:0 0 4px}.legend{font-size:12px;color:#334155}.legend span{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
code,.ids{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}.ids{color:#475569;word-break:break-all}
.two{display:grid;grid-template-columns:1fr 1fr;gap:14px}footer{margin-top:26px;color:#64748b;font-size:12px}
a{color:#1d4ed8}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:,}"


def _pct(part: int | None, whole: int | None) -> str:
    if not whole or part is None:
        return "–"
    return f"{100 * part / whole:.2f}%"


def _short(run_id: str, finished_at: str | None) -> str:
    """A run's x-axis label: its finishing time, short enough to fit under a chart."""
    try:
        return dt.datetime.fromisoformat(str(finished_at)).strftime("%m-%d %H:%M")
    except ValueError:
        return run_id[-8:]


def _line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]], *,
                unit: str = "%", percent: bool = False, current: int | None = None) -> str:
    """An inline SVG line chart: one line per series over the runs in `labels`.

    Percent charts zoom onto the band the values live in (a pass rate drifting from 99.9% to 98% must
    be visible), always up to 100; count charts start at 0.
    """
    width, height, left, right, top, bottom = 540, 210, 52, 34, 16, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series.values() for v in s if v is not None]
    if percent:
        high = 100.0
        low = min(values, default=0.0)
        low = 0.0 if low < 50 else max(0.0, _floor_nice(100 - (100 - low) * 1.5 - 0.5))
    else:
        low, high = 0.0, max(4.0, _nice(max(values, default=0.0) * 1.1))  # 4 whole-number steps at least
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h - plot_h * (v - low) / ((high - low) or 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_e(title)}">']
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10" fill="#64748b">{_fmt_axis(v)}{unit}</text>')
    step = max(1, (n + 6) // 7)
    for i, label in enumerate(labels):
        if i % step == 0 or i == n - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="10" fill="#64748b">{_e(label)}</text>')
    if current is not None and 0 <= current < n:
        parts.append(f'<line x1="{x(current):.1f}" x2="{x(current):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#94a3b8" stroke-dasharray="3 3"/>')
        parts.append(f'<text x="{x(current):.1f}" y="{top - 4}" text-anchor="middle" font-size="10" fill="#334155">this run</text>')
    for index, (name, points) in enumerate(series.items()):
        color = _PALETTE[index % len(_PALETTE)]
        coords = [(x(i), y(v)) for i, v in enumerate(points) if v is not None]
        if len(coords) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in coords)}"/>')
        for (a, b), v in zip(coords, [v for v in points if v is not None]):
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"><title>{_e(name)}: {_fmt_axis(v)}{unit}</title></circle>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#94a3b8"/>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{_PALETTE[i % len(_PALETTE)]}"></i>{_e(name)}</span>' for i, name in enumerate(series))
    return f'<div class="chart"><h3>{_e(title)}</h3>{"".join(parts)}<div class="legend">{legend}</div></div>'


def _nice(value: float) -> float:
    """The smallest 1, 2, 4 or 8 times a power of ten at or above `value`: round quarters on the axis."""
    import math

    if value <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 4, 8, 10):
        if value <= m * power + 1e-12:
            return m * power
    return 10 * power


def _floor_nice(value: float) -> float:
    for step in (1, 2, 5, 10):
        if 100 - value <= 4 * step:
            return 100 - 4 * step
    return max(0.0, (value // 10) * 10)


def _fmt_axis(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def _passed(row: dict) -> int | None:
    # History rows of runs that stopped before validation hold no counts (None), not zeros.
    if row["expectations"] is None:
        return None
    return row["expectations"] - (row["failed_critical"] or 0) - (row["failed_warning"] or 0)


def _trends(history: list[dict], run_id: str) -> str:
    runs = [r for r in history if r["scope"] == "run"][-TREND_RUNS:]
    if not runs:
        return '<p class="muted">No history yet.</p>'
    ids = [r["run_id"] for r in runs]
    labels = [_short(r["run_id"], r["finished_at"]) for r in runs]
    current = ids.index(run_id) if run_id in ids else None

    def rate(part, whole):
        return 100 * part / whole if whole and part is not None else None

    by_run_feed = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in history:
        if r["scope"] == "feed" and r["run_id"] in ids:
            counts = by_run_feed[r["hospital"]][r["run_id"]]
            counts[0] += r["quarantined"] or 0
            counts[1] += r["rows_in"] or 0
    quarantine = {h: [rate(*by_run_feed[h][i]) if i in by_run_feed[h] else None for i in ids] for h in sorted(by_run_feed)}
    by_layer = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in history:
        if r["scope"] == "table" and r["hospital"] is None and r["run_id"] in ids and r["expectations"]:
            counts = by_layer[r["table_name"].split(".")[0]][r["run_id"]]
            counts[0] += _passed(r)
            counts[1] += r["expectations"]
    passes = {"all tables": [rate(_passed(r), r["expectations"]) for r in runs]}
    for layer in sorted(by_layer, key=lambda l: _LAYER_ORDER.get(l, 9)):
        passes["conservation" if layer == "phi" else layer] = [rate(*by_layer[layer][i]) if i in by_layer[layer] else None for i in ids]
    failures = {"critical": [r["failed_critical"] for r in runs], "warning": [r["failed_warning"] for r in runs]}
    volume = defaultdict(lambda: defaultdict(int))
    for r in history:
        if r["scope"] == "feed" and r["run_id"] in ids:
            volume[r["hospital"]][r["run_id"]] += r["rows_in"] or 0
    records = {h: [volume[h].get(i) for i in ids] for h in sorted(volume)}
    return "".join([
        '<div class="charts">',
        _line_chart("Expectations passed, by layer", labels, passes, percent=True, current=current),
        _line_chart("Quarantine rate by hospital (quarantined / records in)", labels, quarantine, current=current),
        _line_chart("Failed expectations, by severity", labels, failures, unit="", current=current),
        _line_chart("Records in (bronze), by hospital", labels, records, unit="", current=current),
        "</div>",
        f'<p class="muted">Last {len(runs)} run(s) of the history table (reports/{HISTORY}); a point per run, the dashed line marks this run.</p>',
    ])


def render(data: Mapping[str, Any], history: list[dict], *, links: Mapping[str, str]) -> str:
    """The report page; `links` maps 'data_docs' and 'results' to paths relative to the page."""
    label, fg, bg = _VERDICT.get(data["verdict"], _VERDICT["none"])
    if data["status"] == "failed" and data["verdict"] != "fail":
        label, fg, bg = "RUN FAILED", "#b91c1c", "#fee2e2"
    feeds = data["feeds"]
    total_in = sum(f["rows_in"] for f in feeds)
    total_norm = sum(f["normalized"] for f in feeds)
    total_q = sum(f["quarantined"] for f in feeds)
    if data.get("published"):
        published = f"Published by this run: {' and '.join(data['published'])}."
    elif data["status"] == "failed":
        published = "Nothing was published by this run; the previous release stays current."
    else:
        published = "This run did not publish curated tables (curate and marts did not run)."
    out = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>carelake run {_e(data['run_id'])}: {label}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>carelake run report</h1><div class=\"sub\">run <code>{_e(data['run_id'])}</code> · finished {_e(data['finished_at'])}</div>",
        f'<div class="banner" style="color:{fg};background:{bg};border-color:{fg}33"><b>{label}</b><div>',
        f"<p>{data['failed_critical']} critical and {data['failed_warning']} warning expectation(s) failed, of {data['expectations']} evaluated. {published}</p>",
    ]
    if data.get("error"):
        out.append(f'<p class="ids">{_e(data["error"])}</p>')
    out.append("</div></div>")
    cards = [("records in", _num(total_in)), ("normalized", _num(total_norm)), ("quarantined", f"{_num(total_q)} <span class=\"muted\" style=\"font-size:13px\">{_pct(total_q, total_in)}</span>"),
             ("critical failures", _num(data["failed_critical"])), ("warnings", _num(data["failed_warning"]))]
    out.append('<div class="cards">' + "".join(f'<div class="card"><div class="l">{l}</div><div class="n">{v}</div></div>' for l, v in cards) + "</div>")

    out.append("<h2>Trend over past runs</h2>")
    out.append(_trends(history, data["run_id"]))

    out.append("<h2>Records per hospital and feed</h2>")
    out.append('<table><tr><th>hospital</th><th>feed</th><th class="n">records in</th><th class="n">normalized</th><th class="n">quarantined</th><th class="n">quarantine rate</th><th>balanced</th></tr>')
    for f in feeds:
        balanced = f["rows_in"] == f["normalized"] + f["quarantined"]
        out.append(f'<tr class="{"" if balanced else "bad"}"><td>{_e(f["hospital"])}</td><td>{_e(f["feed"])}</td><td class="n">{_num(f["rows_in"])}</td>'
                   f'<td class="n">{_num(f["normalized"])}</td><td class="n">{_num(f["quarantined"])}</td><td class="n">{_pct(f["quarantined"], f["rows_in"])}</td>'
                   f'<td>{"yes" if balanced else "<b>NO</b>"}</td></tr>')
    out.append("</table>")

    out.append("<h2>Quarantined records by reason</h2>")
    if data["quarantine"]:
        out.append('<table><tr><th>hospital</th><th>feed</th><th>stage</th><th>code</th><th>reason</th><th class="n">records</th></tr>')
        for q in data["quarantine"]:
            out.append(f'<tr><td>{_e(q["hospital"])}</td><td>{_e(q["feed"])}</td><td>{_e(q["stage"])}</td><td><code>{_e(q["error_code"])}</code></td>'
                       f'<td>{_e(q["reason"])}</td><td class="n">{_num(q["records"])}</td></tr>')
        out.append("</table><p class=\"muted\">Inspect with <code>carelake quarantine list</code>; after a mapping fix, <code>carelake quarantine retry</code>.</p>")
    else:
        out.append('<p class="muted">Nothing in quarantine.</p>')

    hospitals = sorted({h for t in data["tables"].values() for h in t["per_hospital"]}, key=str)
    out.append("<h2>Tables</h2>")
    head = "".join(f'<th class="n">{_e(h)}</th>' for h in hospitals)
    out.append(f'<table><tr><th>table</th><th>verdict</th><th class="n">rows</th>{head}<th class="n">expectations</th><th class="n">passed</th><th class="n">critical failed</th><th class="n">warnings failed</th></tr>')
    for name, t in data["tables"].items():
        verdict = ("fail" if t["failed_critical"] else "warn" if t["failed_warning"] else "pass") if t["validated"] else "none"
        cls = {"fail": "bad", "warn": "warn"}.get(verdict, "")
        cells = "".join(f'<td class="n">{_num(t["per_hospital"].get(h))}</td>' for h in hospitals)
        passed = t["expectations"] - t["failed_critical"] - t["failed_warning"] if t["validated"] else None
        out.append(f'<tr class="{cls}"><td><code>{_e(name)}</code></td><td><span class="pill {verdict}">{"not validated" if verdict == "none" else verdict}</span></td>'
                   f'<td class="n">{_num(t["rows"])}</td>{cells}<td class="n">{_num(t["expectations"] if t["validated"] else None)}</td>'
                   f'<td class="n">{_num(passed)}</td><td class="n">{_num(t["failed_critical"] if t["validated"] else None)}</td><td class="n">{_num(t["failed_warning"] if t["validated"] else None)}</td></tr>')
    out.append("</table>")

    failures = [f for t in data["tables"].values() for f in t["failures"]]
    out.append("<h2>Failed expectations</h2>")
    if failures:
        failures.sort(key=lambda f: (f["severity"] != CRITICAL, f["table"]))
        out.append('<table><tr><th>severity</th><th>table</th><th>expectation</th><th class="n">failing rows</th><th>sample ids</th></tr>')
        for f in failures:
            what = f["expectation"] + (f"({f['column']})" if f.get("column") else "")
            rows = f"{_num(f['unexpected_count'])} of {_num(f['element_count'])}" if f.get("unexpected_count") is not None else ("error" if f.get("error") else "table-level")
            detail = f'<div class="muted">{_e(f["error"])}</div>' if f.get("error") else ""
            out.append(f'<tr class="{"bad" if f["severity"] == CRITICAL else "warn"}"><td><span class="pill {_e(f["severity"])}">{_e(f["severity"])}</span></td>'
                       f'<td><code>{_e(f["table"])}</code></td><td><code>{_e(what)}</code>{detail}</td><td class="n">{rows}</td>'
                       f'<td class="ids">{_e(", ".join(f.get("sample_ids") or []))}</td></tr>')
        out.append("</table>")
    else:
        out.append('<p class="muted">None.</p>')
    out.append(f'<footer>Full results: <a href="{_e(links["data_docs"])}">Great Expectations Data Docs</a> · '
               f'<a href="{_e(links["results"])}">validation results (JSON)</a> · history: <code>reports/{HISTORY}</code> (Delta). '
               "Counts and ids only; no field value appears on this page.</footer></main></body></html>")
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_run_report(lake, spark, run_id: str, *, status: str, error: str | None = None,
                     results: Mapping[str, Any] | None = None) -> Path:
    """Gather, record in the history, render; returns ``reports/runs/<run_id>/report.html``."""
    reports = Path(lake.reports)
    data = collect(lake, spark, run_id, status=status, error=error, results=results)
    record_history(reports, data)
    history = read_history(reports)
    page = report_path(reports, run_id)
    rel = lambda target: os.path.relpath(reports / target, page.parent)  # noqa: E731 - two call sites
    _write(page, render(data, history, links={"data_docs": rel("data_docs/index.html"), "results": rel(f"validation/{run_id}")}))
    _write(reports / "latest.html", render(data, history, links={"data_docs": "data_docs/index.html", "results": f"validation/{run_id}"}))
    _write(page.with_name("report.json"), json.dumps(data, indent=2, default=str) + "\n")
    log.info("run report: %s", page)
    return page
