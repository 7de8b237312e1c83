"""Drift of the serving window against the training-data profile and against the previous window.

    llmops monitor report                                    # the last complete window; exit 1 on drift
    llmops monitor report --window 20261122T0000Z --out reports/drift

Distances are Hellinger distances (0 = the same distribution, 1 = disjoint): whylogs' formula on
`buckets` equal-width buckets of the KLL sketches of numeric columns, and the same formula on the
frequent-item counts (nulls as a category of their own) of string columns such as `prompt.has_patterns`. Not chi-square: whylogs'
chi-square flags drift between identical string distributions. A baseline's drift score is the
mean distance over its columns (serving/monitoring/drift.yaml lists them with the thresholds).

The window judged is the last complete one (the current window is still filling). What cannot be
judged is inconclusive, never a pass (`llmops monitor report` exits 3): fewer than `min_rows` rows,
no column with data on both sides, no profile for the last complete window (no traffic, or the
profile flush failed), or a serving writer whose last profile flush failed (its flush-status file,
serving/monitoring/profiles.py).

Outputs in --out: report.json and report.md (the llmops.report schema: one metric and one check per
baseline), report.html (self-contained: tables and matplotlib PNGs inlined as base64, no CDN), and
the Prometheus textfile `<home>/monitoring/metrics/drift.prom` (node_exporter's textfile collector
reads it) with llmops_drift_score{baseline}, llmops_drift_threshold{baseline},
llmops_drift_column_hellinger{baseline,column}, llmops_drift_window_rows,
llmops_drift_report_timestamp_seconds, llmops_drift_inconclusive (1: the report could not judge),
llmops_drift_profile_flush_failing (writers whose last flush failed) and
llmops_drift_newest_profile_end_timestamp_seconds (end of the newest window with a profile), which
serving/monitoring/alerts.yaml alerts on.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmops.config_files import load_validated_yaml
from llmops.dataset import read_jsonl
from llmops.errors import InputError
from llmops.files import atomic_write_text, sha256_file
from llmops.report import Finding, Metric, Report
from serving.monitoring.profiles import (
    WINDOW_FORMAT,
    list_windows,
    profile_rows,
    profiles_dir,
    read_flush_status,
    read_profile,
    window_name,
    write_profile,
)

DEFAULT_CONFIG = Path(__file__).with_name("drift.yaml")
METRICS_FILE = "monitoring/metrics/drift.prom"
REFERENCE_DIR = "monitoring/reference"


class DriftConfig(BaseModel):
    """serving/monitoring/drift.yaml; each field's meaning and default are echoed there."""

    model_config = ConfigDict(extra="forbid")

    window_minutes: int = Field(60, ge=1, le=1440)
    """Minutes per profile window; must divide a day."""
    min_rows: int = Field(20, ge=1)
    """Fewest rows a window needs before its drift can fail the report."""
    buckets: int = Field(5, ge=2, le=100)
    """Histogram buckets for numeric columns."""
    column_threshold: float = Field(0.35, ge=0.0, le=1.0)
    """A column drifted when its Hellinger distance is above this."""
    max_drift_score: float = Field(0.22, ge=0.0, le=1.0)
    """The report fails when a baseline's mean Hellinger distance is above this."""
    training_columns: list[str] = Field(min_length=1)
    """Columns compared with the training-data profile."""
    previous_columns: list[str] = Field(min_length=1)
    """Columns compared with the previous window."""


def load_config(path: Path | None = None) -> DriftConfig:
    config = load_validated_yaml(Path(path or DEFAULT_CONFIG), DriftConfig)
    if 1440 % config.window_minutes:
        raise InputError(f"window_minutes must divide a day (1440), got {config.window_minutes}",
                         file=str(path or DEFAULT_CONFIG), field="window_minutes")
    return config


# ---- baselines ----------------------------------------------------------------------------------
def training_profile(train_file: Path, home: Path) -> Any:
    """Profile of a dataset's rows (question as prompt, answer as response), cached under its sha256."""
    train_file = Path(train_file)
    if not train_file.is_file():
        raise InputError("training file not found", file=str(train_file))
    cached = Path(home) / REFERENCE_DIR / f"{train_file.parent.name}-{sha256_file(train_file)[:16]}.bin"
    if cached.is_file():
        return read_profile(cached)
    rows = [r for _, r in read_jsonl(train_file) if isinstance(r, dict)]
    questions = [str(r.get("question", "")) for r in rows]
    answers = [str(r.get("answer", "")) for r in rows]
    if not rows:
        raise InputError("no rows to profile", file=str(train_file))
    view = profile_rows(questions, answers)
    write_profile(cached, view)
    return view


# ---- distances ----------------------------------------------------------------------------------
def _item_counts(column: Any) -> dict[str, float]:
    """Frequent-item estimates of a string column plus its nulls as '<null>'."""
    counts: dict[str, float] = {}
    items = column.get_metric("frequent_items")
    if items is not None:
        for item in items.to_summary_dict().get("frequent_strings", []):
            counts[item.value] = counts.get(item.value, 0.0) + float(item.est)
    nulls = column.get_metric("counts")
    if nulls is not None:
        null_count = float(nulls.null.value)
        if null_count:
            counts["<null>"] = null_count
    return counts


def hellinger_counts(a: dict[str, float], b: dict[str, float]) -> float | None:
    """Hellinger distance of two categorical count tables; None when either is empty."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return None
    keys = set(a) | set(b)
    sq = sum((math.sqrt(a.get(k, 0.0) / total_a) - math.sqrt(b.get(k, 0.0) / total_b)) ** 2 for k in keys)
    return math.sqrt(sq / 2)


def _is_numeric(column: Any) -> bool:
    dist = column.get_metric("distribution")
    return dist is not None and not dist.kll.value.is_empty()


def _numeric_pmfs(t_col: Any, r_col: Any, buckets: int) -> tuple[list[float], list[float], list[float]] | None:
    """(bucket edges, target pmf, reference pmf) over `buckets` equal buckets spanning both columns."""
    import numpy as np

    if not (_is_numeric(t_col) and _is_numeric(r_col)):
        return None
    t_kll, r_kll = t_col.get_metric("distribution").kll.value, r_col.get_metric("distribution").kll.value
    lo = min(t_kll.get_min_value(), r_kll.get_min_value())
    hi = max(t_kll.get_max_value(), r_kll.get_max_value())
    if hi <= lo:
        hi = lo + 1.0  # both constant and equal: one bucket holds everything
    edges = np.linspace(lo, hi, buckets + 1)
    splits = list(edges[1:-1])
    # get_pmf(splits) returns len(splits) + 1 masses, one per bucket
    return list(edges), list(t_kll.get_pmf(splits)), list(r_kll.get_pmf(splits))


def hellinger_pmf(p: list[float], q: list[float]) -> float:
    """sqrt(sum (sqrt p - sqrt q)^2 / 2): whylogs' Hellinger formula (its viz module needs IPython)."""
    return math.sqrt(sum((math.sqrt(max(a, 0.0)) - math.sqrt(max(b, 0.0))) ** 2 for a, b in zip(p, q, strict=True)) / 2)


def column_distance(target: Any, reference: Any, name: str, buckets: int) -> float | None:
    """Hellinger distance of one column between two profile views; None when a side lacks data."""
    t_col, r_col = target.get_column(name), reference.get_column(name)
    if t_col is None or r_col is None:
        return None
    if t_col.get_metric("frequent_items") is not None or r_col.get_metric("frequent_items") is not None:
        return hellinger_counts(_item_counts(t_col), _item_counts(r_col))
    pmfs = _numeric_pmfs(t_col, r_col, buckets)
    return None if pmfs is None else hellinger_pmf(pmfs[1], pmfs[2])


def row_count(view: Any) -> int:
    column = view.get_column("prompt")
    return int(column.get_metric("counts").n.value) if column is not None else 0


@dataclass
class BaselineResult:
    baseline: str  # "training" or "previous"
    reference: str  # what the baseline is (file or window)
    rows: int
    reference_rows: int
    distances: dict[str, float | None]
    judged: bool
    score: float | None = None
    drifted_columns: list[str] = field(default_factory=list)


def compare(target: Any, reference: Any, columns: list[str], config: DriftConfig, baseline: str,
            reference_name: str) -> BaselineResult:
    distances = {c: column_distance(target, reference, c, config.buckets) for c in columns}
    known = [d for d in distances.values() if d is not None]
    rows = row_count(target)
    return BaselineResult(
        baseline=baseline, reference=reference_name, rows=rows, reference_rows=row_count(reference),
        distances=distances, judged=rows >= config.min_rows and row_count(reference) >= config.min_rows,
        score=sum(known) / len(known) if known else None,
        drifted_columns=[c for c, d in distances.items() if d is not None and d > config.column_threshold])


# ---- plots and HTML -----------------------------------------------------------------------------
def _plot_column(target: Any, reference: Any, name: str, buckets: int, labels: tuple[str, str]) -> str | None:
    """A PNG (base64) of the reference and target distributions of one column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t_col, r_col = target.get_column(name), reference.get_column(name)
    if t_col is None or r_col is None:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=80)
    try:
        if t_col.get_metric("frequent_items") is not None:
            t_counts, r_counts = _item_counts(t_col), _item_counts(r_col)
            keys = sorted(set(t_counts) | set(r_counts))
            t_sum, r_sum = sum(t_counts.values()) or 1, sum(r_counts.values()) or 1
            x = np.arange(len(keys))
            ax.bar(x - 0.2, [r_counts.get(k, 0) / r_sum for k in keys], 0.4, label=labels[0])
            ax.bar(x + 0.2, [t_counts.get(k, 0) / t_sum for k in keys], 0.4, label=labels[1])
            ax.set_xticks(x, keys, fontsize=7)
        elif (pmfs := _numeric_pmfs(t_col, r_col, buckets)) is not None:
            edges, t_pmf, r_pmf = pmfs
            ax.stairs(r_pmf, edges, fill=True, alpha=0.5, label=labels[0])
            ax.stairs(t_pmf, edges, fill=True, alpha=0.5, label=labels[1])
        else:
            return None
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    finally:
        plt.close(fig)


def render_html(window: str, results: list[BaselineResult], plots: dict[tuple[str, str], str | None],
                config: DriftConfig, verdict: str, inconclusive: list[str] | None = None) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift report {esc(window)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}.bad{color:#b00;font-weight:bold}"
        ".plots img{margin:4px;border:1px solid #eee}</style></head><body>",
        f"<h1>Drift report: window {esc(window)}</h1>",
        f"<p>Verdict: <b class='{'' if verdict == 'pass' else 'bad'}'>{esc(verdict.upper())}</b>. "
        f"Column threshold {config.column_threshold}, drift-score threshold {config.max_drift_score}, "
        f"judged from {config.min_rows} rows.</p>",
    ]
    for why in inconclusive or []:
        parts.append(f"<p class='bad'>Inconclusive: {esc(why)}</p>")
    for r in results:
        score = "–" if r.score is None else f"{r.score:.3f}"
        bad = r.judged and r.score is not None and r.score > config.max_drift_score
        parts.append(f"<h2>vs {esc(r.baseline)} ({esc(r.reference)})</h2>")
        parts.append(f"<p>Drift score <span class='{'bad' if bad else ''}'>{score}</span>; "
                     f"{r.rows} rows in the window, {r.reference_rows} in the baseline"
                     f"{'' if r.judged else ' (too few rows to judge)'}.</p>")
        parts.append("<table><tr><th>column</th><th>Hellinger</th><th>drifted</th></tr>")
        for column, d in r.distances.items():
            flag = d is not None and d > config.column_threshold
            value = "–" if d is None else f"{d:.3f}"
            parts.append(f"<tr><td>{esc(column)}</td><td>{value}</td>"
                         f"<td class='{'bad' if flag else ''}'>{'yes' if flag else ''}</td></tr>")
        parts.append("</table><div class='plots'>")
        for column in r.distances:
            png = plots.get((r.baseline, column))
            if png:
                parts.append(f"<img alt='{esc(column)}' src='data:image/png;base64,{png}'>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


# ---- the report ---------------------------------------------------------------------------------
def write_drift_metrics(path: Path, results: list[BaselineResult], config: DriftConfig, *,
                        inconclusive: bool = False, flush_failing: int = 0,
                        newest_profile_end: float | None = None) -> Path:
    """The Prometheus textfile (prometheus_client writes a temp file and renames it)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    score = Gauge("llmops_drift_score", "Mean Hellinger distance of the serving window vs a baseline",
                  ["baseline"], registry=registry)
    threshold = Gauge("llmops_drift_threshold", "Drift score above which the report fails", ["baseline"],
                      registry=registry)
    column = Gauge("llmops_drift_column_hellinger", "Hellinger distance of one column vs a baseline",
                   ["baseline", "column"], registry=registry)
    rows = Gauge("llmops_drift_window_rows", "Rows in the profiled serving window", registry=registry)
    stamp = Gauge("llmops_drift_report_timestamp_seconds", "When the drift report last ran",
                  registry=registry)
    for r in results:
        threshold.labels(r.baseline).set(config.max_drift_score)
        # an unjudged window exports 0, so a thin window never pages anyone
        score.labels(r.baseline).set(r.score if (r.score is not None and r.judged) else 0.0)
        for name, d in r.distances.items():
            if d is not None:
                column.labels(r.baseline, name).set(d)
        rows.set(r.rows)
    stamp.set(time.time())
    Gauge("llmops_drift_inconclusive", "1 when the last drift report could not judge (exit 3)",
          registry=registry).set(1.0 if inconclusive else 0.0)
    Gauge("llmops_drift_profile_flush_failing", "Serving profile writers whose last flush failed",
          registry=registry).set(flush_failing)
    newest = Gauge("llmops_drift_newest_profile_end_timestamp_seconds",
                   "End of the newest window that has a serving profile (0: none)", registry=registry)
    newest.set(newest_profile_end or 0.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return Path(path)


def window_bounds(window: str, minutes: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.strptime(window, WINDOW_FORMAT).replace(tzinfo=dt.UTC)
    return start, start + dt.timedelta(minutes=minutes)


def last_complete_window(now: dt.datetime, minutes: int) -> str:
    """The newest window that has ended by `now` (the one before the window holding `now`)."""
    return window_name(now - dt.timedelta(minutes=minutes), minutes)


def run_drift_report(home: Path, train_file: Path, out_dir: Path, *, config: DriftConfig | None = None,
                     window: str | None = None, metrics_file: Path | None = None,
                     now: dt.datetime | None = None) -> Report:
    """Compare `window` (default: the last complete one) with the training profile and the window before.

    report.info["inconclusive"] lists why the report could not judge (empty: it judged); each reason is
    also an error of the "judgeable" check, so the verdict is never "pass" then."""
    config = config or load_config()
    now = now or dt.datetime.now(dt.UTC)
    windows = list_windows(home)
    if not windows:
        raise InputError("no serving profiles yet: serve traffic with a ProfileWriter first",
                         file=str(profiles_dir(home)))
    current = window_name(now, config.window_minutes)
    if window is None:
        window = last_complete_window(now, config.window_minutes)
    elif window >= current:
        raise InputError(f"window {window!r} is not complete yet (it ends after now); the last complete one is "
                         f"{last_complete_window(now, config.window_minutes)}", field="window")
    inconclusive: list[str] = []
    newest_end = window_bounds(windows[-1], config.window_minutes)[1]
    target = None
    if window in windows:
        try:
            target = read_profile(profiles_dir(home) / f"{window}.bin")
        except Exception as exc:  # noqa: BLE001 - a torn or corrupt profile cannot be judged
            inconclusive.append(f"the profile of window {window} cannot be read ({type(exc).__name__}: {exc})")
    else:
        age_h = (now - min(newest_end, now)).total_seconds() / 3600
        inconclusive.append(f"no profile for the last complete window {window}: the newest profile is window "
                            f"{windows[-1]}, which ended {age_h:.1f} h ago (no traffic, or the profile flush "
                            "failed: stale profiles)")
    start = window_bounds(window, config.window_minutes)[0].timestamp()
    failing = [st for st in read_flush_status(home) if st.get("last_failed") and st.get("updated", 0) >= start]
    for st in failing:
        inconclusive.append(f"profile flush failing in writer {st.get('writer', st['file'])} since "
                            f"{dt.datetime.fromtimestamp(st.get('last_failure') or st['updated'], dt.UTC):%Y-%m-%d %H:%M}Z "
                            f"({st.get('failures', '?')} failures, {st.get('rows_lost', '?')} rows lost): "
                            f"{st.get('error')}")
    results, plots = [], {}
    if target is not None:
        baselines = [("training", training_profile(train_file, home), str(train_file), config.training_columns)]
        earlier = [w for w in windows if w < window]
        if earlier:
            baselines.append(("previous", read_profile(profiles_dir(home) / f"{earlier[-1]}.bin"), earlier[-1],
                              config.previous_columns))
        for name, reference, ref_name, columns in baselines:
            result = compare(target, reference, columns, config, name, ref_name)
            results.append(result)
            for column in columns:
                plots[(name, column)] = _plot_column(target, reference, column, config.buckets, (name, window))

    report = Report(kind="drift-monitor")
    report.info.update({"window": window, "current_window": current, "windows": len(windows),
                        "rows": row_count(target) if target is not None else 0, "config": config.model_dump(),
                        "newest_profile": windows[-1]})
    for r in results:
        passed = None if not r.judged or r.score is None else r.score <= config.max_drift_score
        report.metrics[f"drift:{r.baseline}"] = Metric(head=r.score, threshold=config.max_drift_score,
                                                       passed=passed, higher_is_better=False)
        severity = "error" if passed is False else "warning"
        findings = [Finding(f"Hellinger {r.distances[c]:.3f} > {config.column_threshold} vs {r.baseline}",
                            field=c, severity=severity) for c in r.drifted_columns]
        if passed is False and not findings:
            findings.append(Finding(f"drift score {r.score:.3f} > {config.max_drift_score}"))
        if not r.judged:
            inconclusive.append(f"drift:{r.baseline}: only {r.rows} rows (baseline {r.reference_rows}); "
                                f"{config.min_rows} needed to judge")
        elif r.score is None:
            inconclusive.append(f"drift:{r.baseline}: no column has data on both sides "
                                f"({', '.join(r.distances)}): nothing to compare")
        summary = f"score {'–' if r.score is None else f'{r.score:.3f}'} over {len(r.distances)} columns"
        report.add_check(f"drift:{r.baseline}", findings, summary)
        report.info[f"distances:{r.baseline}"] = r.distances
    report.add_check("judgeable", [Finding(f"inconclusive: {why}", field="window") for why in inconclusive],
                     summary="the window could be judged" if not inconclusive else "inconclusive, not a pass")
    report.info["inconclusive"] = inconclusive
    report.info["flush_failing"] = len(failing)

    out_dir = Path(out_dir)
    report.write(out_dir)
    verdict = "inconclusive" if inconclusive and all(m.passed is not False for m in report.metrics.values()) \
        else report.verdict
    atomic_write_text(out_dir / "report.html", render_html(window, results, plots, config, verdict, inconclusive))
    write_drift_metrics(Path(metrics_file) if metrics_file else Path(home) / METRICS_FILE, results, config,
                        inconclusive=bool(inconclusive), flush_failing=len(failing),
                        newest_profile_end=newest_end.timestamp())
    return report
