"""A recording-channel shift for speech: band-limiting, gain and additive noise.

The same speakers heard through another channel (a telephone line's 300-3400 Hz band, a
noisy room) are a domain shift whose labels (who speaks, what is said) do not move: what
domain adaptation is for. ``synthetic-speech`` takes ``channel: {...}`` and writes a
shifted copy of its clean audio beside it (``<audio folder>/channel-<digest>/``, reused
like the clean audio), so a source and a target dataset differ by the channel alone::

    data: {dataset: synthetic-speech, args: {speakers: 6, utterances_per_speaker: 20}}
    extra_data:
      target: {dataset: synthetic-speech, args: {speakers: 6, utterances_per_speaker: 20, seed: 1,
                                                 channel: {low_hz: 300, high_hz: 3400, snr_db: 10}}}

The filters are torchaudio's biquads (:func:`torchaudio.functional.highpass_biquad` then
:func:`~torchaudio.functional.lowpass_biquad`, each applied ``order`` times); the noise is
white Gaussian at ``snr_db`` below the filtered clip's mean power, drawn from a generator
seeded by the clip's file name, so a clip always gets the same noise.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tlengine.atomic import write_text
from tlengine.errors import DataError

__all__ = ["ChannelArgs", "apply_channel", "channel_copy"]

_FORMAT = 1
_DONE = "channel.json"


class ChannelArgs(BaseModel):
    """A recording channel: ``synthetic-speech``'s ``args.channel``."""

    model_config = ConfigDict(extra="forbid")

    low_hz: float | None = Field(300.0, gt=0.0, description="high-pass cut-off in Hz (null: none)")
    high_hz: float | None = Field(3400.0, gt=0.0, description="low-pass cut-off in Hz (null: none)")
    order: int = Field(2, ge=1, le=4, description="how many times each biquad runs (steeper edges)")
    snr_db: float | None = Field(20.0, ge=-10.0, le=80.0, description="white noise this many dB below the signal")
    gain_db: float = Field(0.0, ge=-40.0, le=20.0, description="level change before the noise (clipped at full scale)")

    @model_validator(mode="after")
    def _band(self) -> "ChannelArgs":
        if self.low_hz is not None and self.high_hz is not None and self.low_hz >= self.high_hz:
            raise ValueError(f"low_hz ({self.low_hz:g}) must be below high_hz ({self.high_hz:g})")
        return self

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def apply_channel(wave: np.ndarray, rate: int, channel: ChannelArgs, *, seed: int) -> np.ndarray:
    """``wave`` [T] (float, -1..1, mono at ``rate`` Hz) heard through ``channel``: float32 [T]."""
    import torch
    import torchaudio.functional as AF

    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))[None]
    nyquist = rate / 2
    for _ in range(channel.order):
        if channel.low_hz is not None:
            x = AF.highpass_biquad(x, rate, min(channel.low_hz, 0.99 * nyquist))
        if channel.high_hz is not None and channel.high_hz < 0.99 * nyquist:
            x = AF.lowpass_biquad(x, rate, channel.high_hz)
    y = x[0].numpy().astype(np.float64) * 10 ** (channel.gain_db / 20)
    if channel.snr_db is not None:
        power = float(np.mean(y**2))
        noise = np.random.default_rng(seed).standard_normal(y.shape)
        y = y + noise * np.sqrt(power / 10 ** (channel.snr_db / 10))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def channel_copy(utterances: list, channel: ChannelArgs, out_dir: Path, root: Path) -> list:
    """``utterances`` (whose audio lies under ``root``) heard through ``channel``, written to
    ``out_dir`` with the same relative paths and reused when ``out_dir`` holds a complete copy
    with the same channel (``channel.json`` is written last). Returns new utterances."""
    import soundfile as sf

    from .speech_data import Utterance

    record = {"format": _FORMAT, "channel": channel.model_dump(), "clips": len(utterances)}
    done = out_dir / _DONE
    targets = [out_dir / Path(u.audio_path).resolve().relative_to(root.resolve()) for u in utterances]
    try:
        complete = json.loads(done.read_text(encoding="utf-8")) == record and all(t.is_file() for t in targets)
    except (OSError, ValueError):
        complete = False
    if not complete:
        try:
            done.unlink(missing_ok=True)
            for u, target in zip(utterances, targets):
                wave, rate = sf.read(str(u.audio_path), dtype="float32", always_2d=False)
                if wave.ndim != 1:
                    raise DataError(f"{u.audio_path}: a channel shift needs mono audio, got {wave.shape[1]} channels")
                seed = zlib.crc32(target.relative_to(out_dir).as_posix().encode())
                shifted = apply_channel(wave, int(rate), channel, seed=seed)
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                sf.write(str(partial), shifted, int(rate), subtype="PCM_16", format="WAV")
                partial.replace(target)
            write_text(done, json.dumps(record, indent=2) + "\n")
        except OSError as exc:
            raise DataError(f"cannot write the channel-shifted speech to {out_dir} ({exc.strerror or exc})") from None
    return [
        Utterance(audio_path=t, text=u.text, speaker=u.speaker, duration=u.duration)
        for u, t in zip(utterances, targets)
    ]
