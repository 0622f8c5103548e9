"""benchmarks/: the kernel and training benchmarks return the documented schema.

Quick sizes only (tiny tensors, a tiny dataset, 2 epochs): these check that the harness
works end to end, not the numbers.
"""

from __future__ import annotations

import json
import math
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
TRAINING_KEYS = {"arm", "epochs", "seconds", "accuracy"}


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

    result = run_training_benchmark(epochs=2, quick=True, output_dir=tmp_path)
    assert {"device", "threads", "torch", "rows"} <= result.keys()
    rows = result["rows"]
    assert [r["arm"] for r in rows] == ["naive", "cached-torch", "cached-fused"]
    for r in rows:
        assert TRAINING_KEYS <= r.keys()
        assert "error" not in r, r["error"]
        assert r["epochs"] == 2
        assert _positive(r["seconds"])
        assert 0.0 <= r["accuracy"] <= 1.0
        assert (Path(r["run_dir"]) / "metrics.json").is_file()
    assert rows[0]["speedup_vs_naive"] == 1.0
    markdown = to_markdown(result)
    for arm in ("naive", "cached-torch", "cached-fused"):
        assert arm in markdown


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
