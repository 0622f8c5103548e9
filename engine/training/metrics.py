"""Classification metrics as a JSON-ready :class:`tlengine.task.Evaluation`.

>>> ev = classification_metrics([0, 1, 1], [0, 1, 0], ["cat", "dog"])
>>> round(ev.metrics["accuracy"], 3)
0.667
>>> ev.details["confusion_matrix"]  # rows = true class, columns = predicted class
[[1, 0], [1, 1]]
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ..task import Evaluation


def classifier_batch(
    logits: torch.Tensor, targets: torch.Tensor, *, keep: Literal["pred", "probs"] = "pred"
) -> dict[str, Any]:
    """What a classifier's metrics need of one batch (a task's ``evaluation_batch``): the
    summed cross-entropy of ``logits`` [N,K] against ``targets`` [N], the targets, and the
    predicted classes [N] (``keep="pred"``) or the class probabilities [N,K] (``"probs"``), on the CPU."""
    logits = logits.float()
    kept = logits.argmax(1) if keep == "pred" else logits.softmax(1)
    loss = float(F.cross_entropy(logits, targets, reduction="sum"))
    return {keep: kept.cpu(), "true": targets.cpu(), "loss": loss}


def classifier_totals(
    outcomes: list[dict[str, Any]], *, keep: Literal["pred", "probs"] = "pred"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`classifier_batch`'s results of every batch -> (targets [N], predictions [N] or
    probabilities [N,K], mean cross-entropy); empty tensors when there were no batches."""
    if not outcomes:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 0.0
    y_true = torch.cat([o["true"] for o in outcomes])
    kept = torch.cat([o[keep] for o in outcomes])
    return y_true, kept, sum(o["loss"] for o in outcomes) / max(len(y_true), 1)


def _as_int_array(values: Any, what: str) -> np.ndarray:
    """A 1-D int64 numpy array from a list, numpy array or torch tensor."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{what} must hold integer class indices")
    return arr.astype(np.int64)


def classification_metrics(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> Evaluation:
    """Accuracy, macro-F1, per-class scores and the confusion matrix of one evaluation.

    Args:
        y_true: 1-D ints in ``[0, K)``, the true class of each sample (list, numpy or torch).
        y_pred: 1-D ints in ``[0, K)``, the predicted class, same length as ``y_true``.
        class_names: the K class names; index ``i`` names class ``i``.

    Returns:
        ``Evaluation(metrics={"accuracy", "macro_f1"}, details={"per_class", "confusion_matrix",
        "classes"})``. Scores are fractions in [0, 1]. Macro-F1 averages over all K classes,
        so a class with no samples and no predictions counts as F1 = 0. The confusion matrix
        is K x K with rows = true class and columns = predicted class, and has a row for
        every class even when that class is absent from ``y_true``. Everything is plain
        Python ``float``/``int``/``str`` (JSON-ready).

    Raises:
        ValueError: empty input, different lengths, or labels outside ``[0, K)``.
    """
    true = _as_int_array(y_true, "y_true")
    pred = _as_int_array(y_pred, "y_pred")
    if true.size == 0:
        raise ValueError("cannot compute metrics of an empty evaluation (no samples)")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length ({true.size} vs {pred.size})")
    classes = [str(c) for c in class_names]
    k = len(classes)
    if k == 0:
        raise ValueError("class_names is empty")
    for what, arr in (("y_true", true), ("y_pred", pred)):
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(f"{what} holds labels outside [0, {k}) for {k} classes")

    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    matrix = confusion_matrix(true, pred, labels=labels)
    per_class = [
        {
            "class": classes[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in labels
    ]
    metrics = {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
    }
    details = {
        "per_class": per_class,
        "confusion_matrix": [[int(v) for v in row] for row in matrix.tolist()],
        "classes": classes,
    }
    return Evaluation(metrics=metrics, details=details)
