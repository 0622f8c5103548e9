"""Multitask learning (``tlengine.strategies.multitask``): the weightings by hand, learned
weights moving the right way, and the strategy end to end on real digits with a parity head
(mnist-5k under ``label_groups``): its heads are scored on their own labels, saved, rebuilt
by predict, and a GradNorm run killed mid-epoch resumes to the same results."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_helpers import assert_same_results, records, resume, run_and_kill, run_in_process
from tlengine.errors import ConfigError
from tlengine.plugins import get_plugin_manager
from tlengine.predict import load_run_model
from tlengine.strategies import BUILTIN_STRATEGIES, Multitask
from tlengine.strategies.multitask import WEIGHTS_PART, gradnorm_loss, uncertainty_weighted
from tlengine.training.checkpoint import load_tensors
from tlengine.validation import validate

PARITY = {"even": ["0", "2", "4", "6", "8"], "odd": ["1", "3", "5", "7", "9"]}


# ---------------------------------------------------------------------------- weightings
def test_uncertainty_weighting_is_kendalls_formula():
    losses = {"main": torch.tensor(2.0), "aux": torch.tensor(0.5)}
    s = torch.tensor([0.3, -0.2])
    out = uncertainty_weighted(losses, s)
    assert out["main"].item() == pytest.approx(torch.exp(torch.tensor(-0.3)).item() * 2.0 + 0.3, rel=1e-6)
    assert out["aux"].item() == pytest.approx(torch.exp(torch.tensor(0.2)).item() * 0.5 - 0.2, rel=1e-6)


def test_learned_uncertainty_weights_fall_for_the_task_whose_loss_stays_high():
    """Minimising exp(-s)*L + s gives exp(-s) = 1/L: the noisier task ends with the smaller weight."""
    s = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([s], lr=0.1)
    losses = {"hard": torch.tensor(2.0), "easy": torch.tensor(0.25)}
    for _ in range(400):
        opt.zero_grad()
        sum(uncertainty_weighted(losses, s).values()).backward()
        opt.step()
    weights = torch.exp(-s.detach())
    assert weights[0] < 1.0 < weights[1]
    assert weights.tolist() == pytest.approx([0.5, 4.0], rel=1e-2)


def test_gradnorm_loss_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    norms, losses, initial = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0])
    # G = [2, 1], mean 1.5; ratios [1, .5] / .75 = [4/3, 2/3]; alpha 1: target = 1.5 * r = [2, 1]
    assert gradnorm_loss(norms, w, losses, initial, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    # alpha 0: target mean(G) for both: |2 - 1.5| + |1 - 1.5|
    assert gradnorm_loss(norms, w, losses, initial, alpha=0.0).item() == pytest.approx(1.0)


def test_gradnorm_raises_the_weight_of_the_task_that_trains_slower():
    """Equal gradient norms; task 0's loss has fallen least (ratio 1 vs 0.5): its weight must grow,
    and the loss differentiates to the weights alone."""
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    norms = torch.tensor([1.0, 1.0], requires_grad=True)
    losses = torch.tensor([1.0, 0.5], requires_grad=True)
    gradnorm_loss(norms, w, losses, torch.tensor([1.0, 1.0]), alpha=1.5).backward()
    assert w.grad[0] < 0 < w.grad[1]  # gradient descent: w0 up, w1 down
    assert norms.grad is None and losses.grad is None


def test_multitask_is_a_builtin_whose_args_name_its_datasets():
    assert BUILTIN_STRATEGIES["multitask"] is Multitask
    args = Multitask.Args.model_validate({"tasks": {"parity": {}, "size": {"weight": 0.5}}})
    assert Multitask.needs_extra_data(args) == ("parity", "size")
    for bad in ({"tasks": {}}, {"tasks": {"main": {}}}, {"tasks": {"a.b": {}}}, {"tasks": {"x": {"weight": 0}}}):
        with pytest.raises(ValueError):
            Multitask.Args.model_validate(bad)


# ---------------------------------------------------------------------------- end to end
def digits(groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
    data = {
        "dataset": "mnist-5k",
        "args": {"per_class": 16},
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "augment": "none",
    }
    return {**data, "label_groups": groups} if groups else data


def config(weighting: str = "gradnorm", epochs: int = 2) -> dict[str, Any]:
    return {
        "name": "mt",
        "task": "image-classification",
        "seed": 0,
        "model": {"backbone": "tiny-cnn", "weights": None, "input_size": 28},
        "data": digits(),
        "extra_data": {"parity": digits(PARITY)},
        "strategy": {
            "name": "multitask",
            "backbone_lr_mult": 1.0,
            "args": {"tasks": {"parity": {"weight": 0.5}}, "weighting": weighting},
        },
        "baseline": {"name": "scratch", "label": "single-task"},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.003},
    }


def test_validation_names_a_task_without_its_dataset(tmp_path):
    bad = config()
    bad["strategy"]["args"]["tasks"] = {"parity": {}, "size": {}}
    with pytest.raises(ConfigError) as err:
        validate(bad, get_plugin_manager().registries, tmp_path)
    assert "needs the extra dataset 'size'" in str(err.value)


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "gradnorm"])
def test_each_head_is_scored_on_its_own_labels_and_rebuilt_by_predict(tmp_path, weighting):
    out = tmp_path / "run"
    summary = run_in_process(config(weighting), out)
    arms = summary["stages"]["main"]["arms"]
    mt = arms["multitask"]["per_seed"]["0"]
    assert {"accuracy", "parity.accuracy", "parity.macro_f1", "parity.loss"} <= mt.keys()
    assert 0.5 < mt["parity.accuracy"] <= 1.0  # two classes, 40 test digits: learnt, not chance
    assert not any(k.startswith("parity.") for k in arms["single-task"]["per_seed"]["0"])
    assert "parity.accuracy" in summary["table_metrics"]
    losses = [r for r in records(out) if r["arm"] == "multitask"][0]
    assert {"train_loss_main", "train_loss_parity"} <= losses.keys()
    assert ("train_loss_gradnorm" in losses) == (weighting == "gradnorm")

    task, model, meta = load_run_model(get_plugin_manager().registries, out, arm="multitask")
    assert meta["extra_info"]["parity"]["classes"] == ["even", "odd"]
    assert model.part("parity_head").module[-1].out_features == 2
    tensors, _ = load_tensors(next(out.rglob("multitask/seed0/model.safetensors")))
    if weighting == "fixed":
        assert WEIGHTS_PART not in model.parts
    else:
        learned = tensors[f"{WEIGHTS_PART}.values"]
        start = torch.tensor([1.0, 0.5])
        if weighting == "gradnorm":
            assert learned.sum().item() == pytest.approx(1.5, rel=1e-3)  # renormalised every step...
            assert not torch.allclose(learned, start)  # ...and moved
            assert (tensors[f"{WEIGHTS_PART}.initial"] > 0).all()  # L_i(0), kept for resume
        else:
            assert not torch.allclose(learned, -start.log())


def test_a_gradnorm_run_killed_mid_epoch_resumes_to_the_same_results(tmp_path):
    cfg = config("gradnorm", epochs=3)
    reference = run_in_process(copy.deepcopy(cfg), tmp_path / "reference")
    run = tmp_path / "killed"
    run_and_kill(cfg, run, {"kind": "step", "after": ["main", "multitask", 1], "n": 2})
    assert [(r["arm"], r["epoch"]) for r in records(run)] == [("multitask", 1)]
    resumed, _, trained = resume(run)
    assert trained[0] == ("main", "multitask", 2)
    assert_same_results(resumed, reference, run, tmp_path / "reference")
    meta = json.loads(Path(next(run.rglob("multitask/seed0/model.json"))).read_text())
    assert meta["strategy"] == "multitask"
