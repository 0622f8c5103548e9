"""A local Wav2Vec2-CTC checkpoint adapts like Whisper: a tiny one saved with
transformers' own save_pretrained, adapted by LHUC, adapters and top-layer fine-tuning,
its base weights bit-identical afterwards."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from resume_helpers import run_in_process
from safetensors.torch import load_file

TARGET = "scot-m3"


@pytest.fixture
def tiny_wav2vec2(tmp_path: Path) -> Path:
    """A random 2-layer Wav2Vec2ForCTC with an uppercase character vocabulary, as a folder."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = tmp_path / "tiny-wav2vec2"
    folder.mkdir()
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", "'", *string.ascii_uppercase])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_local_wav2vec2_checkpoint_adapts_with_its_base_unchanged(tmp_path: Path, tiny_wav2vec2: Path, cli):
    config = {
        "name": "tiny-wav2vec2-adaptation",
        "task": "speech-recognition",
        "seed": 0,
        "data": {
            "dataset": "synthetic-speech",
            "root": str(tmp_path),
            "args": {"speakers": 2, "utterances_per_speaker": 5, "seed": 0, "out_dir": "speech"},
            "test_fraction": 0.2,
            "target_speaker": TARGET,
            "adaptation_utterances": 2,
            "val_utterances": 1,
        },
        "model": {"backbone": "wav2vec2-ctc", "weights": str(tiny_wav2vec2)},
        "strategy": {"name": "lhuc", "lr": 0.05},
        "compare": [{"name": "adapter", "args": {"bottleneck": 4}}, {"name": "fine-tune", "unfreeze": 1}],
        "baseline": {"name": "zero-shot"},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01},
    }
    run = tmp_path / "run"
    summary = run_in_process(config, run)
    assert {"wer", "cer", "wer_others"} <= set(summary["stages"]["main"]["arms"]["lhuc"]["metrics"])
    saved = load_file(str(tiny_wav2vec2 / "model.safetensors"))
    prefixes = {"wav2vec2.": "encoder.", "lm_head.": "decoder."}
    base = {prefixes[p] + k[len(p) :]: v for k, v in saved.items() for p in prefixes if k.startswith(p)}
    zero = load_file(str(run / "arms/main/zero-shot/seed0/model.safetensors"))
    assert zero.keys() == base.keys()
    for arm, own_prefix in (("lhuc", "lhuc."), ("adapter", "adapters.")):
        full = load_file(str(run / f"arms/main/{arm}/seed0/model.safetensors"))
        own = load_file(str(run / f"arms/main/{arm}/seed0/own.safetensors"))
        assert all(torch.equal(full[k], v) for k, v in base.items()), arm
        assert own and all(k.startswith(own_prefix) for k in own)
        assert {k.split(".")[1] for k in own} == {"encoder__layer0", "encoder__layer1"}
    delta = load_file(str(run / "arms/main/fine-tune/seed0/delta.safetensors"))
    assert {".".join(k.split(".")[:4]) for k in delta if k.startswith("encoder.")} == {"encoder.encoder.layers.1"}
    assert any(k.startswith("decoder.") for k in delta)  # the CTC layer is the decoder's one block
    wav = next((tmp_path / "speech").rglob("*.wav"))
    result = cli("predict", str(run), str(wav), "--speaker", TARGET, "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)[0]["transcript"], str)
