"""End-to-end benchmark: feature-extraction training naive vs cached, and the cached arm's
backbone in fp32 / bf16 / compiled, through the real CLI.

One pipeline (``benchmarks/pipelines/fe_bench.yaml``) is run once per arm as a user would,
``python -m tlengine run PIPELINE OVERRIDES --output DIR``, each arm in its own process (so
no arm inherits another's warm page cache, loaded weights or compiled kernels; inductor's
on-disk cache is the user's, so a compiled arm may load code an earlier run compiled: its
``compile_seconds`` tell). Every arm spells out its ``extraction`` settings, so the
comparison does not drift when the defaults (``auto``) change:

=====================  ====================================  =========================================
arm                    overrides                             what runs every epoch
=====================  ====================================  =========================================
naive                  ``strategy.cache.enabled=false``      frozen backbone forward (fp32) + head
                       + FP32
cached-torch           ``strategy.cache.kernels=torch``      head only, features from the cache
                       + FP32                                (pure-PyTorch ops, fp32 backbone)
cached-fused           ``strategy.cache.kernels=fused``      head only, cache built/read by fused ops
                       + FP32                                (fp32 backbone)
cached-fused-bf16      ``strategy.cache.kernels=fused``      as cached-fused; the cache is built by the
                       + BF16 + ``extraction.compile=off``   backbone in bf16 autocast, channels-last
cached-fused-compiled  ``strategy.cache.kernels=fused``      as cached-fused-bf16, the backbone
                       + BF16 + ``extraction.compile=on``    ``torch.compile``d
=====================  ====================================  =========================================

FP32 = ``extraction.precision=fp32 extraction.channels_last=off extraction.compile=off``
(the form every arm ran in before the execution plan existed); BF16 =
``extraction.precision=bf16 extraction.channels_last=on``.

``seconds`` is the arm's own time from ``metrics.json`` (``arms[<arm>].seconds``: for a
cached arm it includes building the cache); ``wall_seconds`` adds process start-up, model
and data preparation. ``accuracy`` is the test accuracy of the final model.
``extraction_precision`` / ``compiled`` / ``min_cosine_to_fp32`` / ``compile_seconds``
are what the run's execution plan reports for its frozen backbone (``metrics.json``:
``execution[<arm>]``, and ``cache[<arm>].precision``).

Targets (reported, not asserted): every cached arm >= ``TARGET_SPEEDUP_FP32`` x naive, the
bf16 and compiled arms >= ``TARGET_SPEEDUP`` x naive (issue #8: cached feature-extraction
training >= 25x the naive fp32 loop at 10 epochs), each with test accuracy within
``TARGET_ACCURACY_POINTS`` of naive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.machine import OtherLoad

PIPELINE = Path(__file__).resolve().parent / "pipelines" / "fe_bench.yaml"
REPO = Path(__file__).resolve().parents[1]

# on/off quoted: an override value is YAML, and YAML 1.1 reads a bare on/off as true/false
#: today's form, spelled out: fp32, NCHW, eager
FP32 = ["extraction.precision=fp32", "extraction.channels_last='off'", "extraction.compile='off'"]
#: the fast form on this machine class: bf16 autocast, channels-last
BF16 = ["extraction.precision=bf16", "extraction.channels_last='on'"]

ARMS: dict[str, list[str]] = {
    "naive": ["strategy.cache.enabled=false", *FP32],
    "cached-torch": ["strategy.cache.enabled=true", "strategy.cache.kernels=torch", *FP32],
    "cached-fused": ["strategy.cache.enabled=true", "strategy.cache.kernels=fused", *FP32],
    "cached-fused-bf16": [
        "strategy.cache.enabled=true",
        "strategy.cache.kernels=fused",
        *BF16,
        "extraction.compile='off'",
    ],
    "cached-fused-compiled": [
        "strategy.cache.enabled=true",
        "strategy.cache.kernels=fused",
        *BF16,
        "extraction.compile='on'",
    ],
}

#: quick mode (tests, CI): the same pipeline on a tiny dataset at 64 px
QUICK_OVERRIDES = [
    "data.args.per_class=6",
    "data.args.size=64",
    "model.input_size=64",
    "train.batch_size=16",
    "data.val_fraction=0.2",
    "data.test_fraction=0.3",
]

TARGET_SPEEDUP = 25.0  # issue #8: the bf16 / compiled cached arms vs the naive fp32 loop, 10 epochs
TARGET_SPEEDUP_FP32 = 5.0  # the fp32 cached arms (cached-torch, cached-fused) vs naive, 10 epochs
#: arms held to TARGET_SPEEDUP; the other cached arms to TARGET_SPEEDUP_FP32
FAST_ARMS = ("cached-fused-bf16", "cached-fused-compiled")
TARGET_ACCURACY_POINTS = 1.0


def _run_arm(
    arm: str,
    overrides: list[str],
    run_dir: Path,
    pipeline: Path,
    timeout: float,
    echo: Callable[[str], None] | None,
    threads: int | None = None,
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tlengine", "run", str(pipeline), *overrides, "--output", str(run_dir)]
    env = {
        **os.environ,
        "TLENGINE_OFFLINE": os.environ.get("TLENGINE_OFFLINE", "1"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if echo:
        echo(f"[{arm}] {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": round(time.perf_counter() - t0, 2)}
    wall = round(time.perf_counter() - t0, 2)
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.is_file():
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        causes = [ln for ln in lines if ln.startswith("warning: plugin")]  # a plugin that failed to load
        tail = list(dict.fromkeys(causes[:2] + lines[-3:]))
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-800:], "wall_seconds": wall}
    return {"metrics": json.loads(metrics_file.read_text(encoding="utf-8")), "wall_seconds": wall}


def _row(arm: str, outcome: dict[str, Any], epochs: int, run_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": "training",
        "arm": arm,
        "epochs": epochs,
        "seconds": None,
        "accuracy": None,
        "wall_seconds": outcome.get("wall_seconds"),
        "run_dir": str(run_dir),
    }
    if "error" in outcome:
        row["error"] = outcome["error"]
        return row
    m = outcome["metrics"]
    name = m.get("primary_arm") or next(iter(m.get("arms", {})), None)
    entry = (m.get("arms") or {}).get(name, {})
    metric = m.get("primary_metric", "accuracy")
    row.update(
        seconds=entry.get("seconds", (m.get("timings") or {}).get(f"{name}_seconds")),
        accuracy=(m.get("metrics") or {}).get(metric),
        epochs=entry.get("epochs", epochs),
        device=m.get("device"),
        timings=m.get("timings"),
        cache=m.get("cache"),
    )
    cache = m.get("cache") or {}
    if isinstance(cache, dict) and isinstance(cache.get(name), dict):  # metrics.json: cache per arm name
        cache = cache[name]
    row["cache"] = cache or None
    if arm != "naive" and not cache:
        row["note"] = "metrics.json has no cache section: this run did not use the feature cache"
    if isinstance(cache, dict) and "extraction_seconds" in cache:
        row["extraction_seconds"] = cache["extraction_seconds"]
    execution = m.get("execution") or {}
    if isinstance(execution, dict) and isinstance(execution.get(name), dict):  # execution per arm name
        execution = execution[name]
    row["execution"] = execution or None
    row.update(_execution_summary(execution, cache))
    return row


def _execution_summary(execution: Any, cache: Any, part_name: str = "backbone") -> dict[str, Any]:
    """The frozen part's form as the run reports it: precision, channels-last, compiled.

    part_name: the frozen part of the task's model (images: ``backbone``, texts: ``encoder``)."""
    parts = execution if isinstance(execution, dict) else {}
    part = parts.get(part_name)
    if not isinstance(part, dict):  # another task's model: its first part with a check or compile
        part = next(
            (p for p in parts.values() if isinstance(p, dict) and ("min_cosine_to_fp32" in p or p.get("compiled"))),
            None,
        )
    part = part or {}
    precision = cache.get("precision") if isinstance(cache, dict) else None
    return {
        "extraction_precision": precision or part.get("precision"),
        "channels_last": part.get("channels_last"),
        "compiled": part.get("compiled"),
        "compile_seconds": part.get("compile_seconds"),
        "min_cosine_to_fp32": part.get("min_cosine_to_fp32"),
        "fell_back_to_fp32": part.get("fell_back_to_fp32", False) if part else None,
    }


def _describe(row: dict[str, Any]) -> str:
    """One progress line's worth of an arm's row."""
    return (
        f"{row['seconds']} s, accuracy {row['accuracy']}, backbone "
        f"{row.get('extraction_precision')}{' compiled' if row.get('compiled') else ''}"
    )


def run_arms(
    arms: dict[str, list[str]],
    common: list[str],
    *,
    pipeline: Path,
    epochs: int,
    output_dir: str | Path | None = None,
    timeout: float = 1800,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
    make_row: Callable[[str, dict[str, Any], int, Path], dict[str, Any]] = _row,
    describe: Callable[[dict[str, Any]], str] = _describe,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``pipeline`` once per arm through the CLI (``common`` then the arm's overrides),
    each in its own process; returns (one row per arm, in order, built by ``make_row`` from
    the arm's metrics.json; :class:`OtherLoad` summary over all the arms).

    output_dir: where the run directories go (default: a temporary folder, removed
    afterwards, and the rows' ``run_dir`` set to None). threads: OMP_NUM_THREADS of the runs.
    """
    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlengine-bench-")
        root = Path(tmp.name)
    else:
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
    rows = []
    load = OtherLoad().__enter__()
    try:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for arm, overrides in arms.items():
            run_dir = root / f"{arm}-{stamp}"
            outcome = _run_arm(arm, [*common, *overrides], run_dir, pipeline, timeout, echo, threads)
            row = make_row(arm, outcome, epochs, run_dir)
            if tmp is not None:
                row["run_dir"] = None  # removed with the temporary folder
            rows.append(row)
            if echo:
                echo(f"[{arm}] " + (f"error: {row['error']}" if "error" in row else describe(row)))
    finally:
        load.__exit__(None, None, None)
        if tmp is not None:
            tmp.cleanup()
    return rows, load.summary()


def task_benchmark_header(
    kind: str, device: str, *, threads: int | None, quick: bool
) -> tuple[torch.device, dict[str, Any]]:
    """The device a task benchmark times on (``auto``: CUDA when present, else CPU) and the
    head of its result: kind, device, hardware, threads, torch version, quick."""
    from benchmarks.kernels import cpu_name

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    return dev, {
        "kind": kind,
        "device": str(dev),
        "hardware": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": quick,
    }


def train_then_time(
    name: str,
    result: dict[str, Any],
    *,
    output_dir: str | Path | None,
    train: Callable[[Path], tuple[list[dict[str, Any]], dict[str, Any]]],
    time_trained: Callable[[Path], tuple[list[dict[str, Any]], dict[str, Any]]] | None,
    timed: str,
    model: str,
) -> dict[str, Any]:
    """The shape of a task benchmark (detection, captioning): ``train(root)`` runs the training
    arms through ``tlengine run`` into ``root`` (a temporary folder, or ``output_dir/<name>``),
    then ``time_trained(run_dir)`` times the ``model`` of the last arm that finished, under
    ``result[timed]``. A temporary folder is removed afterwards and the training rows' run_dir
    set to None. Returns ``result`` with ``seconds``, the other-load summary and ``rows``."""
    tmp = tempfile.TemporaryDirectory(prefix=f"tlengine-bench-{name}-") if output_dir is None else None
    root = Path(tmp.name) if tmp is not None else Path(output_dir) / name  # apart from other benchmarks' arms
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        with OtherLoad() as load:
            train_rows, result["training"] = train(root)
            rows += train_rows
            trained = next((r for r in reversed(train_rows) if r.get("run_dir") and not r.get("error")), None)
            if time_trained is not None and trained is not None:
                timed_rows, result[timed] = time_trained(Path(trained["run_dir"]))
                rows += timed_rows
            elif time_trained is not None:
                result[timed] = {"skipped": f"no arm finished: no trained {model} to time"}
    finally:
        if tmp is not None:
            tmp.cleanup()
            for r in rows:
                if r.get("kind") == f"{name}-training":
                    r["run_dir"] = None  # removed with the temporary folder
    return {**result, "seconds": round(time.perf_counter() - started, 1), **load.summary(), "rows": rows}


def run_training_benchmark(
    *,
    epochs: int = 10,
    quick: bool = False,
    output_dir: str | Path | None = None,
    pipeline: str | Path | None = None,
    arms: list[str] | None = None,
    extra_overrides: list[str] | None = None,
    timeout: float = 1800,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the feature-extraction pipeline once per arm (default: every arm of :data:`ARMS`);
    one row per arm.

    output_dir: where the run directories go (default: a temporary folder, removed
    afterwards). quick: tiny dataset and 64 px images, for tests (pass epochs=2). threads:
    OMP_NUM_THREADS of the runs (default: torch's own choice, all cores).
    """
    pipeline = Path(pipeline) if pipeline else PIPELINE
    arms = list(arms or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; known: {list(ARMS)}")
    common = [f"train.epochs={epochs}", "baseline=null", "compare=[]"]
    if quick:
        common += QUICK_OVERRIDES
    common += list(extra_overrides or [])
    started = time.perf_counter()
    rows, load = run_arms(
        {arm: ARMS[arm] for arm in arms},
        common,
        pipeline=pipeline,
        epochs=epochs,
        output_dir=output_dir,
        timeout=timeout,
        threads=threads,
        echo=echo,
    )
    _compare(rows)
    device = next((r.get("device") for r in rows if r.get("device")), None)
    return {
        "kind": "training",
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": quick,
        "epochs": epochs,
        "pipeline": str(pipeline),
        "overrides": common,
        "seconds": round(time.perf_counter() - started, 1),
        **load,
        "targets": _targets(rows, epochs),
        "rows": rows,
    }


def _compare(rows: list[dict[str, Any]]) -> None:
    naive = next((r for r in rows if r["arm"] == "naive"), None)
    for r in rows:
        if naive and naive.get("seconds") and r.get("seconds"):
            r["speedup_vs_naive"] = round(naive["seconds"] / r["seconds"], 2)
        else:
            r["speedup_vs_naive"] = None
        if naive and naive.get("accuracy") is not None and r.get("accuracy") is not None:
            scale = 100.0 if max(abs(naive["accuracy"]), abs(r["accuracy"])) <= 1.0 else 1.0
            r["accuracy_delta_points"] = round(scale * (r["accuracy"] - naive["accuracy"]), 2)
        else:
            r["accuracy_delta_points"] = None


def speedup_target(arm: str) -> float:
    """The speed-up over naive an arm is held to (see the module docstring)."""
    return TARGET_SPEEDUP if arm in FAST_ARMS else TARGET_SPEEDUP_FP32


def _targets(rows: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Reported, not asserted: the bf16 / compiled cached arms >= 25x naive over 10 epochs, the
    fp32 cached arms >= 5x, each with accuracy within 1 point of naive."""
    out = {}
    for r in rows:
        if r["arm"] == "naive":
            continue
        s, d = r.get("speedup_vs_naive"), r.get("accuracy_delta_points")
        target = speedup_target(r["arm"])
        out[r["arm"]] = {
            "speedup_target": target,
            "speedup_met": (s >= target) if s is not None else None,
            "accuracy_points_target": TARGET_ACCURACY_POINTS,
            "accuracy_met": (abs(d) <= TARGET_ACCURACY_POINTS) if d is not None else None,
            "comparable": epochs == 10,
        }
    return out
