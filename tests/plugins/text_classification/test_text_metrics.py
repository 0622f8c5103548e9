"""Text-classification metrics and reports against small cases checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from tlengine.task import Evaluation
from tlengine_plugins.text_classification.metrics import (
    MAX_CURVE_POINTS,
    balanced_sample_weights,
    class_weights,
    text_classification_metrics,
)
from tlengine_plugins.text_classification.reports import write_text_reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ham, ham, spam, spam with P(spam) = 0.1, 0.4, 0.35, 0.8:
#   ranking: of the 4 (spam, ham) pairs only (0.35, 0.4) is out of order -> ROC-AUC 3/4;
#   by falling score: 0.8 spam (P 1, R 1/2), 0.4 ham, 0.35 spam (P 2/3, R 1) -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6;
#   argmax predicts spam only for 0.8: TP 1, FP 0, FN 1 -> precision 1, recall 1/2, F1 2/3;
#   ham: TP 2, FP 1, FN 0 -> F1 0.8; macro-F1 (0.8 + 2/3) / 2; accuracy 3/4.
Y = [0, 0, 1, 1]
P_SPAM = [0.1, 0.4, 0.35, 0.8]
PROBS = [[1 - p, p] for p in P_SPAM]


def test_imperfect_binary_predictions_match_the_hand_computation():
    ev = text_classification_metrics(Y, PROBS, ["ham", "spam"])
    m = ev.metrics
    assert ev.details["positive_class"] == "spam"
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["positive_precision"] == pytest.approx(1.0)
    assert m["positive_recall"] == pytest.approx(0.5)
    assert m["positive_f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["pr_auc"] == pytest.approx(5 / 6)
    assert set(m) == {
        "accuracy",
        "macro_f1",
        "positive_f1",
        "positive_precision",
        "positive_recall",
        "roc_auc",
        "pr_auc",
    }
    assert ev.details["confusion_matrix"] == [[2, 0], [1, 1]]
    assert [r["class"] for r in ev.details["per_class"]] == ["ham", "spam"]
    assert ev.details["notes"] == []
    json.dumps(ev.details, allow_nan=False)  # strict JSON: the inf ROC threshold is null


def test_perfect_binary_predictions_score_one_and_accept_tensors():
    y = torch.tensor([0, 1, 0, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.01, 0.99]])
    m = text_classification_metrics(y, probs, ["neg", "pos"]).metrics
    for name in ("accuracy", "macro_f1", "positive_f1", "positive_precision", "positive_recall", "roc_auc", "pr_auc"):
        assert m[name] == pytest.approx(1.0), name


def test_positive_class_is_spam_then_the_second_class_unless_named():
    # "spam" wins wherever it is
    ev = text_classification_metrics([1, 1, 0, 0], [[1 - p, p][::-1] for p in P_SPAM], ["spam", "ham"])
    assert ev.details["positive_class"] == "spam"
    assert ev.metrics["positive_f1"] == pytest.approx(2 / 3)
    # no "spam": the second class
    assert text_classification_metrics(Y, PROBS, ["negative", "positive"]).details["positive_class"] == "positive"
    # named: ham scores TP 2, FP 1, FN 0
    ev = text_classification_metrics(Y, PROBS, ["ham", "spam"], positive_class="ham")
    assert ev.details["positive_class"] == "ham"
    assert ev.metrics["positive_precision"] == pytest.approx(2 / 3)
    assert ev.metrics["positive_recall"] == pytest.approx(1.0)
    assert ev.metrics["positive_f1"] == pytest.approx(0.8)
    assert ev.metrics["roc_auc"] == pytest.approx(0.75)  # the same ranking seen from the other side


def test_an_unknown_positive_class_names_it_and_the_classes():
    with pytest.raises(ValueError, match=r"'eggs'.*\['ham', 'spam'\]"):
        text_classification_metrics(Y, PROBS, ["ham", "spam"], positive_class="eggs")


def test_probs_must_be_probabilities_of_the_right_shape():
    with pytest.raises(ValueError, match="shape"):
        text_classification_metrics(Y, PROBS, ["a", "b", "c"])
    with pytest.raises(ValueError, match="probabilities"):
        text_classification_metrics(Y, [[2.0, -1.0]] * 4, ["ham", "spam"])  # logits


def test_a_one_class_test_set_leaves_out_the_ranking_metrics_with_a_note():
    ev = text_classification_metrics([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], ["ham", "spam"])
    assert ev.metrics["accuracy"] == pytest.approx(2 / 3)
    assert ev.metrics["positive_recall"] == pytest.approx(2 / 3)
    assert "roc_auc" not in ev.metrics and "pr_auc" not in ev.metrics
    assert "pr_curve" not in ev.details and "roc_curve" not in ev.details
    assert any("ROC-AUC" in note and "'spam'" in note for note in ev.details["notes"])


def test_multi_class_gives_macro_roc_auc_when_every_class_is_present():
    classes = ["sport", "politics", "tech"]
    y = [0, 0, 1, 1, 2, 2]
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]
    )
    ev = text_classification_metrics(y, probs, classes)
    assert ev.metrics["macro_roc_auc"] == pytest.approx(1.0)  # every class ranks its own samples first
    assert ev.metrics["accuracy"] == pytest.approx(1.0)
    assert not any(name.startswith("positive_") for name in ev.metrics)
    assert "roc_auc" not in ev.metrics and "pr_curve" not in ev.details
    assert ev.details["positive_class"] is None

    # The last tech sample now scores P(tech) = 0.1. One-vs-rest AUCs (pairs ranked right / 8 pairs, ties 1/2):
    #   sport 8/8; politics 7/8 (its 0.4 is below the tech sample's 0.45); tech 4.5/8 (0.1 ties one, loses three).
    probs[5] = [0.45, 0.45, 0.1]
    ev = text_classification_metrics(y, probs, classes)
    assert ev.metrics["macro_roc_auc"] == pytest.approx((1 + 7 / 8 + 4.5 / 8) / 3)

    ev = text_classification_metrics([0, 0, 1, 1], probs[:4], classes)
    assert "macro_roc_auc" not in ev.metrics
    assert any("'tech'" in note for note in ev.details["notes"])


def test_the_pr_and_roc_curves_are_thinned_monotone_and_json_ready():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=2000)
    p_pos = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    ev = text_classification_metrics(y, np.stack([1 - p_pos, p_pos], axis=1), ["ham", "spam"])
    pr, roc = ev.details["pr_curve"], ev.details["roc_curve"]
    assert len(pr["recall"]) == len(pr["precision"]) == len(pr["thresholds"]) <= MAX_CURVE_POINTS
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) <= MAX_CURVE_POINTS
    assert len(pr["recall"]) > 100  # thinned, not collapsed
    assert np.all(np.diff(pr["recall"]) <= 0) and pr["recall"][0] == 1.0 and pr["recall"][-1] == 0.0
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert pr["thresholds"][-1] is None and roc["thresholds"][0] is None
    assert all(isinstance(t, float) for t in pr["thresholds"][:-1] + roc["thresholds"][1:])
    json.dumps(ev.details, allow_nan=False)


def test_class_weights_are_balanced_and_zero_for_an_absent_class():
    w = class_weights([0, 0, 0, 1], 3)  # n = 4, K = 3
    assert w.dtype == torch.float32 and w.shape == (3,)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    labels = [0, 0, 0, 1, 2, 2, 2, 2]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    assert class_weights(torch.tensor(labels), 3).tolist() == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match="outside"):
        class_weights([0, 3], 3)
    with pytest.raises(ValueError, match="empty"):
        class_weights([], 3)


def test_balanced_sample_weights_give_every_class_the_same_total():
    labels = [0, 0, 0, 0, 0, 0, 1, 2, 2, 2]
    w = balanced_sample_weights(labels, 4)  # class 3 has no samples
    assert w.shape == (10,)
    totals = [float(w[torch.tensor(labels) == c].sum()) for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)
    assert float(w.sum()) == pytest.approx(len(labels) * 3 / 4)  # n / K per present class
    sampler = torch.utils.data.WeightedRandomSampler(w, 3000, generator=torch.Generator().manual_seed(0))
    drawn = np.bincount(np.array(labels)[list(sampler)], minlength=3)
    assert drawn.min() > 900 and drawn.max() < 1100


def _binary_arms() -> dict[str, Evaluation]:
    perfect = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]
    return {
        "fine-tune": text_classification_metrics(Y, perfect, ["ham", "spam"]),
        "scratch": text_classification_metrics(Y, PROBS, ["ham", "spam"]),
        "empty": Evaluation(metrics={"accuracy": 0.5}),  # no details: skipped
    }


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


def test_binary_reports_have_confusion_tables_and_one_pr_and_roc_plot(tmp_path):
    written = write_text_reports(tmp_path, _binary_arms(), {"classes": ["ham", "spam"]})
    plots, reports = tmp_path / "plots", tmp_path / "reports"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "plots/confusion_fine-tune.png",
        "plots/confusion_scratch.png",
        "plots/pr_curve.png",
        "plots/roc_curve.png",
        "reports/per_class_fine-tune.md",
        "reports/per_class_scratch.md",
    ]
    for name in ("confusion_fine-tune.png", "confusion_scratch.png", "pr_curve.png", "roc_curve.png"):
        assert _is_png(plots / name), name
    lines = (reports / "per_class_scratch.md").read_text().splitlines()
    assert lines[0] == "| class | precision | recall | f1 | support |"
    assert lines[2:] == ["| ham | 0.667 | 1.000 | 0.800 | 2 |", "| spam | 1.000 | 0.500 | 0.667 | 2 |"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_three_class_reports_have_no_pr_or_roc_plot(tmp_path):
    classes = ["sport", "politics", "tech"]
    probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8]]
    arms = {"feature-extraction": text_classification_metrics([0, 1, 2, 2], probs, classes)}
    written = write_text_reports(tmp_path, arms, {"classes": classes})
    assert sorted(p.name for p in written) == ["confusion_feature-extraction.png", "per_class_feature-extraction.md"]
    assert _is_png(tmp_path / "plots" / "confusion_feature-extraction.png")
    rows = (tmp_path / "reports" / "per_class_feature-extraction.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| sport", "| politics", "| tech"]
    assert rows[2] == "| tech | 1.000 | 0.500 | 0.667 | 2 |"
