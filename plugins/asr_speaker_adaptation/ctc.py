"""A small CTC speech recogniser trained from scratch on log-mel features.

features [N, T, n_mels] (10 ms frames) -> normalizer -> SpecAugment (train only) -> frontend (x4 subsampling)
-> layers (a stack of blocks, each [N, T', D] -> [N, T', D]) -> head -> log_probs [N, T', V].

Speaker-adaptation strategies hook onto `model.layers[i]`: each block is a distinct module whose output is
the hidden tensor [N, T', D], so forward hooks can rescale (LHUC) or add to (adapters) it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from torchaudio.models.conformer import ConformerLayer

BLANK = "<blank>"


class CharVocabulary:
    """Characters of normalised text (lowercase, no punctuation, numbers as words); index 0 is the CTC blank."""

    def __init__(self, tokens: list[str] | None = None):
        self.tokens = list(tokens) if tokens is not None else [BLANK, " ", "'", *string.ascii_lowercase]
        if self.tokens[0] != BLANK:
            raise ValueError(f"the first token must be the blank {BLANK!r}, got {self.tokens[0]!r}")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary (text {text!r})") from None

    def decode(self, ids) -> str:
        return "".join(self.tokens[int(i)] for i in ids if int(i) != 0)

    def to_json(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: list[str]) -> CharVocabulary:
        return cls(tokens)


@dataclass
class CTCConfig:
    vocab_size: int = 29
    n_mels: int = 80
    d_model: int = 144
    layers: int = 4
    kind: str = "conformer"  # "conformer" | "bigru"
    heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15  # depthwise kernel in frames of 40 ms
    dropout: float = 0.1
    specaugment: bool = True


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames left after the frontend's two kernel-3 stride-2 unpadded convolutions."""
    return ((lengths - 1) // 2 - 1) // 2


def padding_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """[N, T] bool, True on padded frames."""
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


class FeatureNormalizer(nn.Module):
    """Global per-mel-bin mean/variance normalisation; the statistics are buffers, so they save with the model."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @torch.no_grad()
    def fit(self, features) -> FeatureNormalizer:
        """features: an iterable of [T, n_mels] tensors (one per utterance, unpadded)."""
        total, total_sq, count = 0.0, 0.0, 0
        for f in features:
            f = f.double()
            total, total_sq, count = total + f.sum(0), total_sq + (f * f).sum(0), count + f.shape[0]
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(1e-10).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(1e-5))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SpecAugment(nn.Module):
    """Frequency and time masks, independent per utterance, in train mode only (torch's global RNG)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2, time_width: int = 20):
        super().__init__()
        self.freq = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)
        )
        # p=0.2: a time mask never covers more than a fifth of the (padded) utterance
        self.time = nn.ModuleList(
            torchaudio.transforms.TimeMasking(time_width, iid_masks=True, p=0.2) for _ in range(time_masks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, T, F] (normalised, so masking to 0 is masking to the mean) -> [N, T, F]."""
        if not self.training:
            return x
        x = x.transpose(1, 2).unsqueeze(1)  # iid masks need [N, C, F, T]
        for mask in [*self.freq, *self.time]:
            x = mask(x)
        return x.squeeze(1).transpose(1, 2)


class ConvSubsampling(nn.Module):
    """[N, T, n_mels] -> [N, T', d_model] with T' = subsampled_lengths(T).

    No time padding, so every valid output frame only sees valid input frames: padding can't leak in.
    """

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, stride=2)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x.transpose(1, 2)))
        x = F.gelu(self.conv2(x))
        return self.proj(x.transpose(1, 2))


class ConformerBlock(ConformerLayer):
    """torchaudio's ConformerLayer (same submodules and maths), batch-first and padding-safe.

    The stock forward lets the depthwise convolution read padded frames next to the last valid one;
    here they are zeroed right before it, so an utterance gives the same output alone or padded.
    """

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x [N, T, D], pad_mask [N, T] (True = padding) -> [N, T, D]."""
        x = x + 0.5 * self.ffn1(x)
        h = self.self_attn_layer_norm(x).transpose(0, 1)  # MultiheadAttention here is sequence-first
        h, _ = self.self_attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.self_attn_dropout(h.transpose(0, 1))
        conv = self.conv_module.sequential
        h = conv[1](conv[0](self.conv_module.layer_norm(x).transpose(1, 2)))  # pointwise conv + GLU
        h = h.masked_fill(pad_mask[:, None, :], 0.0)
        x = x + conv[2:](h).transpose(1, 2)  # depthwise conv, norm, SiLU, pointwise conv, dropout
        x = x + 0.5 * self.ffn2(x)
        return self.final_layer_norm(x)


class BiGRUBlock(nn.Module):
    """Pre-norm bidirectional GRU with a residual connection; packed, so padding is never read."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.gru = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x [N, T, D], pad_mask [N, T] (True = padding) -> [N, T, D]."""
        lengths = (~pad_mask).sum(1).cpu()
        h = nn.utils.rnn.pack_padded_sequence(self.norm(x), lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.gru(h)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        return x + self.dropout(h)


class CTCRecognizer(nn.Module):
    """Log-mel features -> per-frame character log-probabilities, trained with CTC."""

    def __init__(self, config: CTCConfig | None = None, **overrides):
        super().__init__()
        config = config or CTCConfig()
        self.config = cfg = CTCConfig(**{**config.__dict__, **overrides})
        if cfg.kind not in ("conformer", "bigru"):
            raise ValueError(f"kind must be 'conformer' or 'bigru', got {cfg.kind!r}")
        self.normalizer = FeatureNormalizer(cfg.n_mels)
        self.specaugment = SpecAugment() if cfg.specaugment else nn.Identity()
        self.frontend = ConvSubsampling(cfg.n_mels, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.kind == "conformer":
            make = lambda: ConformerBlock(
                cfg.d_model, cfg.ff_mult * cfg.d_model, cfg.heads, cfg.conv_kernel, cfg.dropout
            )
        else:
            make = lambda: BiGRUBlock(cfg.d_model, cfg.dropout)
        self.layers = nn.ModuleList(make() for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward_features(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [N, T, n_mels], lengths [N] -> hidden [N, T', D], out_lengths [N]."""
        x = self.specaugment(self.normalizer(features))
        x = self.dropout(self.frontend(x))
        out_lengths = subsampled_lengths(lengths.to(x.device))
        if int(out_lengths.min()) < 1:
            raise ValueError(f"utterances need at least 7 frames (70 ms), got lengths {lengths.tolist()}")
        pad_mask = padding_mask(out_lengths, x.shape[1])
        for layer in self.layers:
            x = layer(x, pad_mask)
        return x, out_lengths

    def forward_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, T', D] -> log_probs [N, T', V]."""
        return self.head(hidden).log_softmax(-1)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [N, T, n_mels], lengths [N] -> log_probs [N, T', V], out_lengths [N]."""
        hidden, out_lengths = self.forward_features(features, lengths)
        return self.forward_head(hidden), out_lengths


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """log_probs [N, T', V], out_lengths [N], targets (ids without blanks) -> mean over utterances of loss / target length."""
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    return F.ctc_loss(
        log_probs.transpose(0, 1).float(), flat, out_lengths.cpu(), target_lengths, blank=0, zero_infinity=True
    )


def greedy_decode(log_probs: torch.Tensor, out_lengths: torch.Tensor, vocab: CharVocabulary) -> list[str]:
    """log_probs [N, T', V], out_lengths [N] -> texts: best path, repeats collapsed, blanks dropped."""
    best = log_probs.argmax(-1).cpu()
    return [vocab.decode(torch.unique_consecutive(ids[:n])) for ids, n in zip(best, out_lengths.tolist())]
