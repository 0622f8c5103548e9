"""Every adaptation method on the real Whisper tiny.en: each trains only its own parameters,
every base weight stays bit-identical to the converted checkpoint, and each small file
rebuilds its arm on top of the base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from resume_helpers import run_in_process
from safetensors.torch import load_file
from tlengine_plugins.asr_speaker_adaptation.recognizers import whisper_folder

TARGET = "scot-m3"


@pytest.mark.slow
def test_each_method_leaves_the_whisper_base_bit_identical(tmp_path: Path, cli):
    config = {
        "name": "tiny-whisper-adaptation",
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
        "model": {"backbone": "whisper", "weights": "whisper-tiny.en", "max_new_tokens": 24},
        "strategy": {"name": "lhuc", "lr": 0.01},
        "compare": [
            {"name": "adapter", "args": {"bottleneck": 8, "layers": 1}},
            {"name": "fine-tune", "unfreeze": 1, "parts": {"decoder": {"unfreeze": 0}}},
        ],
        "baseline": {"name": "zero-shot"},
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.001},
    }
    run = tmp_path / "run"
    summary = run_in_process(config, run)
    converted = load_file(str(Path(whisper_folder("whisper-tiny.en", tmp_path)) / "model.safetensors"))
    base = {k[len("model.") :]: v for k, v in converted.items() if k.startswith("model.")}

    def arm(name: str, file: str) -> dict[str, torch.Tensor]:
        return load_file(str(run / f"arms/main/{name}/seed0/{file}"))

    zero = arm("zero-shot", "model.safetensors")
    assert zero.keys() == base.keys() and all(torch.equal(zero[k], v) for k, v in base.items())
    for name, own_prefix, count in (("lhuc", "lhuc.", 8 * 384), ("adapter", "adapters.", None)):
        full, own = arm(name, "model.safetensors"), arm(name, "own.safetensors")
        assert all(torch.equal(full[k], v) for k, v in base.items()), name  # not one base weight moved
        assert own and all(k.startswith(own_prefix) for k in own)
        if count is not None:
            assert sum(v.numel() for v in own.values()) == count  # one scale per hidden unit of 8 layers
    # adapters on the top layer of each part only (layers: 1)
    assert {k.split(".")[1] for k in arm("adapter", "own.safetensors")} == {"encoder__layer3", "decoder__layer3"}
    full, delta = arm("fine-tune", "model.safetensors"), arm("fine-tune", "delta.safetensors")
    assert delta and all(k.startswith(("encoder.layers.3.", "encoder.layer_norm.")) for k in delta)
    assert any(not torch.equal(delta[k], base[k]) for k in delta)  # the top layer trained
    assert all(torch.equal(full[k], v) for k, v in base.items() if k not in delta)
    assert summary["stages"]["main"]["arms"]["zero-shot"]["metrics"]["wer"] >= 0
    # a speaker's file loaded over the shared base gives that speaker's model
    from tlengine.config import ModelConfig, StrategyConfig
    from tlengine.plugins import get_plugin_manager
    from tlengine.predict import load_run_model
    from tlengine.strategies import LHUC

    task, trained, meta = load_run_model(get_plugin_manager().registries, run, arm="lhuc")
    shared = task.build_model(
        ModelConfig(backbone="whisper", weights="whisper-tiny.en"),
        meta["info"],
        init={"encoder": True, "decoder": True},
        base_dir=tmp_path,
    ).eval()
    LHUC(StrategyConfig(name="lhuc", args={})).prepare(shared, None)
    missing, unexpected = shared.load_state_dict(arm("lhuc", "own.safetensors"), strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("lhuc.")]
    features = {"features": torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        assert torch.allclose(shared.forward_features(features), trained.forward_features(features), atol=1e-5)
    # predict rebuilds each model from the checkpoint the run recorded (no model.weights)
    wav = next((tmp_path / "speech" / TARGET).glob("*.wav"))
    for args in (["--speaker", TARGET, "--arm", "adapter"], []):
        out = cli("predict", str(run), str(wav), *args)
        assert out.returncode == 0 and out.stdout.startswith(f"{wav}: "), out.stderr
