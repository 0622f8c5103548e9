"""The core's adaptation strategies on the toy two-part model: ``lhuc``, ``adapter``,
``fine-tune`` of the top blocks (``delta.safetensors``) and ``zero-shot``.

What each must guarantee: it starts exactly as the pretrained model, trains only its own
parameters, leaves every base weight bit-identical, and saves a small file that rebuilds
the trained model on top of the base.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import toy_plugin
from safetensors.torch import load_file
from test_contract import base_weights, make_manager, pipeline, run  # noqa: F401 (fixture)
from tlengine.config import StrategyConfig
from tlengine.errors import TLEngineError
from tlengine.model import TransferModel
from tlengine.predict import load_run_model
from tlengine.strategies import BUILTIN_STRATEGIES
from tlengine.strategies.adapter import BottleneckAdapter
from tlengine.strategies.lhuc import LHUCScale

X = {"x": torch.randn(6, toy_plugin.DIM, generator=torch.Generator().manual_seed(5))}


def _toy(tmp_path: Path, base: Path) -> TransferModel:
    return toy_plugin.build_toy_model(base.name, {"encoder": True, "decoder": True}, tmp_path)


def _strategy(name: str, **args):
    return BUILTIN_STRATEGIES[name](StrategyConfig(name=name, args=args))


@pytest.mark.parametrize("name", ["lhuc", "adapter"])
def test_a_fresh_strategy_leaves_the_model_unchanged(tmp_path, base_weights, name):  # noqa: F811
    model = _toy(tmp_path, base_weights).eval()
    with torch.no_grad():
        before = model(X)
        _strategy(name).prepare(model, None)
        assert torch.equal(model(X), before)  # LHUC: 2*sigmoid(0) = 1; adapters: up-projection zero


def test_lhuc_scales_each_hidden_unit_between_0_and_2():
    scale = LHUCScale(3)
    with torch.no_grad():
        scale.r.copy_(torch.tensor([-50.0, 0.0, 50.0]))
    assert torch.allclose(scale(torch.ones(2, 3)), torch.tensor([[0.0, 1.0, 2.0]] * 2), atol=1e-6)


def test_an_adapter_is_a_residual_bottleneck():
    adapter = BottleneckAdapter(8, 2)
    assert adapter.down.out_features == 2 and adapter.up.in_features == 2
    with torch.no_grad():
        adapter.up.weight.fill_(0.1)
        h = torch.randn(4, 8)
        expected = h + adapter.up(torch.nn.functional.gelu(adapter.down(adapter.norm(h))))
        assert torch.allclose(adapter(h), expected)


@pytest.mark.parametrize(
    "args, expected",
    [
        ({}, {"encoder__0", "encoder__1", "decoder__0"}),
        ({"layers": 1}, {"encoder__1", "decoder__0"}),
        ({"parts": ["encoder"]}, {"encoder__0", "encoder__1"}),
    ],
)
def test_which_layers_are_changed(tmp_path, base_weights, args, expected):  # noqa: F811
    model = _toy(tmp_path, base_weights)
    _strategy("lhuc", **args).prepare(model, None)
    assert set(model.part("lhuc").module.keys()) == expected


def test_an_unknown_part_and_a_model_without_hidden_layers_are_named(tmp_path, base_weights):  # noqa: F811
    with pytest.raises(TLEngineError, match="part\\(s\\) head have no hidden layers; choose from encoder, decoder"):
        _strategy("adapter", parts=["head"]).prepare(_toy(tmp_path, base_weights), None)
    plain = TransferModel(None, torch.nn.Linear(2, 2))
    with pytest.raises(TLEngineError, match="strategy 'lhuc' changes hidden layers, and this task's model lists none"):
        _strategy("lhuc").prepare(plain, None)


@pytest.mark.parametrize("name, part", [("lhuc", "lhuc"), ("adapter", "adapters")])
def test_only_the_strategy_parameters_train_and_the_base_stays_bit_identical(tmp_path, base_weights, name, part):  # noqa: F811
    data = pipeline(strategy={"name": name, "lr": 0.05}, baseline=None)
    run_dir, summary = run(data, tmp_path, tmp_path / "run")
    arm_dir = run_dir / f"arms/main/{name}/seed0"
    own = load_file(str(arm_dir / "own.safetensors"))
    assert own and all(k.startswith(part + ".") for k in own)
    # what starts at zero (LHUC's r, an adapter's up-projection) has moved
    assert [k for k, v in own.items() if k.endswith((".r", "up.weight")) and v.abs().sum() > 0]
    base, full = load_file(str(base_weights)), load_file(str(arm_dir / "model.safetensors"))
    for k, v in base.items():
        assert torch.equal(full[k], v), k
    assert not (arm_dir / "delta.safetensors").exists()  # own.safetensors already is what changed
    # the base file + the strategy's file = the trained model
    rebuilt = _toy(tmp_path, base_weights)
    _strategy(name).prepare(rebuilt, None)
    missing, unexpected = rebuilt.load_state_dict(own, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(part + ".")]
    _, trained, _ = load_run_model(make_manager().registries, run_dir)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(X), trained(X))
        assert not torch.allclose(_toy(tmp_path, base_weights).eval()(X), trained(X))


def test_fine_tuning_the_top_block_saves_that_block_as_the_delta(tmp_path, base_weights):  # noqa: F811
    data = pipeline(strategy={"name": "fine-tune", "unfreeze": 1, "backbone_lr_mult": 1.0}, baseline=None)
    run_dir, _ = run(data, tmp_path, tmp_path / "run")
    arm_dir = run_dir / "arms/main/fine-tune/seed0"
    delta = load_file(str(arm_dir / "delta.safetensors"))
    assert {".".join(k.split(".")[:2]) for k in delta} == {"encoder.1", "decoder.1"}
    base, full = load_file(str(base_weights)), load_file(str(arm_dir / "model.safetensors"))
    for k, v in base.items():  # frozen blocks untouched, trained ones moved
        assert torch.equal(full[k], v) == (k not in delta), k
    rebuilt = _toy(tmp_path, base_weights)
    rebuilt.load_state_dict(delta, strict=False)
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, full[k]), k


def test_zero_shot_is_the_pretrained_model_evaluated(tmp_path, base_weights):  # noqa: F811
    data = pipeline(strategy={"name": "zero-shot"}, baseline=None)
    run_dir, summary = run(data, tmp_path, tmp_path / "run")
    arm_dir = run_dir / "arms/main/zero-shot/seed0"
    base, full = load_file(str(base_weights)), load_file(str(arm_dir / "model.safetensors"))
    assert base.keys() == full.keys() and all(torch.equal(full[k], v) for k, v in base.items())
    assert not (arm_dir / "delta.safetensors").exists() and not (arm_dir / "own.safetensors").exists()
    assert summary["arms"]["zero-shot"]["metrics"]["mse"] > 0
