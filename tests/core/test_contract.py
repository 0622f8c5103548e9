"""The core's contract for every modality, proved on a toy non-image task (tests/core/toy_plugin.py).

Dict inputs, list targets and a lower-is-better metric; a two-part model with per-part
init and LR; an adapter strategy saved alone on an unchanged base; a strategy with its
own step over a labelled and an unlabelled dataset; two stages with ``init_from``; three
seeds aggregated; a run killed in stage 2 resumed to identical metrics.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import toy_plugin
from safetensors.torch import load_file, save_file
from tlengine import hookimpl
from tlengine.config import StrategyConfig
from tlengine.errors import ConfigError, TLEngineError
from tlengine.pipeline import Runner
from tlengine.plugins import PluginInfo, PluginManager
from tlengine.predict import load_run_model
from tlengine.strategies import Strategy
from tlengine.task import PredictInput
from tlengine.validation import LoadedPipeline, validate


def make_manager(*extra: Any) -> PluginManager:
    manager = PluginManager()
    manager.load_entry_points()
    manager.register(toy_plugin, PluginInfo("toy", "tests", "0", "tests/core/toy_plugin.py"))
    for i, plugin in enumerate(extra):
        manager.register(plugin, PluginInfo(f"extra{i}", "tests", "0", "tests"))
    return manager


@pytest.fixture
def base_weights(tmp_path: Path) -> Path:
    """A 'pretrained' encoder + decoder: a toy model from a fixed seed."""
    torch.manual_seed(123)
    model = toy_plugin.build_toy_model(None, {}, tmp_path)
    path = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def pipeline(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "toy",
        "task": "toy-regression",
        "seed": 0,
        "data": {"dataset": "toy-points", "args": {"n": 80, "seed": 1}, "val_fraction": 0.2, "test_fraction": 0.25},
        "model": {"backbone": "toy-encdec", "weights": "base.safetensors"},
        "strategy": {"name": "fine-tune", "backbone_lr_mult": 0.5},
        "baseline": {"name": "scratch"},
        "train": {"epochs": 4, "batch_size": 16, "lr": 0.01},
    }
    data.update(overrides)
    return data


def run(
    data: dict[str, Any], base_dir: Path, out: Path, manager: PluginManager | None = None
) -> tuple[Path, dict[str, Any]]:
    manager = manager or make_manager()
    config = validate(data, manager.registries, base_dir)
    run_dir = Runner(manager, echo=lambda s: None).run(LoadedPipeline(config, base_dir, "test"), output=out)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- tasks
def test_lower_is_better_metric_drives_gain_and_best_epoch(tmp_path, base_weights):
    run_dir, summary = run(pipeline(), tmp_path, tmp_path / "run")
    assert summary["primary_metric"] == "mse" and summary["metric_directions"]["mse"] == "min"
    arm, base = summary["arms"]["fine-tune"], summary["arms"]["scratch"]
    # A gain is positive when the arm's error is lower than the baseline's.
    assert arm["gain_vs_baseline"] == pytest.approx(base["metrics"]["mse"] - arm["metrics"]["mse"])
    result = json.loads((run_dir / "arms/main/fine-tune/seed0/result.json").read_text())
    val = [r["val_mse"] for r in result["history"]]
    assert result["best_epoch"] == 1 + val.index(min(val))
    # The test metrics are those of the best epoch's weights: re-evaluate the saved model.
    task, model, meta = load_run_model(make_manager().registries, run_dir, arm="fine-tune")
    assert meta["seed"] == 0 and meta["stage"] == "main"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["stage"] for line in lines} == {"main"}


def test_predict_on_strings_through_the_task(tmp_path, base_weights):
    run_dir, _ = run(pipeline(), tmp_path, tmp_path / "run")
    task, model, meta = load_run_model(make_manager().registries, run_dir)
    text = ",".join(["0.5"] * toy_plugin.DIM)
    [result] = task.predict(model, [PredictInput(text, "text")], meta["info"], options={})
    with torch.no_grad():
        expected = float(model({"x": torch.full((1, toy_plugin.DIM), 0.5)})[0])
    assert result["value"] == pytest.approx(expected)
    assert task.render_prediction(result).startswith(text + " -> ")


# ---------------------------------------------------------------------------- parts
def _prepared(tmp_path: Path, data: dict[str, Any]):
    manager = make_manager()
    config = validate(data, manager.registries, tmp_path)
    runner = Runner(manager, echo=lambda s: None)
    return runner, runner.prepare(LoadedPipeline(config, tmp_path, "test"), check_output=False)


def test_two_part_model_with_per_part_init_and_lr(tmp_path, base_weights):
    arm = {
        "name": "fine-tune",
        "backbone_lr_mult": 0.1,
        "parts": {"decoder": {"init": "random", "lr_mult": 1.0, "unfreeze": 1}},
    }
    runner, p = _prepared(tmp_path, pipeline(strategy=arm))
    stage = p.stages[0]
    strategy = runner.strategy(StrategyConfig.model_validate(arm))
    model = runner.build_model(stage, strategy, 0, tmp_path)
    base = load_file(str(base_weights))
    for k, v in model.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(v, base[k]), k  # started pretrained
        else:
            assert not torch.equal(v, base[k]), k  # started random
    groups = {g["name"]: g for g in strategy.param_groups(model, 0.01)}
    assert set(groups) == {"encoder.0", "encoder.1", "decoder.0", "decoder.1"}
    assert groups["encoder.0"]["lr"] == pytest.approx(0.001) and groups["decoder.1"]["lr"] == pytest.approx(0.01)
    trainable = strategy.apply(model, 1)
    assert trainable == ["encoder.0", "encoder.1", "decoder.1"]  # decoder: top block only
    assert not any(p.requires_grad for p in model.part("decoder").module[0].parameters())


def test_a_parameter_outside_every_part_is_named(tmp_path, base_weights):
    runner, p = _prepared(tmp_path, pipeline())
    strategy = runner.strategy(StrategyConfig(name="fine-tune"))
    model = runner.build_model(p.stages[0], strategy, 0, tmp_path)
    model.stray = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TLEngineError, match=r"parameters in no optimizer group: stray"):
        strategy.param_groups(model, 0.01)


def test_unknown_part_and_unknown_strategy_args_are_config_errors(tmp_path, base_weights):
    manager = make_manager()
    bad = pipeline(strategy={"name": "toy-adapter", "args": {"bottlenek": 2}, "parts": {"head": {"lr_mult": 2}}})
    with pytest.raises(ConfigError) as err:
        validate(bad, manager.registries, tmp_path)
    fields = {loc for loc, _ in err.value.errors}
    assert {"strategy.args.bottlenek", "strategy.parts.head"} <= fields


def test_a_strategy_written_against_the_first_api_still_works(tmp_path, base_weights):
    class TopOne(Strategy):
        name = "top-one"

        def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
            return 1

        def backbone_lr_mult(self) -> float:
            return 0.5

    class Legacy:
        @hookimpl
        def tlengine_register_strategies(self, strategies: Any) -> None:
            strategies.add("top-one", TopOne)

    run_dir, summary = run(pipeline(strategy={"name": "top-one"}), tmp_path, tmp_path / "run", make_manager(Legacy()))
    base = load_file(str(base_weights))
    final = load_file(str(run_dir / "arms/main/top-one/seed0/model.safetensors"))
    # Block 0 of each part frozen (bit-identical), block 1 trained.
    assert torch.equal(final["encoder.0.0.weight"], base["encoder.0.0.weight"])
    assert not torch.equal(final["encoder.1.0.weight"], base["encoder.1.0.weight"])
    assert summary["arms"]["top-one"]["strategy"] == "top-one"


# ---------------------------------------------------------------------------- strategies
def test_adapter_file_holds_only_its_parameters_and_the_base_stays_bit_identical(tmp_path, base_weights):
    before = sha(base_weights)
    data = pipeline(strategy={"name": "toy-adapter", "args": {"bottleneck": 2}}, baseline=None)
    run_dir, _ = run(data, tmp_path, tmp_path / "run")
    arm_dir = run_dir / "arms/main/toy-adapter/seed0"
    own = load_file(str(arm_dir / "own.safetensors"))
    assert own and all(k.startswith("adapter.") for k in own)
    assert sha(base_weights) == before
    base, full = load_file(str(base_weights)), load_file(str(arm_dir / "model.safetensors"))
    for k, v in base.items():
        assert torch.equal(full[k], v), k  # the base parameters never moved
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in own.values())  # the adapter did
    # base file + adapter file = the trained model
    strategy = toy_plugin.ToyAdapter(StrategyConfig(name="toy-adapter", args={"bottleneck": 2}))
    rebuilt = toy_plugin.build_toy_model("base.safetensors", {"encoder": True, "decoder": True}, tmp_path)
    strategy.prepare(rebuilt, None)
    missing, unexpected = rebuilt.load_state_dict(own, strict=False)
    assert not unexpected and all(not k.startswith("adapter.") for k in missing)
    _, trained, _ = load_run_model(make_manager().registries, run_dir)
    x = {"x": torch.randn(5, toy_plugin.DIM)}
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), trained(x))


def two_domain_pipeline(**strategy: Any) -> dict[str, Any]:
    data = pipeline()
    for key in ("strategy", "baseline", "data"):
        data.pop(key)
    data["stages"] = [
        {
            "name": "adapt",
            "data": {"dataset": "toy-points", "args": {"n": 80, "seed": 1}},
            "extra_data": {
                "unlabelled": {"dataset": "toy-points", "args": {"n": 40, "seed": 2, "shift": 2.0, "unlabelled": True}}
            },
            "strategy": {"name": "toy-two-domain", **strategy},
        }
    ]
    return data


def test_strategy_owns_the_step_over_a_labelled_and_an_unlabelled_dataset(tmp_path, base_weights):
    toy_plugin.ToyTwoDomain.unlabelled_batches, toy_plugin.ToyTwoDomain.progress_seen = [], []
    run_dir, _ = run(two_domain_pipeline(args={"weight": 0.5}), tmp_path, tmp_path / "run")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("train_loss_task" in r and "train_loss_match" in r for r in records)
    assert all(r["train_loss"] == pytest.approx(r["train_loss_task"] + r["train_loss_match"]) for r in records)
    # One unlabelled batch per step, cycling through its 24 training samples and starting
    # afresh each epoch (3 steps): 16, 8, 16 | 16, 8, 16 | ...
    batches = toy_plugin.ToyTwoDomain.unlabelled_batches
    assert len(batches) == len(toy_plugin.ToyTwoDomain.progress_seen) == 12
    assert batches == [16, 8, 16] * 4
    progress = toy_plugin.ToyTwoDomain.progress_seen
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] < 1.0


def test_a_strategy_needing_an_extra_dataset_says_so(tmp_path, base_weights):
    data = two_domain_pipeline()
    del data["stages"][0]["extra_data"]
    with pytest.raises(ConfigError, match="needs the extra dataset 'unlabelled'"):
        validate(data, make_manager().registries, tmp_path)


def test_every_arm_is_also_tested_on_an_evaluate_on_dataset(tmp_path, base_weights):
    """Top-level extra_data + evaluate_on: each arm's test metrics gain '<name>.<metric>' from
    the whole trained model on that dataset's test split, signed by the metric's direction."""
    shifted = {"dataset": "toy-points", "args": {"n": 40, "seed": 3, "shift": 1.5}, "test_fraction": 0.5}
    data = pipeline(extra_data={"shifted": shifted}, evaluate_on=["shifted"])
    run_dir, summary = run(data, tmp_path, tmp_path / "run")
    assert summary["table_metrics"] == ["mse", "shifted.mse", "shifted.a_distance"]
    assert summary["metric_directions"]["shifted.mse"] == summary["metric_directions"]["shifted.a_distance"] == "min"
    # the shifted points are easy to tell from the stage's by their features; a map per arm is drawn
    assert all(0.5 < arm["metrics"]["shifted.a_distance"] <= 2.0 for arm in summary["arms"].values())
    assert "plots/shifted_features_by_arm.png" in summary["plots"]
    points = toy_plugin.build_points(toy_plugin.PointsArgs(n=40, seed=3, shift=1.5), tmp_path)
    test = torch.randperm(40, generator=torch.Generator().manual_seed(0)).tolist()[:20]  # the toy task's split
    for arm in ("fine-tune", "scratch"):
        metrics = summary["arms"][arm]["metrics"]
        assert {"mse", "mae", "shifted.mse", "shifted.mae"} <= metrics.keys()
        _, model, _ = load_run_model(make_manager().registries, run_dir, arm=arm)
        with torch.no_grad():
            pred = model({"x": points.x[test]})
        expected = float(((pred - torch.tensor([points.y[i] for i in test])) ** 2).mean())
        assert metrics["shifted.mse"] == pytest.approx(expected, rel=1e-5)
    gains = summary["arms"]["fine-tune"]["gains"]
    base, tuned = summary["arms"]["scratch"]["metrics"], summary["arms"]["fine-tune"]["metrics"]
    assert gains["shifted.mse"] == pytest.approx(base["shifted.mse"] - tuned["shifted.mse"])
    # "vs baseline" compares the arms on the evaluate_on dataset (a domain-adaptation target)
    assert summary["gain_metric"] == "shifted.mse"
    assert summary["arms"]["fine-tune"]["gain_vs_baseline"] == gains["shifted.mse"]
    from tlengine.reporting.tables import summary_markdown, summary_rows

    assert "vs baseline on shifted.mse" in summary_markdown(summary)
    rows = {r["arm"]: r for r in summary_rows(summary)}
    assert rows["fine-tune"]["gain_vs_baseline"] == pytest.approx(gains["shifted.mse"])


def test_evaluate_on_names_an_extra_dataset(tmp_path, base_weights):
    data = pipeline(evaluate_on=["target"])
    with pytest.raises(ConfigError) as err:
        validate(data, make_manager().registries, tmp_path)
    assert ("evaluate_on.0", "'target' is not one of the stage's extra_data datasets (known: none)") in err.value.errors


# ---------------------------------------------------------------------------- stages and seeds
def staged(seeds: list[int] | None = None) -> dict[str, Any]:
    data = pipeline()
    for key in ("strategy", "baseline"):
        data.pop(key)
    data["model"]["weights"] = None
    if seeds:
        data["seeds"] = seeds
    data["stages"] = [
        {
            "name": "pre",
            "data": {"dataset": "toy-points", "args": {"n": 120, "seed": 5}},
            "strategy": {"name": "scratch"},
            "train": {"epochs": 3},
        },
        {
            "name": "fine",
            "init_from": "pre",
            "strategy": {
                "name": "fine-tune",
                "label": "frozen-copy",
                "parts": {"encoder": {"unfreeze": 0}, "decoder": {"unfreeze": 0}},
            },
            "compare": [{"name": "fine-tune"}],
            "baseline": {"name": "scratch"},
        },
    ]
    return data


def test_two_stages_with_init_from(tmp_path):
    run_dir, summary = run(staged(), tmp_path, tmp_path / "run")
    source = load_file(str(run_dir / "arms/pre/scratch/seed0/model.safetensors"))
    frozen = load_file(str(run_dir / "arms/fine/frozen-copy/seed0/model.safetensors"))
    scratch = load_file(str(run_dir / "arms/fine/scratch/seed0/model.safetensors"))
    assert all(torch.equal(frozen[k], v) for k, v in source.items())  # started from stage 'pre'
    assert not torch.equal(scratch["encoder.0.0.weight"], source["encoder.0.0.weight"])
    assert list(summary["stages"]) == ["pre", "fine"]
    assert summary["primary_arm"] == "frozen-copy" and summary["baseline_arm"] == "scratch"
    assert set(summary["arms"]) == {"frozen-copy", "fine-tune", "scratch"}


def test_init_from_must_name_an_earlier_stage(tmp_path):
    data = staged()
    data["stages"][1]["init_from"] = "later"
    with pytest.raises(ConfigError, match="stages.1.init_from: 'later' is not an earlier stage"):
        validate(data, make_manager().registries, tmp_path)


def test_three_seeds_are_aggregated(tmp_path, base_weights):
    _, summary = run(pipeline(seeds=[0, 1, 2]), tmp_path, tmp_path / "run")
    assert summary["seeds"] == [0, 1, 2]
    for arm in summary["arms"].values():
        per_seed = [arm["per_seed"][s]["mse"] for s in ("0", "1", "2")]
        assert len(set(per_seed)) == 3  # the seeds really differ
        assert arm["metrics"]["mse"] == pytest.approx(statistics.fmean(per_seed))
        assert arm["metrics_std"]["mse"] == pytest.approx(statistics.stdev(per_seed))


class KillAt:
    """Raises KeyboardInterrupt (like Ctrl-C) after ``epoch`` of ``arm`` in ``stage``."""

    def __init__(self, stage: str, arm: str, epoch: int):
        self.where = (stage, arm, epoch)

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, Any]) -> None:
        if (metrics["stage"], arm, epoch) == self.where:
            raise KeyboardInterrupt


def test_a_run_killed_in_stage_2_resumes_to_identical_metrics(tmp_path):
    data = staged(seeds=[0, 1])
    _, whole = run(data, tmp_path, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path, tmp_path / "killed", make_manager(KillAt("fine", "fine-tune", 2)))
    status = json.loads((tmp_path / "killed" / "status.json").read_text())
    assert status["state"] == "failed" and not (tmp_path / "killed" / "metrics.json").exists()
    Runner(make_manager(), echo=lambda s: None).resume(tmp_path / "killed")
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for stage in ("pre", "fine"):
        for name, arm in whole["stages"][stage]["arms"].items():
            assert resumed["stages"][stage]["arms"][name]["per_seed"] == arm["per_seed"], (stage, name)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())
