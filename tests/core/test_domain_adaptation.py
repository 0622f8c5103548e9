"""Unsupervised domain adaptation: the losses (``tlengine.strategies.domain_losses``) and
the strategies ``source-only``, ``dann``, ``coral`` and ``mmd`` on the toy two-part model.

What each must guarantee: the losses match their definitions (numbers written out or
explicit loops), the strategies return named losses and never read the target's labels,
only DANN adds a part, and its discriminator's gradient reaches the backbone reversed.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import toy_plugin
from pydantic import ValidationError
from test_contract import base_weights, make_manager, pipeline, run  # noqa: F401 (fixture)
from tlengine.config import StrategyConfig
from tlengine.errors import ConfigError, TLEngineError
from tlengine.predict import load_run_model
from tlengine.strategies import BUILTIN_STRATEGIES, CORAL, DANN, MMD, SourceOnly, StepContext
from tlengine.strategies.domain_adaptation import HeadOnly
from tlengine.strategies.domain_losses import (
    coral_loss,
    dann_coefficient,
    grad_reverse,
    multi_kernel_mmd,
    pooled_features,
    proxy_a_distance,
)
from tlengine.validation import validate

DA_NAMES = ["source-only", "dann", "coral", "mmd"]


# ---------------------------------------------------------------------------- losses
def test_gradient_reversal_is_the_identity_forward_and_flips_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    # Upstream of the reversal the chain rule is untouched: only the sign and scale change.
    x.grad = None
    (grad_reverse(x * 2.0, 1.5) ** 2).sum().backward()
    assert torch.allclose(x.grad, -1.5 * (2 * (x * 2.0)) * 2.0)


def test_dann_coefficient_ramps_from_0_to_about_max_weight():
    assert dann_coefficient(0.0) == 0.0
    values = [dann_coefficient(p / 20) for p in range(21)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert dann_coefficient(1.0) == pytest.approx(0.9999, abs=1e-4)
    assert dann_coefficient(1.0, max_weight=2.0) == pytest.approx(2 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_coefficient(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    assert dann_coefficient(3.0) == dann_coefficient(1.0)  # progress is clipped to [0, 1]


def test_coral_loss_by_hand():
    # Source: the corners of a square -> C_s = [[4/3, 0], [0, 4/3]] (centred rows (+-1, +-1), / (4-1)).
    source = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    # Target: a diagonal line -> centred rows (-1.5, -0.5, 0.5, 1.5) in both columns, every entry 5/3.
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # C_s - C_t = [[-1/3, -5/3], [-5/3, -1/3]]: ||.||_F^2 = (1 + 25 + 25 + 1) / 9 = 52/9; / (4 * 2^2) = 13/36.
    assert float(coral_loss(source, target)) == pytest.approx(13 / 36)
    assert float(coral_loss(source, source + 5.0)) == pytest.approx(0.0, abs=1e-7)  # means do not count
    with pytest.raises(ValueError, match="at least 2 rows"):
        coral_loss(source[:1], target)


def _mmd_by_loops(source: torch.Tensor, target: torch.Tensor, mults: list[float]) -> float:
    rows = [*source.tolist(), *target.tolist()]
    sq = lambda a, b: sum((u - v) ** 2 for u, v in zip(a, b))  # noqa: E731
    k = len(rows)
    base = sum(sq(rows[i], rows[j]) for i in range(k) for j in range(k) if i != j) / (k * (k - 1))
    kernel = lambda a, b: sum(math.exp(-sq(a, b) / (m * base)) for m in mults)  # noqa: E731
    s, t = source.tolist(), target.tolist()
    ss = sum(kernel(a, b) for a in s for b in s) / len(s) ** 2
    tt = sum(kernel(a, b) for a in t for b in t) / len(t) ** 2
    st = sum(kernel(a, b) for a in s for b in t) / (len(s) * len(t))
    return ss + tt - 2 * st


def test_multi_kernel_mmd_against_an_explicit_double_loop():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g) + 0.7
    for mults in ([0.25, 0.5, 1.0, 2.0, 4.0], [1.0], [0.5, 3.0]):
        got = float(multi_kernel_mmd(source, target, kernel_mults=mults))
        assert got == pytest.approx(_mmd_by_loops(source, target, mults), rel=1e-5, abs=1e-6)


def test_multi_kernel_mmd_is_zero_for_identical_samples_and_grows_with_a_shift():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    assert float(multi_kernel_mmd(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    small, large = (float(multi_kernel_mmd(x, x + shift)) for shift in (0.5, 3.0))
    assert 0 < small < large
    with pytest.raises(ValueError, match="positive"):
        multi_kernel_mmd(x, x, kernel_mults=[])


def test_the_losses_differentiate_and_compute_in_float32():
    s = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64)
    for loss in (coral_loss(s, t), multi_kernel_mmd(s, t)):
        assert loss.dtype == torch.float32 and loss.dim() == 0
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_pooled_features_masks_padding():
    hidden = torch.tensor(
        [
            [[1.0, 2.0], [1e6, 1e6], [1e6, 1e6]],  # length 1: the padding is never averaged in
            [[1.0, 1.0], [2.0, 3.0], [3.0, 5.0]],  # length 3
        ]
    )
    pooled = pooled_features((hidden, torch.tensor([1, 3])))
    assert torch.equal(pooled, torch.tensor([[1.0, 2.0], [2.0, 3.0]]))
    vectors = torch.randn(4, 3, dtype=torch.float16)
    assert pooled_features(vectors).dtype == torch.float32
    assert torch.equal(pooled_features(vectors), vectors.float())
    assert pooled_features(torch.ones(2, 5, 3, 3)).shape == (2, 5)  # maps: global average pooling
    with pytest.raises(ValueError, match="cannot pool"):
        pooled_features({"p3": torch.ones(2, 5, 3, 3)})


def test_proxy_a_distance_from_alike_to_separable():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 5, generator=g), torch.randn(160, 5, generator=g)
    assert proxy_a_distance(a, b) < 0.4
    assert proxy_a_distance(a, b + 6.0) == pytest.approx(2.0)
    assert proxy_a_distance(a, b, seed=3) == proxy_a_distance(a, b, seed=3)


# ---------------------------------------------------------------------------- strategies
class Poison:
    """Targets that must never be read: any use raises."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the target's labels were read ({name})")

    def __iter__(self):
        raise AssertionError("the target's labels were read (iter)")

    def __len__(self) -> int:
        raise AssertionError("the target's labels were read (len)")


def _toy(seed: int = 0) -> toy_plugin.ToyModel:
    torch.manual_seed(seed)
    model = toy_plugin.build_toy_model(None, {}, Path("."))
    model.feature_dim = 16  # the toy task does not set it; DANN sizes its discriminator by it
    return model


def _strategy(name: str, **args: Any):
    return BUILTIN_STRATEGIES[name](StrategyConfig(name=name, args=args))


def _step(model, *, n: int = 6, m: int = 5, step: int = 0, total: int = 10, net=None, targets=None) -> StepContext:
    g = torch.Generator().manual_seed(7)
    x = {"x": torch.randn(n, toy_plugin.DIM, generator=g)}
    y = targets if targets is not None else torch.randn(n, generator=g).tolist()
    target = {"x": torch.randn(m, toy_plugin.DIM, generator=g) + 2.0}

    def extra(name: str):
        assert name == "target"
        return target, Poison()

    return StepContext(
        toy_plugin.ToyTask(None),
        net if net is not None else model,
        model,
        x,
        y,
        epoch=1,
        step=step,
        total_steps=total,
        device=torch.device("cpu"),
        _extra=extra,
    )


def test_the_four_strategies_are_builtin_and_declare_the_target():
    assert {n: BUILTIN_STRATEGIES[n] for n in DA_NAMES} == {
        "source-only": SourceOnly,
        "dann": DANN,
        "coral": CORAL,
        "mmd": MMD,
    }
    for name in DA_NAMES:
        assert BUILTIN_STRATEGIES[name].extra_data == ("target",)
        assert not BUILTIN_STRATEGIES[name].frozen_backbone  # live features: never the feature cache


@pytest.mark.parametrize(
    "name, keys",
    [
        ("source-only", {"loss"}),
        ("dann", {"source", "domain"}),
        ("coral", {"source", "coral"}),
        ("mmd", {"source", "mmd"}),
    ],
)
def test_each_step_returns_its_named_losses_and_never_reads_the_target_labels(name, keys):
    model = _toy()
    strategy = _strategy(name)
    before = set(model.parts)
    strategy.prepare(model, None)
    added = set(model.parts) - before
    assert added == ({"domain_discriminator"} if name == "dann" else set())
    if name == "dann":
        assert model.part("domain_discriminator").owner == "strategy"
        assert model.part("domain_discriminator").module[0].in_features == 16
    strategy.apply(model, 1)
    strategy.train_mode(model)
    losses = strategy.training_step(_step(model, step=3))
    assert set(losses) == keys
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.part("encoder").module.parameters())


def test_the_source_loss_is_the_tasks_loss_from_one_backbone_pass():
    model = _toy()
    strategy = _strategy("coral")
    step = _step(model)
    calls = []
    model.part("encoder").module.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
    losses = strategy.training_step(step)
    assert calls == [6, 5]  # once on the source batch, once on the target batch
    with torch.no_grad():
        expected = step.task.training_loss(model, step.inputs, step.targets)
    assert torch.allclose(losses["source"], expected)
    feats = model.forward_features(step.inputs)
    expected_coral = coral_loss(feats, model.forward_features(step.extra_batch("target")[0]))
    assert torch.allclose(losses["coral"], expected_coral)


def test_weights_scale_the_alignment_losses():
    model = _toy()
    for name, key in (("coral", "coral"), ("mmd", "mmd")):
        one = _strategy(name).training_step(_step(model))[key]
        three = _strategy(name, weight=3.0).training_step(_step(model))[key]
        assert torch.allclose(three, 3 * one)


def _backbone_grads(model, loss) -> list[torch.Tensor]:
    params = list(model.part("encoder").module.parameters())
    return [g.clone() for g in torch.autograd.grad(loss, params, retain_graph=True)]


def test_the_discriminator_gradient_reaches_the_backbone_reversed_and_scaled():
    model = _toy()
    strategy = _strategy("dann", weight=2.0, dropout=0.0)
    strategy.prepare(model, None)
    step = _step(model, step=5, total=10)
    losses = strategy.training_step(step)
    coeff = dann_coefficient(0.5, gamma=10.0, max_weight=2.0)
    assert strategy.coefficient == pytest.approx(coeff)
    reversed_grads = _backbone_grads(model, losses["domain"])

    # The same domain loss without the reversal layer.
    disc = model.part("domain_discriminator").module
    source = model.forward_features(step.inputs)
    target = model.forward_features(step.extra_batch("target")[0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ls, lt = disc(source).squeeze(-1), disc(target).squeeze(-1)
    plain = 0.5 * (bce(ls, torch.ones_like(ls)) + bce(lt, torch.zeros_like(lt)))
    assert torch.allclose(losses["domain"], plain)
    for r, p in zip(reversed_grads, _backbone_grads(model, plain)):
        assert torch.allclose(r, -coeff * p, atol=1e-6)
    # The discriminator itself is trained to tell the domains apart: its gradient is not reversed.
    d_rev = torch.autograd.grad(losses["domain"], list(disc.parameters()), retain_graph=True)
    d_plain = torch.autograd.grad(plain, list(disc.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(d_rev, d_plain))


def test_dann_starts_with_no_reversed_gradient():
    model = _toy()
    strategy = _strategy("dann")
    strategy.prepare(model, None)
    losses = strategy.training_step(_step(model, step=0))
    assert strategy.coefficient == 0.0
    assert all(float(g.abs().sum()) == 0.0 for g in _backbone_grads(model, losses["domain"]))


def test_one_row_batches_and_uneven_batch_sizes():
    model = _toy()
    for name in DA_NAMES:
        strategy = _strategy(name)
        if name == "dann":
            strategy.prepare(model, None)
        for n, m in ((1, 5), (6, 1), (7, 3)):
            losses = strategy.training_step(_step(model, n=n, m=m))
            assert all(torch.isfinite(v) for v in losses.values()), (name, n, m)


def test_a_cached_head_is_refused_and_dann_needs_a_feature_dim():
    model = _toy()
    with pytest.raises(TLEngineError, match="needs live backbone features"):
        _strategy("mmd").training_step(_step(model, net=HeadOnly(model)))
    model.feature_dim = 0
    with pytest.raises(TLEngineError, match="feature_dim"):
        _strategy("dann").prepare(model, None)


def test_strategy_args_are_validated():
    assert _strategy("dann").args.model_dump() == {"weight": 1.0, "gamma": 10.0, "hidden": 256, "dropout": 0.5}
    assert _strategy("mmd").args.kernel_mults == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert _strategy("coral").args.weight == 1.0
    for name, args in [
        ("source-only", {"weight": 1.0}),
        ("dann", {"dropout": 1.0}),
        ("dann", {"lambda": 1.0}),
        ("coral", {"weight": -1.0}),
        ("mmd", {"kernel_mults": []}),
        ("mmd", {"kernel_mults": [1.0, 0.0]}),
    ]:
        with pytest.raises(ValidationError):
            _strategy(name, **args)


def test_fine_tuning_options_still_apply():
    model = _toy()
    strategy = BUILTIN_STRATEGIES["dann"](
        StrategyConfig(name="dann", unfreeze=1, backbone_lr_mult=0.25, args={"hidden": 8})
    )
    strategy.prepare(model, None)
    assert strategy.apply(model, 1) == ["encoder.1", "decoder.1"]  # the top block of each pretrained part
    groups = {g["name"]: g["lr"] for g in strategy.param_groups(model, 0.1)}
    assert groups["domain_discriminator"] == pytest.approx(0.1)
    assert groups["encoder.0"] == pytest.approx(0.025)


# ---------------------------------------------------------------------------- end to end
def _feature_dim_16(monkeypatch: pytest.MonkeyPatch) -> None:
    build = toy_plugin.build_toy_model

    def with_dim(*args: Any, **kwargs: Any) -> toy_plugin.ToyModel:
        model = build(*args, **kwargs)
        model.feature_dim = 16
        return model

    monkeypatch.setattr(toy_plugin, "build_toy_model", with_dim)


def da_pipeline() -> dict[str, Any]:
    data = pipeline(train={"epochs": 2, "batch_size": 16, "lr": 0.01})
    for key in ("strategy", "baseline", "data"):
        data.pop(key)
    data["stages"] = [
        {
            "name": "adapt",
            "data": {"dataset": "toy-points", "args": {"n": 80, "seed": 1}},
            "extra_data": {
                "target": {"dataset": "toy-points", "args": {"n": 40, "seed": 2, "shift": 2.0, "unlabelled": True}}
            },
            "strategy": {"name": "dann", "args": {"hidden": 8, "dropout": 0.0}},
            "compare": [{"name": "coral"}, {"name": "mmd", "args": {"weight": 0.5}}],
            "baseline": {"name": "source-only"},
        }
    ]
    return data


def test_a_domain_adaptation_stage_end_to_end(tmp_path, base_weights, monkeypatch):  # noqa: F811
    _feature_dim_16(monkeypatch)
    run_dir, summary = run(da_pipeline(), tmp_path, tmp_path / "run")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], []).append(r)
    assert set(by_arm) == set(DA_NAMES)
    expected = {"dann": "train_loss_domain", "coral": "train_loss_coral", "mmd": "train_loss_mmd"}
    for arm, rows in by_arm.items():
        assert len(rows) == 2
        # The target's labels are NaN: had any been read, the losses would be NaN too.
        assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.startswith("train_loss"))
        if arm in expected:
            assert all(expected[arm] in r for r in rows)
    assert "NaN" not in json.dumps(summary)
    assert set(summary["arms"]) == set(DA_NAMES) and summary["baseline_arm"] == "source-only"
    # The saved DANN model rebuilds (the strategy re-adds its discriminator) and predicts as trained.
    _, model, meta = load_run_model(make_manager().registries, run_dir, arm="dann")
    assert "domain_discriminator" in model.parts and meta["strategy"] == "dann"


def test_dann_on_images_end_to_end(tmp_path, tiny_config):
    """Image classification's own training_loss runs on the head from DANN's features."""
    from resume_helpers import run_in_process

    config = copy.deepcopy(tiny_config)
    data = config.pop("data")
    config.pop("strategy"), config.pop("baseline")
    config["train"]["epochs"] = 1
    target = copy.deepcopy(data)
    target["args"]["shift"] = {"palette": "inverted"}
    config["stages"] = [
        {
            "name": "adapt",
            "data": data,
            "extra_data": {"target": target},
            "strategy": {"name": "dann", "args": {"hidden": 16}},
            "baseline": {"name": "source-only"},
        }
    ]
    summary = run_in_process(config, tmp_path / "run")
    assert set(summary["arms"]) == {"dann", "source-only"}
    [dann] = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"dann"' in x]
    assert dann["train_loss"] == pytest.approx(dann["train_loss_source"] + dann["train_loss_domain"], rel=1e-5)


@pytest.mark.parametrize("name", DA_NAMES)
def test_a_stage_without_a_target_dataset_is_a_config_error(tmp_path, name):
    data = da_pipeline()
    stage = data["stages"][0]
    del stage["extra_data"], stage["compare"], stage["baseline"]
    stage["strategy"] = {"name": name}
    with pytest.raises(ConfigError, match="needs the extra dataset 'target'"):
        validate(data, make_manager().registries, tmp_path)


def _image_da_pipeline(tiny_config: dict) -> dict:
    """DANN vs source-only on tiny shapes, the target the same shapes in inverted colours;
    every arm is also tested on the target (evaluate_on)."""
    config = copy.deepcopy(tiny_config)
    target = copy.deepcopy(config["data"])
    target["args"]["shift"] = {"palette": "inverted", "blur": 1.0}
    config["extra_data"] = {"target": target}
    config["evaluate_on"] = ["target"]
    config["strategy"] = {"name": "dann", "args": {"hidden": 16}, "backbone_lr_mult": 1.0}
    config["baseline"] = {"name": "source-only", "backbone_lr_mult": 1.0}
    config["train"]["epochs"] = 3
    return config


@pytest.mark.slow
def test_a_domain_adaptation_run_killed_mid_epoch_resumes_to_the_same_results(tmp_path, tiny_config):
    """Killed in DANN's second epoch, resumed: the same losses per epoch, the same source and
    target metrics as a run that never stopped (the target batches restart per epoch)."""
    from resume_helpers import assert_same_results, records, resume, run_and_kill, run_in_process

    config = _image_da_pipeline(tiny_config)
    reference = run_in_process(config, tmp_path / "reference")
    for arm in ("dann", "source-only"):
        assert {"accuracy", "target.accuracy", "target.macro_f1"} <= reference["arms"][arm]["metrics"].keys()
    run = tmp_path / "killed"
    run_and_kill(config, run, {"kind": "step", "after": ["main", "dann", 1], "n": 2})
    assert [(r["arm"], r["epoch"]) for r in records(run)][-1] == ("dann", 1)
    resumed, _, trained = resume(run)
    assert trained[0] == ("main", "dann", 2)
    assert_same_results(resumed, reference, run, tmp_path / "reference")
    assert (
        resumed["arms"]["dann"]["metrics"]["target.accuracy"] == reference["arms"]["dann"]["metrics"]["target.accuracy"]
    )


def test_domain_gap_and_its_map(tmp_path):
    from tlengine.reporting.domain import MAP_SAMPLES, domain_gap, plot_domain_maps

    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(200, 8, generator=g), torch.randn(180, 8, generator=g) + 3.0
    distance, feature_map = domain_gap(source, target, seed=0)
    assert distance > 1.8  # separated clouds
    assert len(feature_map["source"]) == len(feature_map["target"]) == MAP_SAMPLES
    assert all(len(p) == 2 for p in feature_map["source"] + feature_map["target"])
    same, _ = domain_gap(source[:100], source[100:], seed=0)
    assert same < 0.6
    path = plot_domain_maps({"a": feature_map, "b": feature_map}, {"a": distance}, "target", tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
