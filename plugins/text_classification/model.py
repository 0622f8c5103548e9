"""The text classifier: a pretrained encoder, masked pooling, a linear head.

``forward_features`` runs the encoder part and returns ``(hidden states [N,T,D],
lengths [N])`` — the padded-sequence form of the feature-cache contract, so a cached
arm stores one pooled row per text (pooled under the attention mask by the core) and a
live arm pools the same way in :class:`PooledHead`. Texts are right-padded, so the
first ``length`` positions of a row are its tokens and position 0 is ``[CLS]``.

A strategy may add a part named ``classical`` (the TF-IDF baseline, see
:mod:`.tfidf`): the model then classifies the raw texts with it and never runs the
encoder.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from tlengine.model import Backbone, TransferModel
from torch import nn

__all__ = ["PooledHead", "TextClassifier", "masked_pool"]


def masked_pool(hidden: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """[N,T,D] hidden states of right-padded texts -> [N,D]: ``mean`` over each text's
    ``lengths`` tokens (padding ignored), or ``cls`` (position 0)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    summed = (hidden * mask[..., None].to(hidden.dtype)).sum(1)
    return summed / lengths.clamp(min=1).to(hidden.device, hidden.dtype)[:, None]


class PooledHead(nn.Module):
    """Pooling (when given a sequence) -> dropout -> linear: logits [N,K].

    Takes ``(hidden [N,T,D], lengths [N])`` from the live encoder or pooled rows [N,D]
    from the feature cache."""

    def __init__(self, dim: int, num_classes: int, pooling: Literal["mean", "cls"], dropout: float):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features: Any) -> torch.Tensor:
        if isinstance(features, tuple):
            features = masked_pool(features[0], features[1], self.pooling)
        return self.linear(self.dropout(features.float()))


class TextClassifier(TransferModel):
    """Parts ``encoder`` (pretrained: embeddings + encoder layers) and ``head``."""

    def __init__(self, encoder: Backbone, num_classes: int, *, pooling: Literal["mean", "cls"], dropout: float):
        super().__init__()
        self.add_part("encoder", encoder.module, blocks=encoder.blocks)
        self.add_part("head", PooledHead(encoder.feature_dim, num_classes, pooling, dropout))
        self.arch = encoder.arch
        self.feature_dim = encoder.feature_dim
        self.num_classes = num_classes
        self.pooling = pooling

    def forward_features(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = inputs["attention_mask"]
        hidden = self.run_part("encoder", inputs["input_ids"], mask)
        return hidden, mask.sum(1)

    def forward(self, inputs: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if "classical" in self.parts:
            return self.run_part("classical", inputs["text"])
        return super().forward(inputs, *args, **kwargs)
