"""The captioning model: visual tokens from a grid encoder, projected, read by a BERT decoder.

Parts (``TransferModel`` parts, so every strategy works on them unchanged):

* ``encoder`` - pretrained, blocks: a :class:`.encoders.GridTokens` (VGG16 by default),
  images ``[N,3,S,S]`` -> visual tokens ``[N,T,C]``. This is ``forward_features``: what the
  feature cache stores when the encoder is frozen.
* ``projection`` - new: :class:`VisualProjection`, ``[N,T,C]`` -> ``[N,T,D]`` (D the
  decoder's width) with a learned position per grid cell.
* ``decoder`` - pretrained, blocks ``embeddings``, ``layer.0`` ..: the
  :class:`.decoder.CaptionDecoder` (a BERT checkpoint as a causal LM with cross-attention).
* ``decoder_new`` - new, *attached* inside ``decoder``: :class:`DecoderNewParameters`, the
  parameters no BERT checkpoint has (every layer's cross-attention, the LM head's transform
  and bias). Being a new part, it trains at the full learning rate in every arm, also when
  the decoder's pretrained blocks are frozen (feature extraction) - exactly what a
  pretrained decoder needs to learn to look at the image.

``forward_head(tokens, targets)`` with targets is teacher forcing and returns the loss;
without, it decodes (greedy or beam search, :attr:`CaptioningModel.generation`) and
returns one caption per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tlengine.model import TransferModel
from torch import nn

from .decoder import IGNORE_INDEX, CaptionDecoder
from .encoders import GridEncoder

__all__ = ["CaptionTarget", "CaptioningModel", "DecoderNewParameters", "Generation", "VisualProjection"]


@dataclass
class CaptionTarget:
    """The references of one image: the captions as read and their token ids
    (``[CLS] .. [SEP]``, cut to the task's ``max_length``)."""

    captions: list[str]
    token_ids: list[list[int]]


@dataclass
class Generation:
    """How captions are decoded: ``num_beams`` 1 is greedy; ``max_length`` counts generated
    tokens ([SEP] included); ``length_penalty`` divides a beam's log-probability by
    length**penalty; ``no_repeat_ngram_size`` > 0 forbids repeating an n-gram of that size."""

    max_length: int = 32
    num_beams: int = 3
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def replace(self, **changes: Any) -> "Generation":
        values = {**self.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        return Generation(**values)


class VisualProjection(nn.Module):
    """Visual tokens ``[N,T,C]`` -> ``[N,T,D]``: linear map, plus a learned embedding per
    grid cell (the decoder's cross-attention has no notion of where a token sits, and
    captions say "left of" and "above"), layer norm, dropout."""

    def __init__(self, channels: int, width: int, num_tokens: int, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.Linear(channels, width)
        self.position = nn.Parameter(torch.zeros(num_tokens, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.position.shape[0]:
            raise ValueError(
                f"the encoder gave {tokens.shape[1]} visual tokens, the projection was built for "
                f"{self.position.shape[0]} (another input size?)"
            )
        x = self.linear(tokens.to(self.linear.weight.dtype)) + self.position
        return self.dropout(self.norm(x))


class DecoderNewParameters(nn.Module):
    """A view of the decoder's parameters that no BERT checkpoint provides: every layer's
    ``crossattention``, the LM head's ``transform`` and output ``bias``, and with a
    vocabulary of its own (``model.tokenizer: train``) the word embeddings. Its modules stay
    where they are in the decoder (this module is attached, not a child of the model), so
    state-dict keys do not change. The output projection's weight is the word embedding
    matrix (tied) and belongs to the decoder's ``embeddings`` block."""

    def __init__(self, decoder: CaptionDecoder):
        super().__init__()
        base = decoder.model.base_model
        self.cross_attention = nn.ModuleList(layer.crossattention for layer in base.encoder.layer)
        head = decoder.model.get_output_embeddings()
        predictions = decoder.model.cls.predictions
        self.transform = predictions.transform
        self.bias = predictions.bias
        if head is not None and head.bias is not None and head.bias is not predictions.bias:
            self.output_bias = head.bias
        if decoder.new_vocabulary:  # a tokenizer trained on the captions: its embeddings are new
            self.word_embeddings = base.embeddings.word_embeddings


class CaptioningModel(TransferModel):
    """Encoder -> projection -> decoder; see the module docstring for the parts.

    generation: the decoding settings used when ``forward_head`` is called without targets.
    label_smoothing: of the teacher-forcing loss.
    """

    def __init__(
        self,
        encoder: GridEncoder,
        decoder: CaptionDecoder,
        *,
        projection_dropout: float = 0.1,
        generation: Generation | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.add_part("encoder", encoder.module, blocks=encoder.blocks)
        self.add_part(
            "projection",
            VisualProjection(encoder.channels, decoder.hidden_size, encoder.num_tokens, projection_dropout),
        )
        self.add_part("decoder", decoder, blocks=decoder.blocks)
        self.add_part("decoder_new", DecoderNewParameters(decoder), attached=True)
        self.preprocessing = dict(encoder.preprocessing)
        self.arch = encoder.arch
        self.feature_dim = encoder.channels
        self.grid_shape = tuple(encoder.grid_shape)
        self.generation = generation or Generation()
        self.label_smoothing = float(label_smoothing)

    @property
    def caption_decoder(self) -> CaptionDecoder:
        return self.part("decoder").module

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images ``[N,3,S,S]`` -> visual tokens ``[N,T,C]`` (what the feature cache stores)."""
        return self.run_part("encoder", inputs)

    def forward_head(
        self, features: torch.Tensor, targets: Sequence[CaptionTarget] | None = None, **generation: Any
    ) -> Any:
        """With ``targets``: the mean teacher-forcing loss over every reference caption of every
        image (a scalar; each image's visual tokens are shared by its captions). Without: one
        decoded caption per image (list of str), with :attr:`generation` updated by
        ``generation`` (e.g. ``num_beams=5``)."""
        visual = self.run_part("projection", features)
        if targets is None:
            return self.caption(visual, self.generation.replace(**generation))
        batch = teacher_forcing_batch(targets, self.caption_decoder.pad_token_id, visual.device)
        visual = visual.index_select(0, batch["image"])
        out = self.run_part(
            "decoder",
            batch["input_ids"],
            batch["attention_mask"],
            visual,
            None,
            batch["labels"],
            label_smoothing=self.label_smoothing,
        )
        return out.loss

    def caption(self, visual: torch.Tensor, generation: Generation) -> list[str]:
        """Decode projected visual tokens ``[N,T,D]`` into N captions."""
        return self.caption_decoder.generate(
            visual,
            max_length=generation.max_length,
            num_beams=generation.num_beams,
            length_penalty=generation.length_penalty,
            no_repeat_ngram_size=generation.no_repeat_ngram_size,
        )


def teacher_forcing_batch(
    targets: Sequence[CaptionTarget], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Every reference caption of every image as one right-padded batch.

    Returns ``input_ids`` / ``attention_mask`` / ``labels`` [M,L] (M = captions over all
    images, labels -100 at padding) and ``image`` [M] (the image each caption belongs to).
    """
    rows = [(i, ids) for i, t in enumerate(targets) for ids in t.token_ids]
    if not rows:
        raise ValueError("a training batch has no caption")
    longest = max(len(ids) for _, ids in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, (_, ids) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[r, : len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    image = torch.tensor([i for i, _ in rows], dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
        "image": image.to(device),
    }
