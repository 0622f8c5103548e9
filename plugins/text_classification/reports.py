"""Report files of a text-classification run, from the test :class:`Evaluation` of each arm.

Per arm: ``plots/confusion_<arm>.png`` and ``reports/per_class_<arm>.md`` (the image
plugin's table). Two-class tasks also get one precision-recall plot and one ROC plot with
a curve per arm: ``plots/pr_curve.png`` and ``plots/roc_curve.png``. House style and
atomic writes of :mod:`tlengine.reporting.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from tlengine.atomic import write_text
from tlengine.reporting.plots import _arm_colours, _save, plot_confusion
from tlengine.task import Evaluation


def write_text_reports(run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
    """Writes the plots and tables of every arm that has the details for them.

    Args:
        run_dir: the run folder; files go to its ``plots/`` and ``reports/`` (created).
        arms: arm name -> its test evaluation from
            :func:`~tlengine_plugins.text_classification.metrics.text_classification_metrics`.
            Arms (or curves) without the details are skipped.
        info: the task info; ``info["classes"]`` names the classes.

    Returns:
        The paths written, in the order written.
    """
    run_dir = Path(run_dir)
    classes = [str(c) for c in info["classes"]]
    written: list[Path] = []
    for arm, evaluation in arms.items():
        matrix = evaluation.details.get("confusion_matrix")
        if matrix is not None:
            written.append(
                plot_confusion(
                    matrix, classes, run_dir / "plots" / f"confusion_{arm}.png", title=f"{arm}: test confusion matrix"
                )
            )
        rows = evaluation.details.get("per_class", [])
        if rows:
            written.append(_write_per_class(run_dir / "reports" / f"per_class_{arm}.md", rows))
    if len(classes) == 2:
        for path in (
            _plot_pr(run_dir / "plots" / "pr_curve.png", arms),
            _plot_roc(run_dir / "plots" / "roc_curve.png", arms),
        ):
            if path is not None:
                written.append(path)
    return written


def _write_per_class(path: Path, rows: list[dict[str, Any]]) -> Path:
    lines = ["| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |" for r in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    return path


def _with_curve(arms: dict[str, Evaluation], key: str) -> dict[str, Evaluation]:
    return {arm: ev for arm, ev in arms.items() if (ev.details.get(key) or {}).get("thresholds")}


def _positive_label(arms: dict[str, Evaluation]) -> str:
    names = {ev.details.get("positive_class") for ev in arms.values()} - {None}
    return f" (positive class: {next(iter(names))})" if len(names) == 1 else ""


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _plot_pr(path: Path, arms: dict[str, Evaluation]) -> Path | None:
    """Precision against recall per arm (step curves, as average precision sums them), with
    the positive rate of the test set as the no-skill line."""
    arms = _with_curve(arms, "pr_curve")
    if not arms:
        return None
    colours = _arm_colours(list(arms))
    fig, ax = plt.subplots(figsize=(6, 5))
    for arm, ev in arms.items():
        curve = ev.details["pr_curve"]
        label = f"{arm} (AP = {_score(ev.metrics.get('pr_auc'))})"
        ax.plot(curve["recall"], curve["precision"], drawstyle="steps-post", color=colours[arm], label=label)
    rate = _positive_rate(next(iter(arms.values())))
    if rate is not None:
        ax.axhline(rate, color="gray", linestyle="--", linewidth=1, label=f"no skill ({rate:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Test precision-recall{_positive_label(arms)}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def _plot_roc(path: Path, arms: dict[str, Evaluation]) -> Path | None:
    """True-positive rate against false-positive rate per arm, with the chance diagonal."""
    arms = _with_curve(arms, "roc_curve")
    if not arms:
        return None
    colours = _arm_colours(list(arms))
    fig, ax = plt.subplots(figsize=(6, 5))
    for arm, ev in arms.items():
        curve = ev.details["roc_curve"]
        label = f"{arm} (AUC = {_score(ev.metrics.get('roc_auc'))})"
        ax.plot(curve["fpr"], curve["tpr"], color=colours[arm], label=label)
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance (0.500)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"Test ROC curve{_positive_label(arms)}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _positive_rate(evaluation: Evaluation) -> float | None:
    """The share of positive samples in the test set, from the per-class supports."""
    positive = evaluation.details.get("positive_class")
    rows = evaluation.details.get("per_class") or []
    total = sum(int(r["support"]) for r in rows)
    for r in rows:
        if r["class"] == positive and total:
            return int(r["support"]) / total
    return None
