"""The per-arm summary of a run as rows, a rich table for the terminal, and markdown.

Input is the content of a run's ``metrics.json``::

    {"task": ..., "pipeline": "shapes-demo", "strategy": ..., "metrics": {...},
     "baseline": {...} | None, "timings": {...}, "cache": ...,
     "arms": {"fine-tune": {"strategy": "fine-tune", "metrics": {"accuracy": 0.93, ...},
                            "seconds": 41.2, "epochs": 5}, ...},
     "primary_metric": "accuracy"}

"Gain vs baseline" is the improvement over the baseline on the primary metric: ``arm -
baseline``, or ``baseline - arm`` when ``metric_directions`` says lower is better, so a
positive gain is always better. For rate metrics (fractions in [0, 1] such as accuracy or
F1) it is in percentage points (0.935 vs 0.70 -> +23.5); otherwise the raw difference.
With several seeds each metric shows ``mean ± std``.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

#: metric names containing these are never shown as percentages, even when in [0, 1]
#: (CIDEr is on its own scale, commonly 0-10)
_NOT_RATES = ("loss", "mae", "mse", "rmse", "r2", "seconds", "perplexity", "cider")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_rate(metric: str, *values: Any) -> bool:
    """Whether ``metric`` is a fraction to show as a percentage (all given values in [0, 1])."""
    if any(part in metric.lower() for part in _NOT_RATES):
        return False
    numbers = [v for v in values if _is_number(v)]
    return bool(numbers) and all(0.0 <= float(v) <= 1.0 for v in numbers)


def _name(value: Any) -> str:
    """A strategy given as a string or as a config dict (``{"name", "label", ...}``)."""
    if isinstance(value, dict):
        return str(value.get("label") or value.get("name") or value.get("strategy") or "")
    return "" if value is None else str(value)


def _arms(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arms of a summary; a summary without ``arms`` is one arm from its top level."""
    arms = summary.get("arms") or {}
    if arms:
        return dict(arms)
    strategy = _name(summary.get("strategy")) or "model"
    seconds = (summary.get("timings") or {}).get("total_seconds")
    return {strategy: {"strategy": strategy, "metrics": summary.get("metrics") or {}, "seconds": seconds}}


def _baseline_arm(summary: dict[str, Any], arms: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """(name of the baseline arm, its test metrics), or (None, None) without a baseline."""
    name = summary.get("baseline_arm")
    if name in arms:
        return name, arms[name].get("metrics") or {}
    return None, None


def _metric_order(primary: str, arms: dict[str, dict[str, Any]]) -> list[str]:
    """The primary metric first, then every other metric in first-seen order."""
    names = [primary]
    for arm in arms.values():
        for key in arm.get("metrics") or {}:
            if key not in names:
                names.append(key)
    return names


def gain_metric_of(summary: dict[str, Any]) -> str:
    """The metric the "vs baseline" column compares: the summary's ``gain_metric`` (a
    domain-adaptation run's ``target.accuracy``), else the primary metric."""
    return str(summary.get("gain_metric") or summary.get("primary_metric") or "accuracy")


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat, JSON-ready row per arm, in run order.

    Each row: ``{"arm", "strategy", <primary metric>, <other metrics>..., "seconds",
    "epochs", "baseline" (True for the baseline arm), "gain_vs_baseline"}``. Metric values
    are as in the summary (fractions for rates); a metric an arm lacks is None.
    ``gain_vs_baseline`` is the improvement over the baseline arm on :func:`gain_metric_of` (positive
    = better whatever the metric's direction; percentage points for rates, raw otherwise), None for the baseline arm itself and when
    the run has no baseline.
    """
    primary = str(summary.get("primary_metric") or "accuracy")
    gain_metric = gain_metric_of(summary)
    arms = _arms(summary)
    base_name, base_metrics = _baseline_arm(summary, arms)
    base_value = (base_metrics or {}).get(gain_metric)
    metric_names = _metric_order(primary, arms)
    # one decision for the column: every arm's gain in the same unit
    gain_is_rate = _is_rate(gain_metric, *((a.get("metrics") or {}).get(gain_metric) for a in arms.values()))
    rows = []
    for name, arm in arms.items():
        metrics = arm.get("metrics") or {}
        row: dict[str, Any] = {"arm": name, "strategy": _name(arm.get("strategy")) or name}
        stds = arm.get("metrics_std") or {}
        for metric in metric_names:
            value = metrics.get(metric)
            row[metric] = float(value) if _is_number(value) else None
            if _is_number(stds.get(metric)):
                row[f"{metric}_std"] = float(stds[metric])
        row["seconds"] = float(arm["seconds"]) if _is_number(arm.get("seconds")) else None
        row["epochs"] = int(arm["epochs"]) if _is_number(arm.get("epochs")) else None
        row["baseline"] = name == base_name
        value = metrics.get(gain_metric)
        gain = None
        if name != base_name and _is_number(value) and _is_number(base_value):
            diff = float(value) - float(base_value)
            if (summary.get("metric_directions") or {}).get(gain_metric) == "min":
                diff = -diff  # positive = better, also for lower-is-better metrics
            gain = round(diff * 100.0, 4) if gain_is_rate else diff
        row["gain_vs_baseline"] = gain
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ formatting
def _columns(summary: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """(metric columns, whether a "vs baseline" column is shown)."""
    primary = str(summary.get("primary_metric") or "accuracy")
    metrics = _metric_order(primary, _arms(summary))
    shown = summary.get("table_metrics")
    if shown:  # the task's choice for the table; metrics.json keeps every metric
        metrics = [m for m in metrics if m == primary or m in shown]
    has_baseline = any(r["baseline"] for r in rows) or any(r["gain_vs_baseline"] is not None for r in rows)
    return metrics, has_baseline


def _metric_header(metric: str, rows: list[dict[str, Any]]) -> str:
    return f"{metric} (%)" if _is_rate(metric, *(r[metric] for r in rows)) else metric


def _format_metric(metric: str, value: Any, rows: list[dict[str, Any]]) -> str:
    if not _is_number(value):
        return "—"
    if _is_rate(metric, *(r[metric] for r in rows)):
        return f"{float(value) * 100:.1f}"
    return f"{float(value):.4g}"


def _format_std(metric: str, row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """`` ± std`` over seeds, in the metric's units, when the run had several seeds."""
    std = row.get(f"{metric}_std")
    if std is None or not _is_number(row.get(metric)):
        return ""
    if _is_rate(metric, *(r[metric] for r in rows)):
        return f" ± {std * 100:.1f}"
    return f" ± {std:.2g}"


def _format_gain(row: dict[str, Any], primary: str, rows: list[dict[str, Any]]) -> str:
    if row["baseline"]:
        return "baseline"
    gain = row["gain_vs_baseline"]
    if gain is None:
        return "—"
    if _is_rate(primary, *(r[primary] for r in rows)):
        return f"{gain:+.1f}"
    return f"{gain:+.4g}"


def _format_seconds(value: Any) -> str:
    return f"{float(value):.1f}" if _is_number(value) else "—"


def _table_cells(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by the rich and the markdown table."""
    rows = summary_rows(summary)
    primary = str(summary.get("primary_metric") or "accuracy")
    metrics, has_baseline = _columns(summary, rows)
    header = ["Arm", "Strategy", *(_metric_header(m, rows) for m in metrics)]
    if has_baseline:
        gain_metric = gain_metric_of(summary)
        on = f" on {gain_metric}" if gain_metric != primary else ""
        unit = " (pts)" if _is_rate(gain_metric, *(r.get(gain_metric) for r in rows)) else ""
        header.append(f"vs baseline{on}{unit}")
    header.append("Time (s)")
    cells = []
    for row in rows:
        line = [
            row["arm"],
            row["strategy"],
            *(_format_metric(m, row[m], rows) + _format_std(m, row, rows) for m in metrics),
        ]
        if has_baseline:
            line.append(_format_gain(row, primary, rows))
        line.append(_format_seconds(row["seconds"]))
        cells.append(line)
    return header, cells


def wide_console() -> Console:
    """A rich console that, when piped or captured, uses 120 columns instead of 80."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 120))


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the per-arm table (titled with the pipeline name) to ``console`` (default stdout)."""
    console = console or wide_console()
    header, cells = _table_cells(summary)
    title = str(summary.get("pipeline") or "run")
    if summary.get("task"):
        title += f" ({summary['task']})"
    # No vertical rules and units under the column names, so 3 arms x 2 metrics fit 80 columns.
    table = Table(title=title, title_style="bold", header_style="bold", box=box.SIMPLE_HEAVY, pad_edge=False)
    for i, name in enumerate(header):
        name = name.replace(" (", "\n(") if i >= 2 else name
        # Only the strategy column may wrap: it repeats the arm name in most runs.
        table.add_column(
            name, justify="left" if i < 2 else "right", no_wrap=i != 1, overflow="fold", min_width=8 if i == 1 else None
        )
    rows = summary_rows(summary)
    for row, line in zip(rows, cells):
        table.add_row(*line, style="dim" if row["baseline"] else None)
    console.print(table)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The per-arm table as GitHub markdown (no title), ending with a newline."""
    header, cells = _table_cells(summary)
    align = [":---" if i < 2 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in line) + " |" for line in cells]
    return "\n".join(lines) + "\n"
