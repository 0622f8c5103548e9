"""benchmarks/asr.py: the ASR row of the benchmarks (Whisper tiny.en adaptation steps/s per
method, greedy transcription's real-time factor, speaker-ID training cached vs naive).

The quick run checks the harness end to end - rows, keys, positive ratios - never the numbers;
the markdown test checks the tables from made-up rows.
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

ADAPTATION_KEYS = {
    "method",
    "strategy",
    "batch",
    "trained_params",
    "total_params",
    "trained_share",
    "seconds_per_step",
    "steps_per_s",
    "utterances_per_s",
    "audio_seconds_per_s",
    "speedup_vs_full_fine_tune",
}
INFERENCE_KEYS = {
    "form",
    "batch",
    "utterances",
    "audio_seconds",
    "seconds",
    "rtf",
    "rtf_with_features",
    "utterances_per_s",
    "encoder_seconds",
    "encoder_share",
    "speedup_vs_batch_1",
    "same_as_batch_1",
    "wer",
}
SPEAKER_ID_KEYS = {
    "arm",
    "epochs",
    "seconds",
    "epochs_seconds",
    "accuracy",
    "speedup_vs_naive",
    "accuracy_delta_points",
}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_asr_benchmark_cli(tmp_path: Path) -> None:
    """`python -m benchmarks.run asr --quick --json`: every method's steps, both transcription
    batch sizes and (when the speaker-identification task is there) both speaker-ID arms."""
    from benchmarks.asr import METHODS, SPEAKER_ID_ARMS, markdown_section, speaker_id_available

    env = {**os.environ, "TLENGINE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "benchmarks.run", "asr", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"device", "hardware", "threads", "torch", "rows", "adaptation", "inference", "speaker_id"} <= result.keys()
    assert result["kind"] == "asr" and result["quick"] is True
    rows = result["rows"]
    adapt = [r for r in rows if r["kind"] == "asr-adaptation"]
    infer = [r for r in rows if r["kind"] == "asr-inference"]
    sid = [r for r in rows if r["kind"] == "asr-speaker-id"]
    assert len(adapt) + len(infer) + len(sid) == len(rows)

    assert [r["method"] for r in adapt] == list(METHODS)
    for r in adapt:
        assert "error" not in r, r["error"]
        assert ADAPTATION_KEYS <= r.keys(), ADAPTATION_KEYS - r.keys()
        assert _positive(r["steps_per_s"]) and _positive(r["speedup_vs_full_fine_tune"])
        assert 0 < r["trained_params"] <= r["total_params"]
    by_method = {r["method"]: r for r in adapt}
    assert by_method["lhuc"]["trained_params"] == 8 * 384  # one scale per unit of Whisper tiny's 8 layers
    assert (
        by_method["lhuc"]["trained_params"]
        < by_method["adapter"]["trained_params"]
        < by_method["fine-tune"]["trained_params"]
        < by_method["full-fine-tune"]["trained_params"]
    )
    assert by_method["full-fine-tune"]["speedup_vs_full_fine_tune"] == 1.0

    assert [r["batch"] for r in infer] == [1, 2]
    for r in infer:
        assert INFERENCE_KEYS <= r.keys(), INFERENCE_KEYS - r.keys()
        assert _positive(r["rtf"]) and _positive(r["speedup_vs_batch_1"]) and _positive(r["audio_seconds"])
        assert r["rtf_with_features"] >= r["rtf"] and 0 < r["encoder_share"] <= 1
        assert 0 <= r["same_as_batch_1"] <= 1 and r["wer"] >= 0
    assert infer[0]["speedup_vs_batch_1"] == 1.0 and infer[0]["same_as_batch_1"] == 1.0

    if speaker_id_available() is None:
        assert [r["arm"] for r in sid] == list(SPEAKER_ID_ARMS)
        for r in sid:
            assert "error" not in r, r["error"]
            assert SPEAKER_ID_KEYS <= r.keys(), SPEAKER_ID_KEYS - r.keys()
            assert _positive(r["seconds"]) and _positive(r["speedup_vs_naive"]) and 0 <= r["accuracy"] <= 1
            assert r["run_dir"] is None  # a temporary folder
        naive, cached = sid
        assert naive["cache"] is None and cached["cache"]
    else:
        assert not sid and result["speaker_id"]["skipped"]

    saved = json.loads((tmp_path / "asr.json").read_text())
    assert saved["rows"] == rows
    markdown = "\n".join(markdown_section(result, rows))
    assert (tmp_path / "asr.md").read_text().rstrip().endswith(markdown.rstrip())
    assert "## ASR adaptation" in markdown and "## ASR transcription" in markdown
    for name in list(METHODS) + ["batch-1", "batch-2"] + [r["arm"] for r in sid]:
        assert f"| {name} |" in markdown


def test_asr_markdown_from_rows() -> None:
    from benchmarks.asr import to_markdown

    rows = [
        {
            "kind": "asr-adaptation",
            "method": "lhuc",
            "trained_params": 3072,
            "trained_share": 0.0000813,
            "seconds_per_step": 2.0,
            "steps_per_s": 0.5,
            "utterances_per_s": 2.0,
            "audio_seconds_per_s": 4.0,
            "speedup_vs_full_fine_tune": 2.5,
        },
        {"kind": "asr-adaptation", "method": "adapter", "error": "RuntimeError: boom"},
        {
            "kind": "asr-inference",
            "form": "batch-1",
            "seconds": 3.0,
            "rtf": 0.25,
            "rtf_with_features": 0.3,
            "utterances_per_s": 2.0,
            "encoder_share": 0.4,
            "speedup_vs_batch_1": 1.0,
            "same_as_batch_1": 1.0,
            "wer": 0.1,
        },
        {"kind": "asr-speaker-id", "arm": "naive", "epochs": 6, "seconds": 40.0, "speedup_vs_naive": 1.0},
        {"kind": "asr-speaker-id", "arm": "cached", "epochs": 6, "seconds": 10.0, "speedup_vs_naive": 4.0},
    ]
    result = {"kind": "asr", "device": "cpu", "threads": 2, "torch": "x", "rows": rows, "speaker_id": {}}
    markdown = to_markdown(result)
    assert markdown.startswith("# tlengine benchmarks")
    assert "| lhuc | 3,072 | 0.00813% | 2.00 | 0.5 | 2.00 | 4.00 | 2.50x |" in markdown
    assert "| adapter | error |" in markdown and "`adapter`: RuntimeError: boom" in markdown
    assert "| batch-1 | 3.00 | 0.25 | 0.3 | 2.00 | 40% | 1.00x | 1.00 | 0.1 |" in markdown
    assert "| cached | 6 | 10.0 |" in markdown and "4.00x" in markdown
    assert "## Training:" not in markdown  # the speaker-ID arms are not report.py's image training rows
    skipped = to_markdown({**result, "rows": rows[:1], "speaker_id": {"skipped": "no task"}})
    assert "## Speaker-ID" not in skipped and "speaker-ID: no task" in skipped


def test_asr_is_a_bench_choice() -> None:
    """`asr` reaches benchmarks.run and `tlengine bench` (argument parsing only)."""
    from tlengine.cli import bench

    from benchmarks.run import _parser

    assert _parser().parse_args(["asr", "--quick"]).what == "asr"
    choices = next(p for p in bench.params if p.name == "what").type.choices
    assert "asr" in choices and "all" in choices
