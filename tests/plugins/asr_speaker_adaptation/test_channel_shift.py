"""A recording-channel shift for speech (``synthetic-speech``'s ``args.channel``) and domain
adaptation on it: the same speakers through a telephone band with noise are a target
domain the core DA strategies adapt speaker identification to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError
from resume_helpers import run_in_process
from tlengine_plugins.asr_speaker_adaptation.channel import ChannelArgs, apply_channel
from tlengine_plugins.asr_speaker_adaptation.speech_data import SyntheticSpeechArgs, build_synthetic_speech

RATE = 16000


def band_energy(wave: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_the_channel_keeps_the_band_and_adds_noise_at_the_asked_snr():
    t = np.arange(RATE) / RATE
    wave = 0.3 * (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t) + np.sin(2 * np.pi * 100 * t))
    quiet = apply_channel(wave, RATE, ChannelArgs(snr_db=None), seed=0)
    # 1 kHz passes, 100 Hz and 6 kHz are cut by far more than 20 dB
    assert band_energy(quiet, 900, 1100) > 0.7 * band_energy(wave, 900, 1100)
    assert band_energy(quiet, 5900, 6100) < 0.01 * band_energy(wave, 5900, 6100)
    assert band_energy(quiet, 50, 150) < 0.01 * band_energy(wave, 50, 150)

    noisy = apply_channel(wave, RATE, ChannelArgs(snr_db=10), seed=0)
    snr = 10 * np.log10(np.mean(quiet**2) / np.mean((noisy - quiet) ** 2))
    assert snr == pytest.approx(10, abs=0.3)
    assert np.array_equal(noisy, apply_channel(wave, RATE, ChannelArgs(snr_db=10), seed=0))  # seeded
    assert not np.array_equal(noisy, apply_channel(wave, RATE, ChannelArgs(snr_db=10), seed=1))
    loud = apply_channel(wave, RATE, ChannelArgs(snr_db=None, gain_db=40.0 - 20.0), seed=0)
    assert np.abs(loud).max() <= 1.0  # clipped at full scale


def test_channel_args_are_checked():
    with pytest.raises(ValidationError, match="low_hz"):
        ChannelArgs(low_hz=4000, high_hz=3000)
    with pytest.raises(ValidationError):
        SyntheticSpeechArgs(channel={"band": [1, 2]})


def test_the_shifted_copy_has_the_same_speakers_and_texts_and_is_reused(tmp_path: Path, monkeypatch):
    args = {"speakers": 2, "utterances_per_speaker": 2, "seed": 0, "out_dir": "speech"}
    clean = build_synthetic_speech(SyntheticSpeechArgs(**args), tmp_path)
    channel = {"low_hz": 300, "high_hz": 3400, "snr_db": 15}
    shifted = build_synthetic_speech(SyntheticSpeechArgs(**args, channel=channel), tmp_path)
    assert [(u.speaker, u.text) for u in shifted] == [(u.speaker, u.text) for u in clean]
    for a, b in zip(clean, shifted):
        assert b.audio_path != a.audio_path and b.audio_path.is_relative_to(tmp_path / "speech")
        wa, ra = sf.read(str(a.audio_path), dtype="float32")
        wb, rb = sf.read(str(b.audio_path), dtype="float32")
        assert ra == rb and wa.shape == wb.shape and not np.allclose(wa, wb, atol=1e-3)

    from tlengine_plugins.asr_speaker_adaptation import channel as channel_module

    def never(*a, **k):
        raise AssertionError("the complete shifted copy was written again")

    monkeypatch.setattr(channel_module, "apply_channel", never)
    again = build_synthetic_speech(SyntheticSpeechArgs(**args, channel=channel), tmp_path)
    assert [u.audio_path for u in again] == [u.audio_path for u in shifted]


def speech(root: Path, seed: int, channel: dict[str, Any] | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"speakers": 3, "utterances_per_speaker": 6, "seed": seed, "out_dir": "speech"}
    if channel:
        args["channel"] = channel
    return {"dataset": "synthetic-speech", "root": str(root), "args": args, "val_fraction": 0.2, "test_fraction": 0.34}


@pytest.mark.slow
def test_domain_adaptation_runs_on_speaker_identification_across_a_channel(tmp_path: Path):
    """The core DA strategies on the speech task: padded frame features pool under their
    mask, the target's test split is scored (evaluate_on), and DANN's discriminator trains."""
    root = tmp_path / "data"
    root.mkdir()
    config = {
        "name": "speech-da",
        "task": "speaker-identification",
        "seed": 0,
        "data": speech(root, 0),
        "extra_data": {"target": speech(root, 1, {"low_hz": 300, "high_hz": 3400, "snr_db": 10})},
        "evaluate_on": ["target"],
        "model": {"backbone": "ctc-bigru", "weights": None, "args": {"d_model": 32, "layers": 2, "dropout": 0.0}},
        "strategy": {"name": "dann", "backbone_lr_mult": 1.0},
        "compare": [{"name": "source-only", "backbone_lr_mult": 1.0}, {"name": "mmd", "backbone_lr_mult": 1.0}],
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.003},
    }
    out = tmp_path / "run"
    summary = run_in_process(config, out)
    assert summary["gain_metric"] == "target.accuracy"
    for arm in ("dann", "source-only", "mmd"):
        metrics = summary["stages"]["main"]["arms"][arm]["per_seed"]["0"]
        assert {"accuracy", "target.accuracy", "target.macro_f1", "target.a_distance"} <= metrics.keys()
        assert 0.0 <= metrics["target.accuracy"] <= 1.0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    dann = [r for r in records if r["arm"] == "dann"]
    assert all("train_loss_domain" in r and r["train_loss_domain"] > 0 for r in dann)
    assert (out / "plots" / "target_features_by_arm.png").is_file()
