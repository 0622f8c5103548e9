"""Metrics of text classification: the core classification metrics plus the scores of a
positive class (spam filters, sentiment...) and ranking metrics from the class probabilities.

>>> ev = text_classification_metrics([0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], ["ham", "spam"])
>>> ev.details["positive_class"], ev.metrics["roc_auc"], round(ev.metrics["positive_f1"], 3)
('spam', 0.75, 0.667)

Class imbalance at training time: :func:`class_weights` (for ``cross_entropy(weight=...)``)
and :func:`balanced_sample_weights` (for ``WeightedRandomSampler``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from tlengine.task import Evaluation
from tlengine.training.metrics import _as_int_array, classification_metrics

#: the class taken as positive in a two-class task when none is named and it exists
DEFAULT_POSITIVE = "spam"
#: at most this many points are kept of a PR or ROC curve in ``details``
MAX_CURVE_POINTS = 200
#: how far a row of ``probs`` may sum away from 1 (float32 softmax is well within this)
_SUM_TOLERANCE = 1e-3


def text_classification_metrics(
    y_true: Sequence[int] | torch.Tensor,
    probs: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    *,
    positive_class: str | None = None,
) -> Evaluation:
    """Accuracy, macro-F1 and, for two classes, the positive class's F1 / precision / recall,
    ROC-AUC and PR-AUC (average precision) of one evaluation.

    Args:
        y_true: [N] true class indices in ``[0, K)`` (list, numpy or torch).
        probs: [N, K] class probabilities (softmax output: rows sum to 1); the prediction
            is the argmax of each row.
        classes: the K class names.
        positive_class: the positive class of a two-class task. Default: ``"spam"`` when it
            is one of the classes, else the second class (index 1).

    Returns:
        ``Evaluation`` with metrics ``accuracy`` and ``macro_f1``; for K == 2 also
        ``positive_f1``, ``positive_precision``, ``positive_recall``, ``roc_auc`` and
        ``pr_auc``; for K > 2 also ``macro_roc_auc`` (one-vs-rest). A ranking metric
        that is undefined on this test set (only one class present; for K > 2 a class
        absent) is left out, and ``details["notes"]`` says why.
        Details: everything :func:`tlengine.training.metrics.classification_metrics`
        gives (``per_class``, ``confusion_matrix``, ``classes``), ``positive_class``
        (None unless K == 2), ``notes`` (list of sentences, maybe empty), and for K == 2
        with both classes present ``pr_curve`` = ``{"precision", "recall", "thresholds"}``
        (recall from 1 down to 0) and ``roc_curve`` = ``{"fpr", "tpr", "thresholds"}``,
        each at most :data:`MAX_CURVE_POINTS` points long. The three lists of a curve have
        the same length; the end point that no threshold gives (PR: recall 0 /
        precision 1; ROC: 0 / 0) has threshold None. Everything is JSON-ready.

    Raises:
        ValueError: an unknown ``positive_class`` (the message lists the classes),
            ``probs`` of the wrong shape, not finite, or not probabilities (e.g. logits),
            plus whatever ``classification_metrics`` rejects (empty input, bad labels).
    """
    class_names = [str(c) for c in classes]
    k = len(class_names)
    true = _as_int_array(y_true, "y_true")
    p = _as_probabilities(probs, n=true.size, k=k)
    positive = _positive_class(class_names, positive_class)

    evaluation = classification_metrics(true, p.argmax(axis=1), class_names)
    metrics, details = evaluation.metrics, evaluation.details
    notes: list[str] = []
    present = set(np.unique(true).tolist())

    if k == 2:
        pos = class_names.index(positive)
        is_pos = (true == pos).astype(np.int64)
        scores = p[:, pos]
        predicted_pos = (p.argmax(axis=1) == pos).astype(np.int64)
        precision, recall, f1, _ = precision_recall_fscore_support(
            is_pos, predicted_pos, average="binary", pos_label=1, zero_division=0
        )
        metrics["positive_f1"] = float(f1)
        metrics["positive_precision"] = float(precision)
        metrics["positive_recall"] = float(recall)
        if len(present) == 2:
            metrics["roc_auc"] = float(roc_auc_score(is_pos, scores))
            metrics["pr_auc"] = float(average_precision_score(is_pos, scores))
            pr_precision, pr_recall, pr_thresholds = precision_recall_curve(is_pos, scores)
            # sklearn gives one threshold fewer than points: the last point (recall 0) has none
            details["pr_curve"] = _curve(
                precision=pr_precision, recall=pr_recall, thresholds=np.append(pr_thresholds, np.inf)
            )
            fpr, tpr, roc_thresholds = roc_curve(is_pos, scores)  # first threshold is inf: the (0, 0) point
            details["roc_curve"] = _curve(fpr=fpr, tpr=tpr, thresholds=roc_thresholds)
        else:
            only = class_names[next(iter(present))]
            notes.append(
                f"ROC-AUC, PR-AUC and their curves are left out: every test sample is of class {only!r}, "
                "so there is nothing to rank the positive class against"
            )
    elif k > 2:
        missing = [class_names[i] for i in range(k) if i not in present]
        if missing:
            notes.append(
                "macro ROC-AUC is left out: "
                + ", ".join(repr(c) for c in missing)
                + f" {'has' if len(missing) == 1 else 'have'} no test samples"
            )
        else:
            metrics["macro_roc_auc"] = float(
                roc_auc_score(true, p, multi_class="ovr", average="macro", labels=list(range(k)))
            )

    details["positive_class"] = positive if k == 2 else None
    details["notes"] = notes
    return Evaluation(metrics=metrics, details=details)


def class_weights(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class weights ("balanced") ``n / (K * count_k)`` as float32 [K], for ``cross_entropy(weight=...)``.

    The formula of ``sklearn.utils.class_weight.compute_class_weight("balanced")``, with K =
    ``num_classes``; a class with no samples gets weight 0 (sklearn refuses such a class).

    >>> class_weights([0, 0, 0, 1], 3).tolist()
    [0.4444444477558136, 1.3333333730697632, 0.0]

    Raises:
        ValueError: no labels, ``num_classes`` < 1, or labels outside ``[0, num_classes)``.
    """
    counts = _counts(labels, num_classes)
    weights = np.divide(
        counts.sum(), num_classes * counts, out=np.zeros(num_classes, dtype=np.float64), where=counts > 0
    )
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sample_weights(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights [N] (float64) for ``torch.utils.data.WeightedRandomSampler`` that
    draw every class present equally often: sample i weighs ``n / (K * count[label_i])``,
    so each class's weights sum to ``n / K`` and all weights sum to n.

    Raises:
        ValueError: as :func:`class_weights`.
    """
    counts = _counts(labels, num_classes)
    labels_arr = _as_int_array(labels, "labels")
    per_class = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(per_class[labels_arr], dtype=torch.float64)


# ---------------------------------------------------------------------------- helpers


def _positive_class(classes: list[str], positive_class: str | None) -> str | None:
    if positive_class is not None:
        if positive_class not in classes:
            raise ValueError(f"positive_class {positive_class!r} is not one of the classes {classes}")
        return positive_class
    if DEFAULT_POSITIVE in classes:
        return DEFAULT_POSITIVE
    return classes[1] if len(classes) > 1 else None


def _as_probabilities(probs: Any, *, n: int, k: int) -> np.ndarray:
    """[N, K] float64 probabilities with rows summing exactly to 1, or a ValueError."""
    if hasattr(probs, "detach"):
        probs = probs.detach().float().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n, k):
        raise ValueError(f"probs must have shape [N, K] = [{n}, {k}] (samples x classes), got {list(p.shape)}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs holds NaN or infinite values")
    sums = p.sum(axis=1)
    if p.size and (p.min() < -_SUM_TOLERANCE or np.abs(sums - 1.0).max() > _SUM_TOLERANCE):
        raise ValueError(
            "probs must be class probabilities (rows in [0, 1] summing to 1; softmax of the logits), "
            f"got rows summing to {sums.min():.4g}..{sums.max():.4g}"
        )
    return np.clip(p, 0.0, None) / np.clip(p, 0.0, None).sum(axis=1, keepdims=True) if p.size else p


def _counts(labels: Any, num_classes: int) -> np.ndarray:
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    arr = _as_int_array(labels, "labels")
    if arr.size == 0:
        raise ValueError("cannot weigh classes of an empty label list")
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"labels outside [0, {num_classes}) for {num_classes} classes")
    return np.bincount(arr, minlength=num_classes).astype(np.float64)


def _curve(**columns: np.ndarray) -> dict[str, list[float | None]]:
    """Equal-length columns of one curve, thinned to at most MAX_CURVE_POINTS points (first
    and last kept) as JSON-ready lists; non-finite values (a threshold of inf) become None."""
    length = len(next(iter(columns.values())))
    if length <= MAX_CURVE_POINTS:
        keep = np.arange(length)
    else:
        keep = np.unique(np.round(np.linspace(0, length - 1, MAX_CURVE_POINTS)).astype(np.int64))
    return {
        name: [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)[keep]]
        for name, values in columns.items()
    }
