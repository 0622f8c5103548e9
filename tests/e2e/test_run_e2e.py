"""End to end through the CLI, as a user runs it: run, outputs, predict, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {"task", "pipeline", "strategy", "metrics", "baseline", "timings", "cache"}


def run_dir_of(result) -> Path:
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def test_run_writes_complete_run_directory(cli, tiny_config, write_pipeline, tmp_path):
    tiny_config["compare"] = [{"name": "feature-extraction"}]
    result = cli("run", str(write_pipeline(tiny_config)), "train.epochs=2", "--output", str(tmp_path / "run"))
    run = run_dir_of(result)
    assert run == tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["task"] == "image-classification" and summary["strategy"] == "fine-tune"
    assert {"accuracy", "macro_f1"} <= summary["metrics"].keys()
    assert summary["baseline"] is not None and "accuracy" in summary["baseline"]
    assert set(summary["arms"]) == {"fine-tune", "feature-extraction", "scratch"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["epoch"]) for r in lines] == [
        ("fine-tune", 1), ("fine-tune", 2), ("feature-extraction", 1), ("feature-extraction", 2),
        ("scratch", 1), ("scratch", 2)]
    assert all("val_accuracy" in r and "train_loss" in r for r in lines)
    assert (run / "config.yaml").is_file() and json.loads((run / "status.json").read_text())["state"] == "complete"
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["info"]["classes"] == ["circle", "square", "triangle"] and meta["strategy"] == "fine-tune"
    assert (run / "checkpoint.safetensors").stat().st_size > 0
    for plot in ("loss.png", "val_accuracy.png", "confusion_fine-tune.png", "confusion_scratch.png"):
        with Image.open(run / "plots" / plot) as im:
            assert im.size[0] > 100
    assert not list(run.rglob("state.safetensors")), "finished arms should not keep resume state"
    assert "Strategy" in result.stdout or "fine-tune" in result.stdout  # the summary table


def test_predict_prints_top_k(cli, tiny_config, write_pipeline, tmp_path):
    run = run_dir_of(cli("run", str(write_pipeline(tiny_config)), "train.epochs=1", "--output", str(tmp_path / "r")))
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(img)
    result = cli("predict", str(run), str(img), "--top-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    (pred,) = json.loads(result.stdout)
    assert pred["input"] == str(img) and len(pred["predictions"]) == 2
    assert {p["label"] for p in pred["predictions"]} <= {"circle", "square", "triangle"}
    assert abs(sum(p["probability"] for p in pred["predictions"])) <= 1.0 + 1e-6
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    failed = cli("predict", str(run), str(bad))
    assert failed.returncode != 0 and "bad.png" in failed.stderr and "Traceback" not in failed.stderr


def test_same_seed_same_metrics(cli, tiny_config, write_pipeline, tmp_path):
    p = write_pipeline(tiny_config)
    a = json.loads((run_dir_of(cli("run", str(p), "--output", str(tmp_path / "a"))) / "metrics.json").read_text())
    b = json.loads((run_dir_of(cli("run", str(p), "--output", str(tmp_path / "b"))) / "metrics.json").read_text())
    assert a["arms"] == {k: {**v, "seconds": a["arms"][k]["seconds"]} for k, v in b["arms"].items()}


def test_resume_after_kill_mid_epoch_matches_uninterrupted_run(tmp_path, tiny_config, write_pipeline, cli):
    """Kill the run with SIGKILL in the middle of an epoch, resume it, compare with a clean run."""
    # resnet18 at 64 px: ~1 s per epoch on 2 cores, so the kill lands inside an epoch.
    tiny_config["data"]["args"].update(per_class=60, size=64)
    tiny_config["model"].update(backbone="resnet18", input_size=64)
    tiny_config["train"]["epochs"] = 4
    tiny_config["strategy"] = {"name": "fine-tune", "gradual_unfreezing": {"start_epoch": 1, "every_epochs": 1}}
    p = write_pipeline(tiny_config)
    reference = json.loads((run_dir_of(cli("run", str(p), "--output", str(tmp_path / "ref"))) / "metrics.json").read_text())

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tlengine", "run", str(p), "--output", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
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
    assert (run / "arms" / "fine-tune" / "state.safetensors").exists()

    result = cli("run", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    resumed = json.loads((run / "metrics.json").read_text())
    for arm in reference["arms"]:
        assert resumed["arms"][arm]["metrics"] == pytest.approx(reference["arms"][arm]["metrics"], abs=1e-6)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["epoch"]) for r in lines] == [("fine-tune", e) for e in range(1, 5)] + [
        ("scratch", e) for e in range(1, 5)]
    ref_lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(lines, ref_lines):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
    again = cli("run", "--resume", str(run))
    assert again.returncode != 0 and "already complete" in again.stderr


def test_sequential_transfer_tiny(cli, tmp_path):
    """The shipped sequential pipeline, shrunk: a source stage runs and feeds the arms."""
    result = cli("run", "sequential-shapes", "source.data.args.per_class=20", "source.train.epochs=1",
                 "data.args.per_class=10", "train.epochs=1", "--output", str(tmp_path / "seq"))
    run = run_dir_of(result)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["source"] is not None and summary["source"]["epochs"] == 1
    assert (run / "arms" / "source" / "model.safetensors").is_file()
    ft_meta = json.loads((run / "arms" / "fine-tune" / "model.json").read_text())
    assert ft_meta["pretrained"] is True
