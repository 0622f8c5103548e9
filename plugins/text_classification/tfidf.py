"""The classical baseline every text pipeline can add: TF-IDF + logistic regression.

``compare: [..., {name: tfidf-logreg}]`` fits scikit-learn's ``HashingVectorizer`` (word
1-2-grams, no vocabulary to store) -> ``TfidfTransformer`` (sublinear tf, smoothed idf,
L2 rows) -> ``LogisticRegression`` (saga solver) on the training texts, choosing ``C`` on the
validation split (macro-F1) unless ``args.C`` is set. It is an arm like the others —
same splits, same metrics, same table — but fitted in one call (``fits_directly``).

The fitted baseline lives in the model as part ``classical`` (:class:`TfidfClassifier`):
idf weights and the linear layer are buffers, so the arm's checkpoint is plain
safetensors and ``tlengine predict`` runs it like any arm.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tlengine.strategies import Strategy
from torch import nn

__all__ = ["TfidfClassifier", "TfidfLogReg"]


class TfidfArgs(BaseModel):
    """``strategy.args`` of ``tfidf-logreg``."""

    model_config = ConfigDict(extra="forbid")
    ngram_max: int = Field(2, ge=1, le=3, description="word n-grams from 1 to this")
    n_features: int = Field(2**18, ge=2**10, le=2**22, description="hashed feature columns")
    C: float | None = Field(None, gt=0.0, description="inverse regularisation; null = chosen on the validation split")
    class_weight: Literal["auto", "balanced", "none"] = Field(
        "auto", description="balanced: weigh classes by inverse frequency; auto: balanced when data.balance is set"
    )
    max_iter: int = Field(2000, ge=10)


class TfidfClassifier(nn.Module):
    """Raw texts -> logits [N,K], by hashed TF-IDF features and a linear layer.

    Buffers: ``idf`` [F], ``weight`` [K,F] (or [1,F] for two classes, sklearn's binary
    form), ``bias`` [K] (or [1]). Equal to the scikit-learn pipeline it was fitted from.
    """

    def __init__(self, n_features: int, num_classes: int, ngram_max: int):
        super().__init__()
        rows = 1 if num_classes == 2 else num_classes
        self.ngram_max, self.num_classes = ngram_max, num_classes
        self.register_buffer("idf", torch.ones(n_features))
        self.register_buffer("weight", torch.zeros(rows, n_features))
        self.register_buffer("bias", torch.zeros(rows))

    def vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            ngram_range=(1, self.ngram_max), n_features=self.idf.shape[0], alternate_sign=False, norm=None
        )

    def tfidf(self, texts: list[str]) -> Any:
        """Sparse [N,F] TF-IDF rows (sublinear tf, this model's idf, L2-normalised)."""
        from sklearn.preprocessing import normalize

        counts = self.vectorizer().transform(texts).astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)
        return normalize(counts.multiply(self.idf.cpu().double().numpy()[None, :]).tocsr())

    def forward(self, texts: list[str]) -> torch.Tensor:
        x = self.tfidf(list(texts))
        w = self.weight.cpu().double().numpy()
        scores = torch.from_numpy(np.asarray(x @ w.T)) + self.bias.cpu().double()
        if self.num_classes == 2:  # sklearn's binary form: one score for class 1
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
        return scores.float().to(self.idf.device)


class TfidfLogReg(Strategy):
    """TF-IDF + logistic regression on the raw texts; the encoder is never run."""

    name = "tfidf-logreg"
    uses_pretrained = False
    fits_directly = True
    Args: ClassVar[type[BaseModel]] = TfidfArgs

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0

    def prepare(self, model: Any, data: Any) -> None:
        args = self.args
        model.add_part(
            "classical", TfidfClassifier(args.n_features, model.num_classes, args.ngram_max), owner="strategy"
        )

    def fit(self, task: Any, model: Any, data: Any, *, seed: int) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score

        part: TfidfClassifier = model.part("classical").module
        train_texts, train_labels = _texts(data.train)
        counts = part.vectorizer().transform(train_texts)
        idf = TfidfTransformer(sublinear_tf=True, smooth_idf=True).fit(counts).idf_
        part.idf.copy_(torch.from_numpy(idf).float())
        x_train = part.tfidf(train_texts)
        val_texts, val_labels = _texts(data.val)

        weighting = self.args.class_weight
        if weighting == "auto":  # follow the task's data.balance, like the other arms' loss or sampler
            weighting = "balanced" if getattr(task, "balances_classes", False) else "none"
        class_weight = "balanced" if weighting == "balanced" else None

        def fitted(c: float) -> Any:
            # saga: 5-10x faster than lbfgs on wide sparse TF-IDF rows, same optimum
            clf = LogisticRegression(
                C=c, solver="saga", max_iter=self.args.max_iter, class_weight=class_weight, random_state=seed
            )
            return clf.fit(x_train, train_labels)

        if self.args.C is not None or not val_texts:
            clf = fitted(self.args.C or 10.0)
        else:
            x_val = part.tfidf(val_texts)
            scored = []
            for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                candidate = fitted(c)
                scored.append((f1_score(val_labels, candidate.predict(x_val), average="macro"), -c, candidate))
            clf = max(scored, key=lambda s: (s[0], s[1]))[2]
        coef, intercept = clf.coef_, clf.intercept_
        if len(clf.classes_) != model.num_classes:
            raise ValueError("the training split lacks a class")  # the splits guarantee every class
        part.weight.copy_(torch.from_numpy(coef).float())
        part.bias.copy_(torch.from_numpy(intercept).float())
        self.chosen_C = float(clf.C)


def _texts(dataset: Any) -> tuple[list[str], list[int]]:
    return list(dataset.texts), list(dataset.labels)
