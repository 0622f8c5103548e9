"""A transformers Wav2Vec2-CTC checkpoint as a model of named parts.

* ``encoder`` (pretrained): ``Wav2Vec2Model``; blocks ``features`` (the convolutional
  feature encoder, its projection, the masking vector, the positional convolution and the
  encoder's input LayerNorm), then ``layer.0`` .. ``layer.{L-1}``;
* ``decoder`` (pretrained): the CTC output layer (``lm_head``), one block;
* ``hidden_layers``: every transformer layer (width ``hidden_size``), for LHUC and adapters.

Inputs are raw waveforms [N,S] at 16 kHz with their lengths [N] (normalised per
utterance when the checkpoint's feature extractor says so); training is CTC on the
checkpoint's own character vocabulary, decoding greedy (``tokenizer.batch_decode`` merges
repeats and drops blanks and the word delimiter).
"""

from __future__ import annotations

from typing import Any

import torch
from tlengine.blocks import BlockGroup
from tlengine.model import HiddenLayer, TransferModel
from torch import nn


class Wav2Vec2Recognizer(TransferModel):
    """``forward(inputs, targets)`` -> CTC loss; :meth:`transcribe` -> greedy transcripts."""

    def __init__(self, ctc_model: nn.Module, processor: Any):
        super().__init__()
        w2v, head = ctc_model.wav2vec2, ctc_model.lm_head
        object.__setattr__(self, "ctc_model", ctc_model)  # for its length arithmetic; the parts hold its modules
        self.tokenizer = processor.tokenizer
        self.normalize = bool(getattr(processor.feature_extractor, "do_normalize", True))
        self.blank = int(ctc_model.config.pad_token_id)
        features = [
            ("feature_extractor", w2v.feature_extractor),
            ("feature_projection", w2v.feature_projection),
            ("encoder.pos_conv_embed", w2v.encoder.pos_conv_embed),
            ("encoder.layer_norm", w2v.encoder.layer_norm),
        ]
        if getattr(w2v, "masked_spec_embed", None) is not None:
            features.append(("masked_spec_embed", w2v.masked_spec_embed))
        blocks = [("features", BlockGroup(features))] + [(f"layer.{i}", m) for i, m in enumerate(w2v.encoder.layers)]
        self.add_part("encoder", w2v, blocks=blocks)
        self.add_part("decoder", head, blocks=[("output", head)])
        self.arch = "wav2vec2-ctc"
        self.feature_dim = int(ctc_model.config.hidden_size)
        upper = [t for t in self.tokenizer.get_vocab() if len(t) == 1 and t.isalpha()]
        self.uppercase = bool(upper) and all(t.isupper() for t in upper)

    def hidden_layers(self) -> list[HiddenLayer]:
        layers = self.part("encoder").module.encoder.layers
        return [HiddenLayer("encoder", f"encoder.layer{i}", m, self.feature_dim) for i, m in enumerate(layers)]

    def _mask(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None].to(waves.device)).long()
        if self.normalize:  # zero mean, unit variance over each clip's real samples, as the checkpoint was trained
            n = lengths.to(waves.device).clamp_min(1)[:, None].float()
            mean = (waves * mask).sum(1, keepdim=True) / n
            var = (((waves - mean) * mask) ** 2).sum(1, keepdim=True) / n
            waves = (waves - mean) / torch.sqrt(var + 1e-7) * mask
        return waves, mask

    def forward_features(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms [N,S] + lengths [N] (samples) -> hidden [N,T,D], frame lengths [N]."""
        waves, mask = self._mask(inputs["features"], inputs["lengths"])
        hidden = self.run_part("encoder", waves, attention_mask=mask).last_hidden_state
        frames = self.ctc_model._get_feat_extract_output_lengths(inputs["lengths"].to(hidden.device))
        return hidden, frames.long()

    def log_probs(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, frames = self.forward_features(inputs)
        return self.run_part("decoder", hidden).float().log_softmax(-1), frames

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text.upper() if self.uppercase else text, add_special_tokens=False).input_ids

    def forward(self, inputs: Any, targets: Any) -> torch.Tensor:
        log_probs, frames = self.log_probs(inputs)
        ids = [self.target_ids(t) for t in targets["texts"]]
        flat = torch.tensor([i for t in ids for i in t], dtype=torch.long)
        return nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            flat,
            frames.cpu(),
            torch.tensor([len(t) for t in ids]),
            blank=self.blank,
            zero_infinity=True,
        )

    def transcribe(self, inputs: Any) -> list[str]:
        log_probs, frames = self.log_probs(inputs)
        best = log_probs.argmax(-1).cpu()
        return [self.tokenizer.decode(ids[:n].tolist()).strip() for ids, n in zip(best, frames.tolist())]
