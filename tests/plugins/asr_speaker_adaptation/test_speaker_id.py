"""The speaker-identification task: masked mean pooling, the split per speaker, training the
head from the feature cache (the encoder runs once per utterance), and a CLI run end to end.

For speed the Whisper here is a tiny random one (d_model 64, 2+2 layers) with the real
tiny.en tokenizer files, and the data is three synthetic espeak-ng speakers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from resume_helpers import run_in_process
from tlengine.training.feature_cache import masked_for_pooling
from tlengine_plugins.asr_speaker_adaptation import recognizers, speaker_id
from tlengine_plugins.asr_speaker_adaptation.speaker_id import (
    SpeakerClassifier,
    collate_speakers,
    masked_mean,
    split_per_speaker,
)
from tlengine_plugins.asr_speaker_adaptation.speech_data import DEFAULT_SPEAKERS, Utterance

SPEAKERS = 3
UTTERANCES = 6


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Whisper (d_model 64, 2 encoder + 2 decoder layers) with tiny.en's tokenizer."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-whisper")
    real = Path(recognizers.whisper_folder(recognizers.WHISPER_TINY_EN, folder))
    config = WhisperConfig.from_pretrained(real)
    config.update(
        {
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
        }
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"):
        if (real / name).is_file():
            shutil.copy(real / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the synthetic speakers are spoken, once for the module."""
    return tmp_path_factory.mktemp("speech")


def speech_data(root: Path) -> dict[str, Any]:
    return {
        "dataset": "synthetic-speech",
        "root": str(root),
        "args": {"speakers": SPEAKERS, "utterances_per_speaker": UTTERANCES, "seed": 0, "out_dir": "speech"},
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    }


def pipeline(root: Path, whisper: Path, **stage: Any) -> dict[str, Any]:
    return {
        "name": "tiny-speaker-id",
        "task": "speaker-identification",
        "seed": 0,
        "data": speech_data(root),
        "model": {"backbone": "whisper", "weights": str(whisper)},
        "train": {"epochs": 3, "batch_size": 4, "lr": 0.01},
        **stage,
    }


def _accepted() -> bool:
    from tlengine.config import DataConfig
    from tlengine.plugins import get_plugin_manager
    from tlengine.validation import check_data

    registries = get_plugin_manager().registries
    return not check_data(DataConfig(dataset="synthetic-speech"), "data", speaker_id.TASK, registries, Path("."))


def test_the_speech_datasets_are_accepted_for_speaker_identification():
    """DatasetSpec.tasks: the speech datasets serve speaker identification as well as recognition."""
    assert _accepted()


# ---------------------------------------------------------------------- pooling
def _whisper_model(folder: Path, classes: int = 3) -> SpeakerClassifier:
    whisper, _ = recognizers.load_pretrained_whisper(str(folder), folder)
    return speaker_id._whisper_speaker_model(whisper, classes, 0.0).eval()


def _waves(*seconds: float) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [0.1 * torch.randn(int(16000 * s), generator=gen) for s in seconds]


def test_whisper_pooling_covers_only_the_clips_frames(tiny_whisper: Path):
    from tlengine_plugins.asr_speaker_adaptation.whisper_ct2 import whisper_features

    model = _whisper_model(tiny_whisper)
    waves = _waves(1.0, 2.37)
    samples = [(whisper_features([w.numpy()])[0], w.numel() / 16000, 0) for w in waves]
    batch, _ = collate_speakers(samples)
    with torch.no_grad():
        hidden, lengths = model.forward_features(batch)
        alone = [model.forward_features(collate_speakers([s])[0]) for s in samples]
    assert hidden.shape[1] == 1500 and lengths.tolist() == [50, math.ceil(2.37 * 50)]
    pooled = masked_mean(hidden, lengths)
    for i, (h, n) in enumerate(alone):
        assert torch.allclose(masked_mean(h, n)[0], pooled[i], atol=1e-5)
        assert torch.allclose(pooled[i], hidden[i, : lengths[i]].mean(0), atol=1e-5)
    # the 30 s of padding would pull the mean elsewhere
    assert not torch.allclose(pooled[0], hidden[0].mean(0), atol=1e-3)
    # the core's cached pooling (padding zeroed, mean rescaled) gives the same row
    assert torch.allclose(masked_for_pooling(hidden, lengths, "avg").mean(1), pooled, atol=1e-5)


def test_a_shorter_window_runs_the_same_encoder(tiny_whisper: Path, monkeypatch: pytest.MonkeyPatch):
    """The windowed forward is transformers' forward when given the whole 30 s (forced through
    the windowed path here), and takes 5 s windows: 250 frames."""
    model = _whisper_model(tiny_whisper)
    encoder = model.part("encoder").module
    x = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = encoder(x).last_hidden_state
        monkeypatch.setattr(encoder.config, "max_source_positions", 1499)  # not 30 s any more: our path
        ours = encoder(x).last_hidden_state
        monkeypatch.undo()
        hidden, lengths = model.forward_features({"features": x[..., :500], "seconds": torch.tensor([1.0, 7.0])})
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert hidden.shape == (2, 250, 64) and lengths.tolist() == [50, 250]


def test_ctc_pooling_ignores_padded_frames():
    """The CTC encoder sees padded batches: a clip alone and next to a longer one pools the same."""
    from tlengine.config import ModelConfig
    from tlengine.registry import Registries
    from tlengine_plugins.asr_speaker_adaptation.audio import log_mel

    task = speaker_id.SpeakerIdentificationTask(Registries())
    model_config = ModelConfig(backbone="ctc-bigru", args={"d_model": 32, "layers": 2, "dropout": 0.0})
    torch.manual_seed(0)
    model = task.build_model(model_config, {"classes": ["a", "b"]}, init={"encoder": False}, base_dir=Path("."))
    model.eval()
    samples = [(log_mel(w, 16000, 80).transpose(0, 1).contiguous(), w.numel() / 16000, 0) for w in _waves(0.6, 1.7)]
    batch, _ = collate_speakers(samples)
    assert batch["lengths"][0] < batch["lengths"][1]  # the first clip is padded
    with torch.no_grad():
        together = model.forward_head(model.forward_features(batch))
        alone = model.forward_head(model.forward_features(collate_speakers(samples[:1])[0]))
    assert torch.allclose(together[0], alone[0], atol=1e-5)


# ---------------------------------------------------------------------- split
def test_each_speakers_utterances_are_split_by_the_fractions():
    counts = {"a": 20, "b": 10, "c": 3}
    utts = {s: [Utterance(Path(f"{s}/{i}.wav"), f"t {i}", s) for i in range(n)] for s, n in counts.items()}
    split, warnings = split_per_speaker(utts, val_fraction=0.2, test_fraction=0.25, seed=0)
    per = {k: {s: sum(u.speaker == s for u in split[k]) for s in counts} for k in split}
    assert per["test"] == {"a": 5, "b": 2, "c": 1}
    assert per["val"] == {"a": 4, "b": 2, "c": 1}
    assert per["train"] == {"a": 11, "b": 6, "c": 1}
    ids = [id(u) for k in split for u in split[k]]
    assert len(ids) == len(set(ids)) == sum(counts.values())  # every utterance once
    assert not warnings
    again, _ = split_per_speaker(utts, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert again == split  # deterministic in the seed...
    other, _ = split_per_speaker(utts, val_fraction=0.2, test_fraction=0.25, seed=1)
    assert other["test"] != split["test"]  # ...and moved by it
    # a speaker with two utterances keeps one to train on, and says what it lacks
    few, warnings = split_per_speaker({"d": utts["a"][:2]}, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert len(few["train"]) == 1 and len(few["val"]) + len(few["test"]) == 1
    assert warnings and "speaker 'd' has 2 utterances" in warnings[0]


# ---------------------------------------------------------------------- feature cache
def test_the_head_trains_from_the_cache_and_the_encoder_runs_once_per_utterance(
    tiny_whisper: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seen: list[int] = []  # batch size of every encoder call
    build = speaker_id._whisper_speaker_model

    def counted(*args: Any, **kwargs: Any) -> SpeakerClassifier:
        model = build(*args, **kwargs)
        model.part("encoder").module.register_forward_hook(lambda m, i, o: seen.append(int(i[0].shape[0])))
        return model

    monkeypatch.setattr(speaker_id, "_whisper_speaker_model", counted)
    config = pipeline(data_root, tiny_whisper, strategy={"name": "feature-extraction"})
    config["train"]["epochs"] = 4
    config["extraction"] = {"precision": "fp32", "compile": "off"}  # one encoder call per batch, no side-by-side
    result = run_in_process(config, tmp_path / "run")
    assert result["task"] == "speaker-identification" and result["cache"]
    n = SPEAKERS * UTTERANCES
    n_train = SPEAKERS * (UTTERANCES - 2)  # one val and one test utterance per speaker
    probe = min(8, n_train)  # the cache's first call looks at a few training samples
    assert sum(seen) == n + probe, seen  # every utterance once, whatever the number of epochs
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "epoch" in r]) >= 4


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_speaker_identification_end_to_end(tiny_whisper: Path, data_root: Path, tmp_path: Path, write_pipeline):
    config = pipeline(
        data_root,
        tiny_whisper,
        strategy={"name": "feature-extraction"},
        compare=[{"name": "fine-tune", "unfreeze": 1, "backbone_lr_mult": 0.1}],
        baseline={"name": "scratch"},
    )
    config["train"]["epochs"] = 2
    config["model"]["window_seconds"] = 5  # the clips last under 5 s; predict reads the window from the run
    path = write_pipeline(config)
    out = tmp_path / "run"
    done = run_cli("run", str(path), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "speaker-identification"
    assert {"accuracy", "macro_f1", "loss"} <= set(metrics["metrics"])
    assert metrics["baseline"] is not None
    clip = sorted((data_root / "speech").rglob("*.wav"))[0]
    shown = run_cli("predict", str(out), str(clip), "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    predicted = json.loads(shown.stdout)
    speakers = sorted(voice.name for voice in DEFAULT_SPEAKERS[:SPEAKERS])
    assert [r["input"] for r in predicted] == [str(clip)]
    assert predicted[0]["speaker"] in speakers and 0.0 < predicted[0]["probability"] <= 1.0


def test_a_ctc_encoder_from_a_speech_recognition_stage(data_root: Path, tmp_path: Path):
    """init_from across tasks: the small CTC model trained on speech recognition, then its
    encoder (frozen, cached) identifies the speakers."""
    from safetensors.torch import load_file

    data = {k: v for k, v in speech_data(data_root).items() if k not in ("val_fraction", "test_fraction")}
    config = {
        "name": "ctc-speaker-id",
        "seed": 0,
        "model": {"backbone": "ctc-bigru", "args": {"d_model": 32, "layers": 2, "dropout": 0.0}},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.003},
        "stages": [
            {
                "name": "base",
                "task": "speech-recognition",
                "data": {**data, "split": "speakers"},
                "strategy": {"name": "scratch"},
            },
            {
                "name": "spk",
                "task": "speaker-identification",
                "init_from": "base",
                "data": speech_data(data_root),
                "strategy": {"name": "feature-extraction"},
            },
        ],
    }
    result = run_in_process(config, tmp_path / "run")
    assert result["task"] == "speaker-identification" and result["cache"]
    arms = tmp_path / "run" / "arms"
    base = load_file(arms / "base" / "scratch" / "seed0" / "model.safetensors")
    spk = load_file(arms / "spk" / "feature-extraction" / "seed0" / "model.safetensors")
    encoder = [k for k in spk if k.startswith("encoder.")]
    assert encoder and all(torch.equal(spk[k], base[k]) for k in encoder)  # started from base, frozen
    assert {k.split(".")[0] for k in spk} == {"encoder", "head"}
