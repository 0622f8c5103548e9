"""Utterances as model inputs: features per clip, padded batches with lengths.

A sample is ``(features, text, speaker)``: Whisper's log-mel [80,3000] (30 s, zero-padded),
Wav2Vec2's waveform [S] or the small CTC model's log-mel [T,80] (10 ms frames), the
normalised transcript and the speaker's name. A batch is ``({"features": [N,...],
"lengths": [N]}, {"texts": [...], "speakers": [...]})``; ``lengths`` counts the samples or
frames of each variable-length input.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from .audio import audio_duration, load_audio, log_mel, pad_batch


def features_of(waveform: torch.Tensor, preprocessing: dict[str, Any]) -> torch.Tensor:
    """One clip's features: [80,3000] for Whisper, the waveform [S] itself for Wav2Vec2,
    [T,80] log-mel for the small CTC model."""
    if preprocessing["features"] == "waveform":
        return waveform
    if preprocessing["features"] == "whisper":
        from .whisper_ct2 import whisper_features

        return whisper_features([waveform.numpy()])[0]
    return log_mel(waveform, preprocessing["sample_rate"], preprocessing.get("n_mels", 80)).transpose(0, 1).contiguous()


class UtteranceDataset(Dataset):
    """Utterances read, resampled and featurised on first use (then kept in memory).

    durations: seconds per utterance (for length-bucketed batches), read from the
    manifest or the file header without decoding the audio.
    """

    def __init__(
        self,
        utterances: Sequence[Any],
        preprocessing: dict[str, Any],
        *,
        normalizer: Any,
        max_seconds: float | None = None,
        downmix: bool = False,
    ):
        self.utterances = list(utterances)
        self.preprocessing = preprocessing
        self.max_seconds = max_seconds
        self.downmix = downmix
        self.texts = [normalizer.normalize(u.text) for u in self.utterances]
        self.durations = [u.duration if u.duration else audio_duration(u.audio_path) for u in self.utterances]
        self._features: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.utterances)

    def features(self, i: int) -> torch.Tensor:
        if i not in self._features:
            u = self.utterances[i]
            wave = load_audio(
                u.audio_path, self.preprocessing["sample_rate"], max_seconds=self.max_seconds, downmix=self.downmix
            )
            self._features[i] = features_of(wave, self.preprocessing)
        return self._features[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        return self.features(i), self.texts[i], self.utterances[i].speaker

    def feature_stats(self) -> dict[str, list[float]]:
        """Per-mel-bin mean and std of every frame (the CTC model's input normalisation)."""
        frames = torch.cat([self.features(i) for i in range(len(self))]).double()
        return {"mean": frames.mean(0).tolist(), "std": frames.std(0).clamp_min(1e-5).tolist()}


def collate_utterances(samples: Sequence[tuple[torch.Tensor, str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    features, lengths = pad_batch([f for f, _, _ in samples])
    return {"features": features, "lengths": lengths}, {
        "texts": [t for _, t, _ in samples],
        "speakers": [s for _, _, s in samples],
    }
