"""benchmarks/detection.py: the detection row of the benchmarks (naive vs cached frozen-backbone
detection training through `tlengine run`, and the trained detector's inference images/s).

The quick run checks the harness end to end, not the numbers; the row test checks how a run's
metrics.json / metrics.jsonl / checkpoint.json become a row, the comparison and the tables.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

TRAINING_KEYS = {
    "arm",
    "epochs",
    "seconds",
    "epochs_seconds",
    "train_images",
    "train_images_per_s",
    "epoch_images_per_s",
    "map_50",
    "map",
    "map_50_delta_points",
    "speedup_vs_naive",
    "extraction_precision",
}
INFERENCE_KEYS = {
    "form",
    "precision",
    "channels_last",
    "images",
    "batch",
    "seconds",
    "images_per_s",
    "ms_per_image",
    "dtype",
    "min_cosine_to_fp32",
    "speedup_vs_eager_fp32",
    "top1_agreement",
}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_detection_benchmark_cli(tmp_path: Path) -> None:
    """`python -m benchmarks.run detection --quick --json`: naive and cached arms through
    `tlengine run` on the same data, then the three inference forms of the trained detector."""
    from benchmarks.detection import ARMS, FORMS
    from benchmarks.report import to_markdown

    env = {**os.environ, "TLENGINE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "benchmarks.run", "detection", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"device", "hardware", "threads", "torch", "rows", "training", "inference"} <= result.keys()
    assert result["kind"] == "detection" and result["quick"] is True
    training = [r for r in result["rows"] if r["kind"] == "detection-training"]
    inference = [r for r in result["rows"] if r["kind"] == "detection-inference"]
    assert len(training) + len(inference) == len(result["rows"])
    assert [r["arm"] for r in training] == list(ARMS)
    for r in training:
        assert "error" not in r, r["error"]
        assert TRAINING_KEYS <= r.keys(), TRAINING_KEYS - r.keys()
        assert r["epochs"] == 1 and _positive(r["seconds"]) and _positive(r["train_images_per_s"])
        assert r["train_images"] == 8 and 0.0 <= r["map_50"] <= 1.0
        assert r["extraction_precision"] == "fp32" and r["run_dir"] is None  # a temporary folder
    naive, cached = training
    assert naive["speedup_vs_naive"] == 1.0 and naive["map_50_delta_points"] == 0.0
    assert naive["cache"] is None and cached["cache"] and _positive(cached["extraction_seconds"])
    assert cached["cache"]["views"] == 1
    assert [r["form"] for r in inference] == [name for name, *_ in FORMS]
    for r in inference:
        assert "error" not in r, r["error"]
        assert INFERENCE_KEYS <= r.keys(), INFERENCE_KEYS - r.keys()
        assert _positive(r["images_per_s"]) and r["images"] == result["inference"]["images"]
        assert 0.0 <= r["top1_agreement"] <= 1.0
    eager, _, bf16 = inference
    assert eager["speedup_vs_eager_fp32"] == 1.0 and eager["dtype"] == "fp32"
    assert bf16["dtype"] == ("fp32" if bf16["fell_back_to_fp32"] else "bf16") and 0.0 < bf16["min_cosine_to_fp32"]
    markdown = to_markdown(result)
    assert "## Detection training" in markdown and "## Detection inference" in markdown
    for name in list(ARMS) + [name for name, *_ in FORMS]:
        assert f"| {name} |" in markdown
    assert json.loads((tmp_path / "detection.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "detection.md").read_text() == markdown


def _fake_run(run_dir: Path, *, cached: bool, seconds: float, map_50: float) -> dict:
    """A finished detection run's files, as `tlengine run` writes them; returns the outcome."""
    run_dir.mkdir(parents=True)
    arm = "feature-extraction"
    cache = {arm: {"extraction_seconds": 4.0, "views": 1, "head_training_seconds": 6.0}} if cached else None
    metrics = {
        "primary_arm": arm,
        "primary_metric": "map_50",
        "metrics": {"map_50": map_50, "map": map_50 / 2, "map_75": 0.1},
        "arms": {arm: {"seconds": seconds, "epochs": 2}},
        "cache": cache,
        "execution": {arm: {"backbone": {"precision": "fp32", "channels_last": False, "compiled": False}}},
        "device": "cpu",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    epoch = (seconds - 4.0) / 2 if cached else seconds / 2
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": epoch}) + "\n" for e in (1, 2)))
    (run_dir / "checkpoint.json").write_text(json.dumps({"info": {"images": {"train": 30, "val": 5, "test": 10}}}))
    return {"metrics": metrics, "wall_seconds": seconds + 5}


def test_detection_rows_compare_and_markdown(tmp_path: Path) -> None:
    from benchmarks.detection import _compare, _detection_row
    from benchmarks.report import to_markdown

    rows = [
        _detection_row("naive", _fake_run(tmp_path / "n", cached=False, seconds=40.0, map_50=0.5), 2, tmp_path / "n"),
        _detection_row("cached", _fake_run(tmp_path / "c", cached=True, seconds=10.0, map_50=0.505), 2, tmp_path / "c"),
    ]
    _compare(rows)
    naive, cached = rows
    assert naive["map_50"] == 0.5 and naive["train_images"] == 30 and naive["epochs_seconds"] == 40.0
    assert naive["train_images_per_s"] == 1.5 and naive["speedup_vs_naive"] == 1.0 and naive["map_met"] is None
    assert cached["speedup_vs_naive"] == 4.0 and cached["map_50_delta_points"] == 0.5 and cached["map_met"] is True
    assert cached["train_images_per_s"] == 6.0 and cached["epoch_images_per_s"] == 10.0
    assert cached["extraction_seconds"] == 4.0 and cached["head_training_seconds"] == 6.0
    assert "accuracy" not in cached and "note" not in cached
    failed = _detection_row("cached", {"error": "exit 1: boom", "wall_seconds": 1.0}, 2, tmp_path / "x")
    assert failed["error"] == "exit 1: boom" and failed["map_50"] is None
    result = {"kind": "detection", "device": "cpu", "threads": 2, "torch": "x", "rows": rows, "training": {}}
    markdown = to_markdown(result)
    assert "## Detection training" in markdown and "## Training:" not in markdown  # not read as image rows
    assert "| cached | fp32 | 2 | 30 | 10.0 |" in markdown and "4.00x" in markdown
