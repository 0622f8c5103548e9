"""Whisper as a model of named parts: ``encoder`` and ``decoder``, each split into blocks.

transformers' ``WhisperForConditionalGeneration`` does the arithmetic; this module only
names its pieces for the strategies:

* ``encoder`` blocks: ``stem`` (the two convolutions and the position table), then
  ``layer.0`` .. ``layer.{L-1}`` (the last one with the final LayerNorm);
* ``decoder`` blocks: ``embeddings`` (token + position tables; the output projection is
  tied to the token table), then ``layer.0`` .. ``layer.{L-1}`` (the last with the final
  LayerNorm);
* ``hidden_layers``: every encoder and decoder layer (width ``d_model``), where LHUC
  scales and adapters attach.

Training is teacher forcing on ``<|startoftranscript|>[<|en|><|transcribe|>]<|notimestamps|>``
+ the transcript's tokens + ``<|endoftext|>``; decoding is greedy (``whisper_ct2.greedy_transcribe``).
The state dict holds ``encoder.*`` and ``decoder.*`` only, so a pretrained file loads as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from tlengine.blocks import BlockGroup
from tlengine.model import HiddenLayer, TransferModel
from torch import nn


def _layer_blocks(stack: nn.Module, first: tuple[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    layers = list(stack.layers)
    blocks = [first] + [(f"layer.{i}", layer) for i, layer in enumerate(layers[:-1])]
    last = BlockGroup([(f"layers.{len(layers) - 1}", layers[-1]), ("layer_norm", stack.layer_norm)])
    return blocks + [(f"layer.{len(layers) - 1}", last)]


def encoder_blocks(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    stem = BlockGroup(
        [("conv1", encoder.conv1), ("conv2", encoder.conv2), ("embed_positions", encoder.embed_positions)]
    )
    return _layer_blocks(encoder, ("stem", stem))


def decoder_blocks(decoder: nn.Module) -> list[tuple[str, nn.Module]]:
    embeddings = BlockGroup([("embed_tokens", decoder.embed_tokens), ("embed_positions", decoder.embed_positions)])
    return _layer_blocks(decoder, ("embeddings", embeddings))


def prompt_ids(tokenizer: Any, config: Any) -> list[int]:
    """The decoder's start: ``<|startoftranscript|>``, for multilingual checkpoints
    ``<|en|><|transcribe|>``, then ``<|notimestamps|>``."""
    tokens = ["<|startoftranscript|>"]
    if getattr(config, "vocab_size", 0) >= 51865:  # multilingual vocabularies hold the language tokens
        tokens += ["<|en|>", "<|transcribe|>"]
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens + ["<|notimestamps|>"]]


class WhisperRecognizer(TransferModel):
    """A Whisper checkpoint as parts ``encoder`` / ``decoder``.

    ``forward(inputs, targets)`` returns the teacher-forcing cross-entropy (mean over target
    tokens) of ``inputs["features"]`` [N,80,3000] log-mel (``whisper_features``);
    :meth:`transcribe` decodes greedily.
    """

    def __init__(self, whisper: nn.Module, tokenizer: Any, *, max_new_tokens: int = 96, label_smoothing: float = 0.0):
        super().__init__()
        # Not a child module: its encoder and decoder are the parts, so state-dict keys read
        # encoder.* / decoder.* once; the tied output projection shares the token table.
        object.__setattr__(self, "whisper", whisper)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.label_smoothing = label_smoothing
        self.prompt = prompt_ids(tokenizer, whisper.config)
        self.eot = int(whisper.config.eos_token_id)
        self.add_part("encoder", whisper.model.encoder, blocks=encoder_blocks(whisper.model.encoder))
        self.add_part("decoder", whisper.model.decoder, blocks=decoder_blocks(whisper.model.decoder))
        self.arch = "whisper"
        self.feature_dim = int(whisper.config.d_model)

    def hidden_layers(self) -> list[HiddenLayer]:
        width = int(self.whisper.config.d_model)
        return [
            HiddenLayer(part, f"{part}.layer{i}", layer, width)
            for part in ("encoder", "decoder")
            for i, layer in enumerate(self.part(part).module.layers)
        ]

    def target_ids(self, text: str) -> list[int]:
        """A transcript's tokens (Whisper writes a leading space) followed by ``<|endoftext|>``."""
        return self.tokenizer(" " + text.strip(), add_special_tokens=False).input_ids + [self.eot]

    def forward_features(self, inputs: Any) -> torch.Tensor:
        """[N,80,3000] log-mel -> encoder states [N,1500,D]."""
        return self.run_part("encoder", inputs["features"]).last_hidden_state

    def forward(self, inputs: Any, targets: Any) -> torch.Tensor:
        """Teacher-forcing loss of the batch; ``targets["texts"]`` are the (normalised) transcripts."""
        return self.teacher_forcing_loss(self.forward_features(inputs), [self.target_ids(t) for t in targets["texts"]])

    def transcribe(self, inputs: Any) -> list[str]:
        """Greedy transcripts of ``inputs["features"]`` [N,80,3000]."""
        from .whisper_ct2 import greedy_transcribe

        return greedy_transcribe(self.whisper, self.tokenizer, inputs["features"], self.max_new_tokens)

    def teacher_forcing_loss(self, states: torch.Tensor, token_ids: list[list[int]]) -> torch.Tensor:
        """Cross-entropy of predicting each target token after the prompt and the ones before.

        states: encoder states [N,T,D]; token_ids: each transcript's ids ending in eot.
        """
        n, prompt = len(token_ids), self.prompt
        length = len(prompt) + max(len(t) for t in token_ids) - 1
        decoder_input = torch.full((n, length), self.eot, dtype=torch.long)
        labels = torch.full((n, length), -100, dtype=torch.long)
        for i, ids in enumerate(token_ids):
            sequence = prompt + ids
            decoder_input[i, : len(sequence) - 1] = torch.tensor(sequence[:-1])
            labels[i, len(prompt) - 1 : len(sequence) - 1] = torch.tensor(ids)
        decoder_input, labels = decoder_input.to(states.device), labels.to(states.device)
        hidden = self.run_part("decoder", input_ids=decoder_input, encoder_hidden_states=states).last_hidden_state
        logits = self.whisper.proj_out(hidden)
        return nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing
        )
