"""Classification metrics, run plots and summary tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from tlengine.reporting.plots import plot_arm_comparison, plot_confusion, plot_curves
from tlengine.reporting.tables import print_summary, summary_markdown, summary_rows
from tlengine.training.metrics import classification_metrics

CLASSES = ["cat", "dog", "fox"]


# ---------------------------------------------------------------------------- metrics
def test_metrics_hand_example() -> None:
    # true:  cat cat cat dog dog dog ; fox never occurs and is never predicted
    # pred:  cat cat dog dog dog cat
    ev = classification_metrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0], CLASSES)
    assert ev.metrics["accuracy"] == pytest.approx(4 / 6)
    # cat: P=2/3 R=2/3 F1=2/3; dog: same; fox: 0 (zero_division=0). Macro over all 3 classes.
    assert ev.metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # rows = true, columns = predicted; the absent class still has a (zero) row
    assert ev.details["confusion_matrix"] == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert ev.details["classes"] == CLASSES
    per = {p["class"]: p for p in ev.details["per_class"]}
    assert per["cat"]["precision"] == pytest.approx(2 / 3) and per["cat"]["support"] == 3
    assert per["fox"] == {"class": "fox", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    json.dumps({"metrics": ev.metrics, "details": ev.details})  # JSON-ready


def test_metrics_orientation_and_tensors() -> None:
    # One sample of true class 2 predicted as 0 must land in row 2, column 0.
    ev = classification_metrics(torch.tensor([2, 1]), torch.tensor([0, 1]), CLASSES)
    assert ev.details["confusion_matrix"] == [[0, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert isinstance(ev.metrics["accuracy"], float) and ev.metrics["accuracy"] == 0.5
    assert all(type(v) is int for row in ev.details["confusion_matrix"] for v in row)


def test_metrics_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [], CLASSES)
    with pytest.raises(ValueError, match="length"):
        classification_metrics([0, 1], [0], CLASSES)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], CLASSES)


# ------------------------------------------------------------------------------ plots
def _records(arms: list[str], epochs: int = 3) -> list[dict]:
    out = []
    for k, arm in enumerate(arms):
        for e in range(1, epochs + 1):
            out.append(
                {
                    "arm": arm,
                    "epoch": e,
                    "train_loss": 1.0 / (e + k),
                    "lr": 1e-3,
                    "seconds": 0.5,
                    "val_loss": None if arm == "source" else 1.2 / (e + k),
                    **({} if arm == "source" else {"val_accuracy": 0.3 + 0.1 * e, "val_macro_f1": 0.2 + 0.1 * e}),
                }
            )
    return out


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()


@pytest.mark.parametrize("arms", [["fine-tune"], ["source", "fine-tune", "feature-extraction", "scratch"]])
def test_plot_curves(tmp_path: Path, arms: list[str]) -> None:
    paths = plot_curves(_records(arms), tmp_path)
    assert [p.name for p in paths] == ["loss.png", "val_accuracy.png", "val_macro_f1.png"]
    for path in paths:
        _assert_png(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert plot_curves([], tmp_path / "empty") == []


@pytest.mark.parametrize("k", [2, 3, 50])
def test_plot_confusion(tmp_path: Path, k: int) -> None:
    matrix = [[(5 if i == j else 1) for j in range(k)] for i in range(k)]
    matrix[0] = [0] * k  # an absent class: an empty row must not break normalisation
    path = plot_confusion(matrix, [f"class {i}" for i in range(k)], tmp_path / "cm.png", title="test")
    _assert_png(path)
    with pytest.raises(ValueError):
        plot_confusion(matrix, ["a"], tmp_path / "bad.png", title="bad")


@pytest.mark.parametrize(
    "arms",
    [
        {"fine-tune": {"accuracy": 0.9}},
        {"fine-tune": {"accuracy": 0.9}, "feature-extraction": {"accuracy": 0.8}, "scratch": {"accuracy": 0.5}},
    ],
)
def test_plot_arm_comparison(tmp_path: Path, arms: dict) -> None:
    _assert_png(plot_arm_comparison(arms, "accuracy", tmp_path / "arms.png"))


# ----------------------------------------------------------------------------- tables
def _summary(*, with_baseline: bool = True) -> dict:
    baseline = {"accuracy": 0.70, "macro_f1": 0.61} if with_baseline else None
    return {
        "task": "image-classification",
        "pipeline": "demo",
        "strategy": "fine-tune",
        "metrics": {"accuracy": 0.935},
        "baseline": baseline,
        "timings": {},
        "cache": None,
        "baseline_arm": "scratch" if with_baseline else None,
        "primary_metric": "accuracy",
        "arms": {
            "fine-tune": {
                "strategy": "fine-tune",
                "metrics": {"accuracy": 0.935, "macro_f1": 0.93},
                "seconds": 41.0,
                "epochs": 5,
            },
            "linear-probe": {
                "strategy": "feature-extraction",
                "metrics": {"accuracy": 0.80, "macro_f1": 0.78},
                "seconds": 12.0,
                "epochs": 5,
            },
            "scratch": {
                "strategy": "scratch",
                "metrics": {"accuracy": 0.70, "macro_f1": 0.61},
                "seconds": 40.0,
                "epochs": 5,
            },
        },
    }


def test_summary_rows_gain() -> None:
    rows = {r["arm"]: r for r in summary_rows(_summary())}
    assert list(rows) == ["fine-tune", "linear-probe", "scratch"]
    assert rows["fine-tune"]["gain_vs_baseline"] == pytest.approx(23.5)
    assert rows["linear-probe"]["gain_vs_baseline"] == pytest.approx(10.0)
    assert rows["linear-probe"]["strategy"] == "feature-extraction"
    assert rows["scratch"]["baseline"] is True and rows["scratch"]["gain_vs_baseline"] is None
    assert rows["fine-tune"]["macro_f1"] == 0.93 and rows["fine-tune"]["seconds"] == 41.0
    assert all(r["gain_vs_baseline"] is None for r in summary_rows(_summary(with_baseline=False)))


def test_a_metric_above_one_in_any_arm_is_not_a_rate_for_any_arm() -> None:
    """The gain column has one unit: an arm whose value and baseline lie in [0, 1] is not
    shown in percentage points when another arm's value is above 1."""
    summary = _summary()
    summary["primary_metric"] = "score"
    for arm, value in {"fine-tune": 1.18, "linear-probe": 0.94, "scratch": 0.76}.items():
        summary["arms"][arm]["metrics"]["score"] = value
    rows = {r["arm"]: r for r in summary_rows(summary)}
    assert rows["fine-tune"]["gain_vs_baseline"] == pytest.approx(0.42)
    assert rows["linear-probe"]["gain_vs_baseline"] == pytest.approx(0.18)  # not 18.0 points


def test_cider_is_never_a_percentage() -> None:
    summary = _summary()
    summary["primary_metric"] = "cider"
    for arm, value in {"fine-tune": 0.9, "linear-probe": 0.8, "scratch": 0.5}.items():
        summary["arms"][arm]["metrics"]["cider"] = value
    header = summary_markdown(summary).splitlines()[0]
    assert "cider (%)" not in header and "cider" in header
    assert {r["arm"]: r for r in summary_rows(summary)}["fine-tune"]["gain_vs_baseline"] == pytest.approx(0.4)


def test_table_shows_the_tasks_table_metrics_and_always_the_primary() -> None:
    summary = {**_summary(), "table_metrics": ["loss"]}
    header = summary_markdown(summary).splitlines()[0]
    assert "accuracy (%)" in header and "macro_f1" not in header
    assert "macro_f1" in summary_markdown(_summary()).splitlines()[0]  # no choice: every metric


def test_summary_markdown_and_rich() -> None:
    text = summary_markdown(_summary())
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 3
    for arm in ("fine-tune", "linear-probe", "scratch"):
        assert any(line.startswith(f"| {arm} |") for line in lines)
    assert "accuracy (%)" in lines[0] and "vs baseline" in lines[0]
    assert "93.5" in text and "+23.5" in text
    assert "vs baseline" not in summary_markdown(_summary(with_baseline=False))

    console = Console(record=True, width=100)
    print_summary(_summary(), console)
    out = console.export_text()
    assert "demo" in out and "+23.5" in out and re.search(r"linear-probe", out)
