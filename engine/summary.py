"""The summary of a finished run: per-arm metrics over seeds, gains, plots, ``metrics.json``.

``metrics.json`` keeps one schema for every task::

    {"task", "pipeline", "strategy", "metrics", "baseline", "timings", "cache", "execution",
     "primary_metric", "gain_metric", "table_metrics", "metric_directions", "primary_arm", "baseline_arm", "seeds",
     "arms": {arm: {"strategy", "metrics" (mean over seeds), "metrics_std", "per_seed",
                    "gains" (vs baseline), "gain_vs_baseline", "val_metrics", "seconds",
                    "epochs", "best_epoch"}},
     "stages": {stage: {"task", "arms": {...as above...}}},
     "source", "plots", "device", "tlengine_version"}

``metrics``/``baseline``/``arms`` are those of the last stage. A gain is the baseline's
shortfall, signed so that positive is better whatever the metric's direction (a WER
that falls from 0.30 to 0.20 is a gain of +0.10).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .reporting.domain import plot_domain_maps
from .reporting.plots import plot_arm_comparison, plot_curves
from .task import Evaluation, Task
from .training.loop import ArmResult


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(results: dict[int, ArmResult]) -> dict[str, Any]:
    """One arm's results under each seed -> mean, std and per-seed metrics."""
    seeds = sorted(results)
    first = results[seeds[0]]
    keys = [k for k in first.test.metrics if all(k in results[s].test.metrics for s in seeds)]
    means, stds = {}, {}
    for k in keys:
        values = [float(results[s].test.metrics[k]) for s in seeds]
        means[k], stds[k] = mean_std(values)
    entry: dict[str, Any] = {
        "strategy": first.strategy,
        "metrics": means,
        "val_metrics": first.val.metrics if first.val else None,
        "seconds": round(sum(r.seconds for r in results.values()), 3),
        "epochs": first.epochs,
        "best_epoch": first.best_epoch,
        "per_seed": {str(s): results[s].test.metrics for s in seeds},
    }
    if len(seeds) > 1:
        entry["metrics_std"] = stds
    if any(r.stopped_early for r in results.values()):
        entry["stopped_early"] = {str(s): results[s].stopped_early for s in seeds}
    return entry


def gains(task: type[Task] | Task, arm: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Improvement of ``arm`` over ``baseline`` per shared metric, positive = better."""
    out = {}
    for k, v in arm.items():
        if k in baseline:
            diff = float(v) - float(baseline[k])
            out[k] = diff if task.higher_is_better(k) else -diff
    return out


def gain_metric(task: Task, stage: Any) -> str:
    """What "vs baseline" compares: the primary metric, or on a stage with ``evaluate_on``
    the primary metric on its first such dataset (domain adaptation: the target)."""
    others = list(getattr(stage, "evaluate_on", []))
    return f"{others[0]}.{task.primary_metric}" if others else task.primary_metric


def stage_arms(
    task: Task, results: dict[str, dict[int, ArmResult]], baseline: str | None, metric: str | None = None
) -> dict[str, Any]:
    """Every arm of one stage, aggregated over seeds, with gains against ``baseline``
    (``gain_vs_baseline``: on ``metric``, default the primary metric)."""
    arms = {name: aggregate(by_seed) for name, by_seed in results.items()}
    if baseline in arms:
        base = arms[baseline]["metrics"]
        for name, entry in arms.items():
            if name != baseline:
                entry["gains"] = gains(task, entry["metrics"], base)
                entry["gain_vs_baseline"] = entry["gains"].get(metric or task.primary_metric)
    return arms


def table_metrics(task: Task, final: Any, metrics: Iterable[str] = ()) -> list[str] | None:
    """The task's table metrics, then the same metrics on each ``evaluate_on`` dataset
    (``target.accuracy``), then the primary metric of every other ``<name>.`` prefix among
    ``metrics`` (what a strategy's own parts were scored on, e.g. multitask heads: all of
    theirs stay in metrics.json); None: every metric."""
    shown = list(task.table_metrics)
    others = list(getattr(final, "evaluate_on", []))
    names = list(dict.fromkeys(metrics))
    scored = [p for p in dict.fromkeys(n.split(".", 1)[0] for n in names if "." in n) if p not in others]
    if not others and not scored:
        return shown or None
    base = shown or ([n for n in names if "." not in n] if not others else [task.primary_metric])
    return [
        *base,
        *(f"{name}.{m}" for name in others for m in [*base, "a_distance"]),
        *(f"{name}.{task.primary_metric}" for name in scored),
    ]


def build_summary(
    *,
    config: Any,
    stages: list[Any],
    tasks: dict[str, Task],
    results: dict[str, dict[str, dict[int, ArmResult]]],
    records: list[dict[str, Any]],
    run_dir: Path,
    total_seconds: float,
    device: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json's content, after writing the plots and the task's reports."""
    final = stages[-1]
    task = tasks[final.name]
    primary_arm, baseline = final.arms[0].arm, final.baseline
    stage_json = {
        st.name: {
            "task": st.task,
            "arms": stage_arms(tasks[st.name], results[st.name], st.baseline, gain_metric(tasks[st.name], st)),
        }
        for st in stages
    }
    arms = stage_json[final.name]["arms"]
    metric = task.primary_metric
    directions = {k: ("max" if task.higher_is_better(k) else "min") for k in arms[primary_arm]["metrics"]}
    seeds = config.seed_list
    summary: dict[str, Any] = {
        "task": final.task,
        "pipeline": config.name,
        "strategy": arms[primary_arm]["strategy"],
        "metrics": arms[primary_arm]["metrics"],
        "baseline": arms[baseline]["metrics"] if baseline in arms else None,
        "timings": {
            "total_seconds": round(total_seconds, 3),
            **{f"{name}_seconds": a["seconds"] for name, a in arms.items()},
            **{
                f"stage_{st.name}_seconds": round(sum(a["seconds"] for a in stage_json[st.name]["arms"].values()), 3)
                for st in stages
            },
        },
        "cache": {
            name: results[final.name][name][seeds[0]].cache
            for name in arms
            if results[final.name][name][seeds[0]].cache
        }
        or None,
        "execution": {
            name: results[final.name][name][seeds[0]].execution
            for name in arms
            if results[final.name][name][seeds[0]].execution
        }
        or None,
        "primary_metric": metric,
        "gain_metric": gain_metric(task, final),
        "table_metrics": table_metrics(task, final, [k for entry in arms.values() for k in entry["metrics"]]),
        "metric_directions": directions,
        "primary_arm": primary_arm,
        "baseline_arm": baseline if baseline in arms else None,
        "seeds": seeds,
        "arms": arms,
        "stages": stage_json,
        "source": None,
        "device": device,
        "tlengine_version": __version__,
    }
    if "source" in stage_json and final.name != "source":
        src = next(iter(stage_json["source"]["arms"].values()))
        summary["source"] = {"metrics": src["metrics"], "seconds": src["seconds"], "epochs": src["epochs"]}

    plot_records = [
        {**r, "arm": r["arm"] if r.get("stage") == final.name else f"{r.get('stage')}/{r['arm']}"} for r in records
    ]
    plots = plot_curves(plot_records, run_dir / "plots")
    if len(arms) > 1:
        plots.append(
            plot_arm_comparison(
                {n: a["metrics"] for n, a in arms.items()},
                metric,
                run_dir / "plots" / f"test_{metric}_by_arm.png",
                errors={n: a.get("metrics_std", {}).get(metric, 0.0) for n, a in arms.items()},
            )
        )
    first_seed: dict[str, Evaluation] = {n: by_seed[seeds[0]].test for n, by_seed in results[final.name].items()}
    plots += task.write_reports(run_dir, first_seed, info)
    for name in getattr(final, "evaluate_on", []):
        maps = {
            n: e.details[name]["feature_map"] for n, e in first_seed.items() if "feature_map" in e.details.get(name, {})
        }
        if maps:
            distances = {n: first_seed[n].metrics.get(f"{name}.a_distance", float("nan")) for n in maps}
            plots.append(plot_domain_maps(maps, distances, name, run_dir / "plots" / f"{name}_features_by_arm.png"))
    summary["plots"] = [str(Path(p).relative_to(run_dir)) for p in plots]
    return summary
