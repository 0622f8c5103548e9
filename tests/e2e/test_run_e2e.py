"""End to end: through the CLI as a user runs it (run, outputs, predict, resume), and
in-process runs of the tiny pipeline that prove each training option has its effect."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TINY, run_cli
from PIL import Image
from safetensors.torch import load_file
from tlengine import hookimpl
from tlengine.config import StrategyConfig
from tlengine.pipeline import Runner
from tlengine.plugins import PluginInfo, PluginManager, get_plugin_manager
from tlengine.predict import load_run_model
from tlengine.task import PredictInput
from tlengine.training import checkpoint
from tlengine.validation import LoadedPipeline, validate

pytestmark = pytest.mark.slow

CLASSES = ["circle", "square", "triangle"]
SUMMARY_KEYS = {
    "task",
    "pipeline",
    "strategy",
    "metrics",
    "baseline",
    "timings",
    "cache",
    "primary_metric",
    "metric_directions",
    "primary_arm",
    "baseline_arm",
    "seeds",
    "arms",
    "stages",
    "source",
    "plots",
}
ARM_KEYS = {"strategy", "metrics", "per_seed", "val_metrics", "seconds", "epochs", "best_epoch"}


def run_dir_of(result) -> Path:
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def one_line_error(result) -> str:
    """The single plain line a failing command prints (no traceback, nothing on stdout)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and not result.stdout.strip(), result.stdout + result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- the run directory
def test_run_writes_complete_run_directory(cli, tiny_config, write_pipeline, tmp_path):
    tiny_config["compare"] = [{"name": "feature-extraction"}]
    # 3, not the tiny config's 2: the epochs below must come from the override.
    result = cli("run", str(write_pipeline(tiny_config)), "train.epochs=3", "--output", str(tmp_path / "run"))
    run = run_dir_of(result)
    assert run == tmp_path / "run"
    arms = ["fine-tune", "feature-extraction", "scratch"]

    lines = records(run)
    assert [(r["stage"], r["arm"], r["seed"], r["epoch"]) for r in lines] == [
        ("main", arm, 0, epoch) for arm in arms for epoch in (1, 2, 3)
    ]
    assert all({"train_loss", "val_accuracy", "val_macro_f1", "val_loss", "lr"} <= r.keys() for r in lines)

    summary = json.loads((run / "metrics.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["task"] == "image-classification" and summary["strategy"] == "fine-tune"
    assert summary["primary_metric"] == "accuracy"
    assert summary["metric_directions"] == {"accuracy": "max", "macro_f1": "max", "loss": "min"}
    assert summary["primary_arm"] == "fine-tune" and summary["baseline_arm"] == "scratch"
    assert summary["seeds"] == [0] and summary["source"] is None
    assert list(summary["arms"]) == arms and list(summary["stages"]) == ["main"]
    assert summary["stages"]["main"]["arms"] == summary["arms"]
    assert summary["metrics"] == summary["arms"]["fine-tune"]["metrics"]
    assert summary["baseline"] == summary["arms"]["scratch"]["metrics"]
    base = summary["baseline"]
    for name in arms:
        arm = summary["arms"][name]
        assert ARM_KEYS <= arm.keys(), name
        assert set(arm["metrics"]) == {"accuracy", "macro_f1", "loss"}
        assert arm["per_seed"] == {"0": arm["metrics"]}
        assert "metrics_std" not in arm  # one seed
        assert arm["epochs"] == 3 and 1 <= arm["best_epoch"] <= 3 and arm["seconds"] > 0
        result_json = json.loads((run / "arms" / "main" / name / "seed0" / "result.json").read_text())
        assert result_json["test"]["metrics"] == arm["metrics"]
        val = [r["val_accuracy"] for r in result_json["history"]]
        assert arm["best_epoch"] == 1 + val.index(max(val))  # the first epoch with the best val accuracy
        assert (run / "reports" / f"per_class_{name}.md").read_text().startswith("| class |")
        if name == "scratch":
            assert "gains" not in arm and "gain_vs_baseline" not in arm
        else:
            for metric, value in arm["metrics"].items():
                sign = -1 if metric == "loss" else 1
                assert arm["gains"][metric] == pytest.approx(sign * (value - base[metric]))
            assert arm["gain_vs_baseline"] == arm["gains"]["accuracy"]
    assert set(summary["cache"]) == {"feature-extraction"}
    assert summary["timings"]["total_seconds"] > 0
    assert {f"{a}_seconds" for a in arms} | {"stage_main_seconds"} <= summary["timings"].keys()
    assert summary["plots"] and all((run / p).is_file() for p in summary["plots"])

    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["info"]["classes"] == CLASSES and meta["strategy"] == "fine-tune"
    primary = run / "arms" / "main" / "fine-tune" / "seed0"
    assert (run / "checkpoint.safetensors").read_bytes() == (primary / "model.safetensors").read_bytes()
    assert meta == json.loads((primary / "model.json").read_text())
    for plot in ("loss.png", "val_accuracy.png", "confusion_fine-tune.png", "confusion_scratch.png"):
        with Image.open(run / "plots" / plot) as im:
            assert im.size[0] > 100
    assert not list(run.rglob("state.safetensors")), "finished arms should not keep resume state"
    assert not list(run.rglob("best.safetensors")), "finished arms should not keep their best-epoch file"
    assert "fine-tune" in result.stdout  # the summary table


# ----------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def predict_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    """One finished tiny run (fine-tune + scratch, 1 epoch) and two images to predict on."""
    root = tmp_path_factory.mktemp("predict")
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["train"]["epochs"] = 1
    (root / "p.yaml").write_text(yaml.safe_dump(config))
    run = run_dir_of(run_cli("run", str(root / "p.yaml"), "--output", str(root / "run")))
    images = [root / "red.png", root / "blue.png"]
    Image.new("RGB", (40, 40), (200, 30, 30)).save(images[0])
    Image.new("RGB", (48, 32), (20, 30, 220)).save(images[1])
    return run, images


def parse_text(stdout: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """``<input>: <label> <p>, <label> <p>`` lines -> [(input, [(label, p), ...])]."""
    out = []
    for line in stdout.strip().splitlines():
        path, preds = line.rsplit(": ", 1)
        out.append((path, [(p.rsplit(" ", 1)[0], float(p.rsplit(" ", 1)[1])) for p in preds.split(", ")]))
    return out


def test_predict_prints_top_k(cli, predict_run):
    run, images = predict_run
    files = [str(p) for p in images]
    by_k = {}
    for k in (1, 2, 3):
        result = cli("predict", str(run), *files, "--top-k", str(k), "--json")
        assert result.returncode == 0, result.stderr
        preds = json.loads(result.stdout)
        assert [p["input"] for p in preds] == files
        for p in preds:
            labels = [x["label"] for x in p["predictions"]]
            probs = [x["probability"] for x in p["predictions"]]
            assert len(labels) == k and len(set(labels)) == k and set(labels) <= set(CLASSES)
            assert probs == sorted(probs, reverse=True) and all(0.0 <= x <= 1.0 for x in probs)
        by_k[k] = preds
    for p in by_k[3]:  # every class: a softmax sums to 1
        assert sum(x["probability"] for x in p["predictions"]) == pytest.approx(1.0, abs=1e-5)
    for k in (1, 2):  # top-k is a prefix of the full ranking
        for small, full in zip(by_k[k], by_k[3]):
            assert [x["label"] for x in small["predictions"]] == [x["label"] for x in full["predictions"][:k]]
            assert [x["probability"] for x in small["predictions"]] == pytest.approx(
                [x["probability"] for x in full["predictions"][:k]], abs=1e-6
            )
    # The text output says what --json says.
    text = cli("predict", str(run), *files, "--top-k", "2")
    assert text.returncode == 0, text.stderr
    parsed = parse_text(text.stdout)
    assert [path for path, _ in parsed] == files
    for (_, shown), pred in zip(parsed, by_k[2]):
        assert [label for label, _ in shown] == [x["label"] for x in pred["predictions"]]
        assert [p for _, p in shown] == pytest.approx([x["probability"] for x in pred["predictions"]], abs=5e-4)

    bad = images[0].parent / "bad.png"
    bad.write_bytes(b"not an image")
    assert "bad.png" in one_line_error(cli("predict", str(run), str(bad)))


@pytest.mark.parametrize("k", ["0", "-5"])
def test_predict_top_k_below_one_is_a_one_line_error(cli, predict_run, k):
    run, images = predict_run
    line = one_line_error(cli("predict", str(run), str(images[0]), "--top-k", k))
    assert "--top-k" in line and k in line


def test_predict_with_arm_uses_that_arms_model(cli, predict_run):
    run, images = predict_run
    registries = get_plugin_manager().registries

    def in_process(arm: str | None) -> list[float]:
        task, model, meta = load_run_model(registries, run, arm=arm)
        [pred] = task.predict(model, [PredictInput(str(images[0]), "file")], meta["info"], options={"top_k": 3})
        return [x["probability"] for x in sorted(pred["predictions"], key=lambda x: x["label"])]

    def via_cli(*args: str) -> list[float]:
        result = cli("predict", str(run), str(images[0]), "--top-k", "3", "--json", *args)
        assert result.returncode == 0, result.stderr
        [pred] = json.loads(result.stdout)
        return [x["probability"] for x in sorted(pred["predictions"], key=lambda x: x["label"])]

    scratch, primary = in_process("scratch"), in_process(None)
    assert scratch != pytest.approx(primary, abs=1e-6), "the two arms should predict differently"
    assert primary == pytest.approx(in_process("fine-tune"), abs=1e-7)  # checkpoint = the primary arm
    assert via_cli("--arm", "scratch") == pytest.approx(scratch, abs=1e-6)
    assert via_cli("--arm", "scratch", "--stage", "main", "--seed", "0") == pytest.approx(scratch, abs=1e-6)
    line = one_line_error(cli("predict", str(run), str(images[0]), "--arm", "nope"))
    assert "nope" in line and "main/fine-tune/seed0" in line and "main/scratch/seed0" in line


def test_same_seed_same_metrics(cli, tiny_config, write_pipeline, tmp_path):
    p = write_pipeline(tiny_config)
    a = json.loads((run_dir_of(cli("run", str(p), "--output", str(tmp_path / "a"))) / "metrics.json").read_text())
    b = json.loads((run_dir_of(cli("run", str(p), "--output", str(tmp_path / "b"))) / "metrics.json").read_text())
    assert a["arms"] == {k: {**v, "seconds": a["arms"][k]["seconds"]} for k, v in b["arms"].items()}


# ----------------------------------------------------------------------------- resume
def test_resume_after_kill_mid_epoch_matches_uninterrupted_run(tmp_path, tiny_config, write_pipeline, cli):
    """Kill the run with SIGKILL in the middle of an epoch, resume it, compare with a clean run."""
    # resnet18 at 64 px: ~1 s per epoch on 2 cores, so the kill lands inside an epoch.
    tiny_config["data"]["args"].update(per_class=60, size=64)
    tiny_config["model"].update(backbone="resnet18", input_size=64)
    tiny_config["train"]["epochs"] = 4
    tiny_config["strategy"] = {"name": "fine-tune", "gradual_unfreezing": {"start_epoch": 1, "every_epochs": 1}}
    p = write_pipeline(tiny_config)
    reference = json.loads(
        (run_dir_of(cli("run", str(p), "--output", str(tmp_path / "ref"))) / "metrics.json").read_text()
    )

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlengine", "run", str(p), "--output", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline = time.time() + 300
    jsonl = run / "metrics.jsonl"
    while time.time() < deadline:  # wait until epoch 2 of the first arm has finished
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be interrupted")
        time.sleep(0.02)
    time.sleep(0.3)  # now inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    assert (run / "arms" / "main" / "fine-tune" / "seed0" / "state.safetensors").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # what SIGKILL leaves

    result = cli("run", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    resumed = json.loads((run / "metrics.json").read_text())
    for arm in reference["arms"]:
        assert resumed["arms"][arm]["metrics"] == pytest.approx(reference["arms"][arm]["metrics"], abs=1e-6)
    lines = records(run)
    assert [(r["arm"], r["epoch"]) for r in lines] == [("fine-tune", e) for e in range(1, 5)] + [
        ("scratch", e) for e in range(1, 5)
    ]
    ref_lines = records(tmp_path / "ref")
    for got, want in zip(lines, ref_lines):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    again = cli("run", "--resume", str(run))
    assert again.returncode != 0 and "already complete" in again.stderr


# ----------------------------------------------------------------------------- sequential transfer
def test_sequential_transfer_tiny(cli, tmp_path):
    """The shipped sequential pipeline, shrunk: the arms of the main stage start from the
    source stage's model. Frozen arms (fine-tune with unfreeze: 0, feature-extraction)
    must end with exactly the source model's backbone; scratch must not have it."""
    result = cli(
        "run",
        "sequential-shapes",
        "source.data.args.per_class=20",
        "source.train.epochs=1",
        "data.args.per_class=10",
        "train.epochs=1",
        "strategy.unfreeze=0",
        "--output",
        str(tmp_path / "seq"),
    )
    run = run_dir_of(result)
    summary = json.loads((run / "metrics.json").read_text())
    assert list(summary["stages"]) == ["source", "main"]
    assert list(summary["stages"]["source"]["arms"]) == ["source"]
    assert summary["source"] is not None and summary["source"]["epochs"] == 1
    source = load_file(str(run / "arms" / "source" / "source" / "seed0" / "model.safetensors"))
    backbone = {k: v for k, v in source.items() if k.startswith("backbone.")}
    assert backbone and any(k.endswith("running_mean") for k in backbone)
    for arm in ("fine-tune", "feature-extraction"):
        model = load_file(str(run / "arms" / "main" / arm / "seed0" / "model.safetensors"))
        for k, v in backbone.items():
            assert torch.equal(model[k], v), (arm, k)
        meta = json.loads((run / "arms" / "main" / arm / "seed0" / "model.json").read_text())
        assert meta["pretrained"] is True and meta["init_from"] == "source"
    scratch = load_file(str(run / "arms" / "main" / "scratch" / "seed0" / "model.safetensors"))
    assert not torch.equal(scratch["backbone.stage1.0.weight"], backbone["backbone.stage1.0.weight"])
    assert json.loads((run / "arms" / "main" / "scratch" / "seed0" / "model.json").read_text())["pretrained"] is False


# ----------------------------------------------------------------------------- options, in-process
def option_config(**train: Any) -> dict[str, Any]:
    """The tiny pipeline with one scratch arm (every group at train.lr), 3 epochs of 2 steps
    (15 training images, batch 8)."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["strategy"] = {"name": "scratch"}
    config["baseline"] = None
    config["train"].update(epochs=3, **train)
    return config


def manager_with(*plugins: Any) -> PluginManager:
    manager = PluginManager()
    manager.load_entry_points()
    for i, plugin in enumerate(plugins):
        manager.register(plugin, PluginInfo(f"test{i}", "tests", "0", "tests"))
    return manager


def run_in_process(
    config: dict[str, Any], out: Path, manager: PluginManager | None = None
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    manager = manager or get_plugin_manager()
    loaded = LoadedPipeline(validate(config, manager.registries, out.parent), out.parent, "test")
    run = Runner(manager, echo=lambda s: None).run(loaded, output=out)
    return run, json.loads((run / "metrics.json").read_text()), records(run)


def initial_model(config: dict[str, Any], base_dir: Path, arm: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights arm ``arm`` starts from under seed 0 (built as the runner builds them)."""
    manager = get_plugin_manager()
    runner = Runner(manager, echo=lambda s: None)
    prepared = runner.prepare(
        LoadedPipeline(validate(config, manager.registries, base_dir), base_dir, "test"), check_output=False
    )
    model = runner.build_model(prepared.stages[0], runner.strategy(StrategyConfig.model_validate(arm)), 0, base_dir)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


class Recorder:
    """Records every lifecycle hook call, with what the run directory held at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def tlengine_before_run(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.calls.append(
            (
                "before_run",
                {
                    "run_dir": run_dir,
                    "config": config,
                    "config_yaml": yaml.safe_load((run_dir / "config.yaml").read_text()),
                    "jsonl": (run_dir / "metrics.jsonl").read_text(),
                },
            )
        )

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, float]) -> None:
        last = (run_dir / "metrics.jsonl").read_text().splitlines()[-1]
        self.calls.append(
            (
                "on_epoch_end",
                {"run_dir": run_dir, "arm": arm, "epoch": epoch, "metrics": metrics, "last_line": json.loads(last)},
            )
        )

    @hookimpl
    def tlengine_after_run(self, run_dir: Path, summary: dict[str, Any]) -> None:
        self.calls.append(
            (
                "after_run",
                {
                    "run_dir": run_dir,
                    "summary": summary,
                    "metrics_json": json.loads((run_dir / "metrics.json").read_text()),
                },
            )
        )


def test_hooks_fire_with_the_documented_arguments(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["seeds"] = [0, 1]
    recorder = Recorder()
    run, summary, lines = run_in_process(config, tmp_path / "run", manager_with(recorder))
    names = [name for name, _ in recorder.calls]
    assert names == ["before_run"] + ["on_epoch_end"] * 8 + ["after_run"]  # 2 seeds x 2 arms x 2 epochs

    before = recorder.calls[0][1]
    assert before["run_dir"] == run
    assert before["config"] == before["config_yaml"]  # the resolved pipeline as plain data
    assert before["config"]["seeds"] == [0, 1] and before["config"]["train"]["epochs"] == 2
    assert before["jsonl"] == ""  # before any training

    epochs = [args for name, args in recorder.calls if name == "on_epoch_end"]
    assert [(a["metrics"]["seed"], a["arm"], a["epoch"]) for a in epochs] == [
        (seed, arm, epoch) for seed in (0, 1) for arm in ("fine-tune", "scratch") for epoch in (1, 2)
    ]
    for args, line in zip(epochs, lines):
        assert args["run_dir"] == run
        assert args["metrics"] == args["last_line"] == line  # the line just appended
        assert args["metrics"]["stage"] == "main" and args["metrics"]["arm"] == args["arm"]
        assert args["metrics"]["epoch"] == args["epoch"]

    after = recorder.calls[-1][1]
    assert after["run_dir"] == run and after["summary"] == after["metrics_json"] == summary


class OptimizerSpy:
    """At each epoch end, reads the optimizer back from the arm's ``state.safetensors``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, float]) -> None:
        state = run_dir / "arms" / metrics["stage"] / arm / f"seed{metrics['seed']}" / "state.safetensors"
        tensors, meta = checkpoint.load_tensors(state)
        self.seen.append(
            {
                "group": meta["optimizer"]["param_groups"][0],
                "state": {k.split(".", 2)[2] for k in tensors if k.startswith("optim.")},
            }
        )


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_choice_is_the_optimizer_that_trains(tmp_path, optimizer):
    spy = OptimizerSpy()
    _, _, lines = run_in_process(
        option_config(optimizer=optimizer, momentum=0.8, weight_decay=0.01), tmp_path / "run", manager_with(spy)
    )
    assert len(spy.seen) == 3
    for seen in spy.seen:
        group, state = seen["group"], seen["state"]
        assert group["weight_decay"] == 0.01
        if optimizer == "sgd":
            assert group["momentum"] == 0.8 and group["nesterov"] is True and state == {"momentum_buffer"}
        else:
            assert "momentum" not in group and {"exp_avg", "exp_avg_sq"} <= state
            assert group["decoupled_weight_decay"] is (optimizer == "adamw")
    assert lines[0]["train_loss"] > 0


def test_constant_and_cosine_schedules_and_warmup_in_the_logged_lr(tmp_path):
    lr = 0.01

    def logged(name: str, **train: Any) -> list[float]:
        _, _, lines = run_in_process(option_config(lr=lr, **train), tmp_path / name)
        return [r["lr"] for r in lines]

    # lr after the last step of each epoch (steps 2, 4, 6 of 6).
    assert logged("constant", scheduler="constant") == pytest.approx([lr, lr, lr])
    cosine = [lr * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in (2, 4, 6)]
    assert logged("cosine", scheduler="cosine") == pytest.approx(cosine)
    assert cosine[-1] == pytest.approx(0.0)
    # Two epochs (4 steps) of linear warm-up: factor (step + 1) / 5 until step 4.
    assert logged("warmup", scheduler="constant", warmup_epochs=2) == pytest.approx([lr * 3 / 5, lr, lr])
    warm_cosine = [lr * 0.6, lr * 0.5 * (1 + math.cos(0)), lr * 0.5 * (1 + math.cos(math.pi))]
    assert logged("warmup-cosine", scheduler="cosine", warmup_epochs=2) == pytest.approx(warm_cosine)


def test_grad_clip_bounds_every_update(tmp_path):
    """Plain SGD at a constant lr moves the parameters by at most lr * grad_clip per step."""
    lr, clip, steps = 0.1, 1e-3, 6
    sgd = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=lr, scheduler="constant", keep="last")
    moved = {}
    for name, extra in (("clipped", {"grad_clip": clip}), ("free", {})):
        config = option_config(**sgd, **extra)
        start = initial_model(config, tmp_path, {"name": "scratch"})
        run, _, _ = run_in_process(config, tmp_path / name)
        final = load_file(str(run / "arms" / "main" / "scratch" / "seed0" / "model.safetensors"))
        moved[name] = math.sqrt(sum(float((final[k] - v).pow(2).sum()) for k, v in start.items()))
    assert 0 < moved["clipped"] <= steps * lr * clip * (1 + 1e-4)
    assert moved["free"] > 10 * steps * lr * clip


def test_dropout_adds_a_dropout_before_the_head(tmp_path):
    runs = {}
    for p in (0.0, 0.5):
        config = option_config()
        config["model"]["dropout"] = p
        runs[p] = run_in_process(config, tmp_path / f"dropout-{p}")
    task, model, meta = load_run_model(get_plugin_manager().registries, runs[0.5][0])
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5
    assert meta["model"]["dropout"] == 0.5
    assert not any(
        isinstance(m, torch.nn.Dropout)
        for m in load_run_model(get_plugin_manager().registries, runs[0.0][0])[1].modules()
    )
    # The same init, data order and seed: only the dropout masks change the training loss...
    assert runs[0.5][2][0]["train_loss"] != pytest.approx(runs[0.0][2][0]["train_loss"], abs=1e-6)
    # ...and evaluation runs without them (eval mode): predictions repeat exactly.
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    first, second = (
        task.predict(model, [PredictInput(str(image), "file")], meta["info"], options={"top_k": 3}) for _ in range(2)
    )
    assert first == second


def test_per_arm_epochs_and_lr(tmp_path):
    config = option_config(lr=0.01, scheduler="constant")
    config["strategy"] = {"name": "scratch", "label": "short", "epochs": 1, "lr": 0.05}
    config["compare"] = [{"name": "scratch", "label": "default"}]
    _, summary, lines = run_in_process(config, tmp_path / "run")
    assert [(r["arm"], r["epoch"], r["lr"]) for r in lines] == [
        ("short", 1, 0.05),
        ("default", 1, 0.01),
        ("default", 2, 0.01),
        ("default", 3, 0.01),
    ]
    assert summary["arms"]["short"]["epochs"] == 1 and summary["arms"]["default"]["epochs"] == 3


# ----------------------------------------------------------------------------- domain adaptation
@pytest.mark.parametrize("source,target", [("mnist-5k", "uci-digits"), ("uci-digits", "mnist-5k")])
def test_domain_adaptation_digits_tiny_both_directions(cli, tmp_path, source, target):
    """The shipped digits pipeline, shrunk, in both directions: every arm reports source and
    target accuracy and the A-distance, "vs baseline" is on the target, and a feature map is drawn."""
    result = cli(
        "run",
        "domain-adaptation-digits",
        "seeds=[0]",
        f"data.dataset={source}",
        f"extra_data.target.dataset={target}",
        "data.args={per_class: 12}",
        "extra_data.target.args={per_class: 12}",
        "train.epochs=1",
        "--output",
        str(tmp_path / "da"),
    )
    run = run_dir_of(result)
    summary = json.loads((run / "metrics.json").read_text())
    assert set(summary["arms"]) == {"dann", "coral", "mmd", "source-only"}
    assert summary["baseline_arm"] == "source-only" and summary["gain_metric"] == "target.accuracy"
    for arm in summary["arms"].values():
        assert {"accuracy", "target.accuracy", "target.a_distance"} <= arm["metrics"].keys()
    assert "vs baseline on target.accuracy" in result.stdout
    assert (run / "plots" / "target_features_by_arm.png").is_file()


@pytest.mark.slow
def test_multitask_digits_tiny(cli, tmp_path):
    """The shipped multitask pipeline, one seed and one epoch: the single-task stages and the
    multitask stage, whose arms report every head's accuracy in the table."""
    result = cli("run", "multitask-digits", "seeds=[0]", "train.epochs=1", "--output", str(tmp_path / "mt"))
    run = run_dir_of(result)
    summary = json.loads((run / "metrics.json").read_text())
    assert list(summary["stages"]) == ["parity", "size", "digit"]
    assert set(summary["arms"]) == {"multitask-fixed", "multitask-uncertainty", "multitask-gradnorm", "single-task"}
    for name, arm in summary["arms"].items():
        heads = {"parity.accuracy", "size.accuracy"} <= arm["metrics"].keys()
        assert heads == name.startswith("multitask"), name
    assert summary["table_metrics"][-2:] == ["parity.accuracy", "size.accuracy"]
    assert "parity.accuracy" in result.stdout
