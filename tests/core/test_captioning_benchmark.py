"""benchmarks/captioning.py: the captioning row of the benchmarks (naive vs cached frozen-encoder
captioning training through `tlengine run`, and the trained captioner's captions/s, greedy vs beam).

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
    "bleu_4",
    "bleu_1",
    "cider",
    "bleu_4_delta_points",
    "cider_delta_points",
    "bleu_4_met",
    "speedup_vs_naive",
    "extraction_precision",
}
DECODING_KEYS = {
    "form",
    "num_beams",
    "images",
    "batch",
    "seconds",
    "captions_per_s",
    "ms_per_caption",
    "end_to_end_captions_per_s",
    "words_per_caption",
    "bleu_4",
    "cider",
    "same_as_greedy",
    "speedup_vs_greedy",
}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _weights_missing() -> str | None:
    from tlengine_plugins.text_classification.encoders import locate_minilm_l6

    return None if locate_minilm_l6() is not None else "the minilm-l6 weights are not installed"


@pytest.mark.slow
def test_quick_captioning_benchmark_cli(tmp_path: Path) -> None:
    """`python -m benchmarks.run captioning --quick --json`: naive and cached arms through
    `tlengine run` on the same data, then greedy and beam decoding of the trained captioner."""
    from benchmarks.captioning import ARMS, FORMS, markdown_section

    if _weights_missing():
        pytest.skip(_weights_missing())
    env = {**os.environ, "TLENGINE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "benchmarks.run", "captioning", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"device", "hardware", "threads", "torch", "rows", "training", "decoding"} <= result.keys()
    assert result["kind"] == "captioning" and result["quick"] is True
    training = [r for r in result["rows"] if r["kind"] == "captioning-training"]
    decoding = [r for r in result["rows"] if r["kind"] == "captioning-decoding"]
    assert len(training) + len(decoding) == len(result["rows"])
    assert [r["arm"] for r in training] == list(ARMS)
    for r in training:
        assert "error" not in r, r["error"]
        assert TRAINING_KEYS <= r.keys(), TRAINING_KEYS - r.keys()
        assert r["epochs"] == 1 and _positive(r["seconds"]) and _positive(r["train_images_per_s"])
        assert r["train_images"] == 8 and 0.0 <= r["bleu_4"] <= 1.0 and r["cider"] >= 0.0
        assert r["extraction_precision"] == "fp32" and r["run_dir"] is None  # a temporary folder
    naive, cached = training
    assert naive["speedup_vs_naive"] == 1.0 and naive["bleu_4_delta_points"] == 0.0 and naive["bleu_4_met"] is None
    assert naive["cache"] is None and cached["cache"] and _positive(cached["extraction_seconds"])
    assert cached["cache"]["views"] == 1 and isinstance(cached["bleu_4_met"], bool)
    assert [(r["form"], r["num_beams"]) for r in decoding] == FORMS
    for r in decoding:
        assert "error" not in r, r["error"]
        assert DECODING_KEYS <= r.keys(), DECODING_KEYS - r.keys()
        assert _positive(r["captions_per_s"]) and r["images"] == result["decoding"]["images"]
        assert r["end_to_end_captions_per_s"] <= r["captions_per_s"]
        assert 0.0 <= r["bleu_4"] <= 1.0 and 0.0 <= r["same_as_greedy"] <= 1.0
    assert decoding[0]["speedup_vs_greedy"] == 1.0 and decoding[0]["same_as_greedy"] == 1.0
    assert _positive(result["decoding"]["encode_images_per_s"])
    saved = json.loads((tmp_path / "captioning.json").read_text())
    assert saved["rows"] == result["rows"] and (tmp_path / "captioning.md").is_file()
    markdown = "\n".join(markdown_section(result, result["rows"]))
    assert "## Captioning training" in markdown and "## Captioning decoding" in markdown
    for name in list(ARMS) + [name for name, _ in FORMS]:
        assert f"| {name} |" in markdown


def _fake_run(run_dir: Path, *, cached: bool, seconds: float, bleu_4: float) -> dict:
    """A finished captioning run's files, as `tlengine run` writes them; returns the outcome."""
    run_dir.mkdir(parents=True)
    arm = "feature-extraction"
    cache = {arm: {"extraction_seconds": 4.0, "views": 1, "head_training_seconds": 6.0}} if cached else None
    metrics = {
        "primary_arm": arm,
        "primary_metric": "cider",
        "metrics": {"bleu_1": 0.6, "bleu_4": bleu_4, "cider": 2 * bleu_4},
        "arms": {arm: {"seconds": seconds, "epochs": 2}},
        "cache": cache,
        "execution": {arm: {"encoder": {"precision": "fp32", "channels_last": False, "compiled": False}}},
        "device": "cpu",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    epoch = (seconds - 4.0) / 2 if cached else seconds / 2
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": epoch}) + "\n" for e in (1, 2)))
    (run_dir / "checkpoint.json").write_text(json.dumps({"info": {"images": {"train": 30, "val": 0, "test": 10}}}))
    return {"metrics": metrics, "wall_seconds": seconds + 5}


def test_captioning_rows_compare_and_markdown(tmp_path: Path) -> None:
    from benchmarks.captioning import _captioning_row, _compare, markdown_section

    rows = [
        _captioning_row("naive", _fake_run(tmp_path / "n", cached=False, seconds=40.0, bleu_4=0.3), 2, tmp_path / "n"),
        _captioning_row(
            "cached", _fake_run(tmp_path / "c", cached=True, seconds=10.0, bleu_4=0.305), 2, tmp_path / "c"
        ),
    ]
    _compare(rows)
    naive, cached = rows
    assert naive["bleu_4"] == 0.3 and naive["cider"] == 0.6 and naive["bleu_1"] == 0.6
    assert naive["train_images"] == 30 and naive["epochs_seconds"] == 40.0 and naive["train_images_per_s"] == 1.5
    assert naive["speedup_vs_naive"] == 1.0 and naive["bleu_4_met"] is None
    assert naive["extraction_precision"] == "fp32"  # the encoder's form, not another part's
    assert cached["speedup_vs_naive"] == 4.0 and cached["bleu_4_delta_points"] == 0.5 and cached["bleu_4_met"] is True
    assert cached["cider_delta_points"] == 1.0
    assert cached["train_images_per_s"] == 6.0 and cached["epoch_images_per_s"] == 10.0
    assert cached["extraction_seconds"] == 4.0 and cached["head_training_seconds"] == 6.0
    assert "accuracy" not in cached and "note" not in cached
    failed = _captioning_row("cached", {"error": "exit 1: boom", "wall_seconds": 1.0}, 2, tmp_path / "x")
    assert failed["error"] == "exit 1: boom" and failed["bleu_4"] is None
    _compare([naive, failed])
    assert failed["speedup_vs_naive"] is None and failed["bleu_4_met"] is None
    far = dict(cached, bleu_4=0.35)
    _compare([naive, far])
    assert far["bleu_4_delta_points"] == 5.0 and far["bleu_4_met"] is False
    decoding = [
        {"kind": "captioning-decoding", "form": "greedy", "num_beams": 1, "captions_per_s": 8.0, "bleu_4": 0.3},
        {"kind": "captioning-decoding", "form": "beam-3", "num_beams": 3, "error": "RuntimeError: boom"},
    ]
    result = {"kind": "captioning", "rows": rows + decoding, "training": {"bleu_4_points_target": 1.0}}
    markdown = "\n".join(markdown_section(result, result["rows"]))
    assert "## Captioning training" in markdown and "## Captioning decoding" in markdown
    assert "| cached | fp32 | 2 | 30 | 10.0 |" in markdown and "4.00x" in markdown
    assert "BLEU-4 within 1 point of naive: met" in markdown
    assert "| greedy | 1 |" in markdown and "| beam-3 | 3 | error |" in markdown
    assert "`beam-3`: RuntimeError: boom" in markdown


def test_captioning_is_a_bench_choice() -> None:
    """`captioning` reaches benchmarks.run and `tlengine bench` (argument parsing only)."""
    from tlengine.cli import bench

    from benchmarks.run import _parser

    assert _parser().parse_args(["captioning", "--quick"]).what == "captioning"
    choices = next(p for p in bench.params if p.name == "what").type.choices
    assert "captioning" in choices and "all" in choices
