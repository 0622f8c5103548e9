"""``tlengine bench scaling``: extraction images/s and training samples/s on 1 and 2 processes.

``pipelines/scaling_bench.yaml`` is run through the real CLI three times, each in a fresh
process tree with a fresh disk cache:

==============  =====================================  ==========================
config          command                                cores used
==============  =====================================  ==========================
1 proc x 1      ``tlengine run``, OMP_NUM_THREADS=1    1: the per-process figure
1 proc x T      ``tlengine run``, OMP_NUM_THREADS=T    T = all cores
2 procs x T/2   ``tlengine run --nproc 2`` (torchrun,  T
                gloo), OMP_NUM_THREADS=T/2 each
==============  =====================================  ==========================

Per config: **extraction images/s** = rows the feature-extraction arm's cache holds /
its ``extraction_seconds`` (the wall time of the sharded extraction on rank 0, the row
exchange included); **training samples/s** = training images x epochs / the fine-tune
arm's epoch seconds (no validation split, so an epoch is training only: the sharded
batches, forward and backward, DDP's gradient all-reduce, the optimizer step).

**Projection for N processes (GPUs)**, from the measured figures. Data parallel with a
global batch B: each process computes B/N samples, then the ring all-reduce moves
2(N-1)/N x G bytes per process, G = 4 bytes x trainable parameters (fp32 gradients)::

    t_step(N) = B / (N x s1)  +  2 (N-1)/N x G / bw        samples/s(N) = B / t_step(N)

s1 = one process's training samples/s (here the 1 proc x 1 row; on a cluster, one GPU's),
bw = the all-reduce bandwidth. At N = 2 the measured step time gives the effective bw of
this machine's gloo (t_comm = t_step(2) - t_step(1)/2, bw = G / t_comm); the projection rows
use it, and on GPUs one puts in the link's (NVLink ~ 300 GB/s, PCIe 4 x16 ~ 25 GB/s, 100
Gb/s InfiniBand ~ 12 GB/s). Extraction needs no all-reduce: images/s(N) ~ N x e1, less the
one-off exchange of the cached rows. Where two or more GPUs are present the same command
measures 1 and 2 GPUs (one per process) instead; ``--device cpu`` keeps it on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from benchmarks.machine import OtherLoad

PIPELINE = Path(__file__).resolve().parent / "pipelines" / "scaling_bench.yaml"
REPO = Path(__file__).resolve().parents[1]
QUICK_OVERRIDES = ["data.args.per_class=8", "data.args.size=64", "model.input_size=64", "train.batch_size=16"]
PROJECT_N = (1, 2, 4, 8)


def _configs(cores: int) -> list[tuple[str, int, int]]:
    """(label, processes, threads per process)."""
    half = max(1, cores // 2)
    return [("1 proc x 1 thread", 1, 1), (f"1 proc x {cores} threads", 1, cores), (f"2 procs x {half}", 2, half)]


def _run(
    processes: int, threads: int, run_dir: Path, cache: Path, overrides: list[str], device: str, timeout: float
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tlengine", "run"] + (["--nproc", str(processes)] if processes > 1 else [])
    cmd += [str(PIPELINE), *overrides, f"strategy.cache.root={cache}", f"device={device}", "--output", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.setdefault("TLENGINE_OFFLINE", "1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail[-600:]}", "wall_seconds": round(wall, 2)}
    arms = run_dir / "arms" / "main"
    fe = json.loads((arms / "feature-extraction" / "seed0" / "result.json").read_text())
    ft = json.loads((arms / "fine-tune" / "seed0" / "result.json").read_text())
    splits = fe["cache"]["splits"]
    train_images, epochs = splits["train"]["rows"], len(ft["history"])
    epoch_seconds = sum(r["seconds"] for r in ft["history"])
    return {
        "extraction_images_per_s": sum(s["rows"] for s in splits.values())
        / max(fe["cache"]["extraction_seconds"], 1e-9),
        "extraction_seconds": fe["cache"]["extraction_seconds"],
        "rows_extracted_by_rank": fe["cache"].get("rows_extracted_by_rank"),
        "training_samples_per_s": train_images * epochs / max(epoch_seconds, 1e-9),
        "training_seconds": round(epoch_seconds, 3),
        "train_images": train_images,
        "epochs": epochs,
        "batch_size": int(yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["batch_size"]),
        "fine_tune_accuracy": ft["test"]["metrics"].get("accuracy"),
        "trainable_parameters": _trainable_parameters(arms / "fine-tune" / "seed0" / "model.safetensors"),
        "wall_seconds": round(wall, 2),
    }


def _trainable_parameters(model_file: Path) -> int:
    """Parameters the fine-tune arm trained (all of them: backbone_lr_mult 1), from its saved
    model: every tensor but BatchNorm's running statistics."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_file), "pt") as f:
        for name in f.keys():
            if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                shape = f.get_slice(name).get_shape()
                total += math.prod(int(d) for d in shape)
    return total


def projection(step1: float, step2: float, batch: int, grad_bytes: int) -> dict[str, Any]:
    """The formula of the module docstring with this machine's figures: ``step1`` / ``step2``
    are the measured seconds per step of one process and of two; the effective all-reduce
    bandwidth comes from the second, then samples/s for each N in PROJECT_N."""
    comm2 = max(step2 - step1 / 2, 1e-9)
    bw = grad_bytes / comm2  # the ring all-reduce at N=2 moves 2(N-1)/N x G = G per process
    rows = []
    for n in PROJECT_N:
        t = step1 / n + 2 * (n - 1) / n * grad_bytes / bw
        rows.append({"processes": n, "samples_per_s": batch / t, "efficiency": step1 / (n * t)})
    return {"bandwidth_bytes_per_s": bw, "comm_seconds_per_step_at_2": comm2, "rows": rows}


def run_scaling_benchmark(
    *,
    quick: bool = False,
    epochs: int | None = None,
    output_dir: Path | None = None,
    device: str = "auto",
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import torch

    cores = os.cpu_count() or 1
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.device_count() >= 2)
    overrides = list(QUICK_OVERRIDES) if quick else []
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    per_gpu = max(1, cores // 2)
    configs = _configs(cores) if not use_cuda else [("1 GPU", 1, per_gpu), ("2 GPUs", 2, per_gpu)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlengine-scaling-") as tmp, OtherLoad() as load:
        base = Path(output_dir) if output_dir else Path(tmp)
        for i, (label, processes, threads) in enumerate(configs):
            if echo:
                echo(f"[scaling] {label}: {processes} process(es) x {threads} thread(s)")
            outcome = _run(
                processes,
                threads,
                base / f"run-{i}",
                Path(tmp) / f"cache-{i}",
                overrides,
                "cuda" if use_cuda else "cpu",
                timeout=3600,
            )
            cores_used = processes if use_cuda else processes * threads
            rows.append(
                {
                    "kind": "scaling",
                    "config": label,
                    "processes": processes,
                    "threads_per_process": threads,
                    "cores_used": cores_used,
                    **outcome,
                }
            )
    ok = [r for r in rows if "error" not in r]
    result: dict[str, Any] = {
        "kind": "scaling",
        "device": "cuda" if use_cuda else "cpu",
        "cores": cores,
        "torch": torch.__version__,
        "quick": quick,
        "batch_size": ok[0]["batch_size"] if ok else None,  # the runs' own train.batch_size
        "other_load": load.summary(),
        "rows": rows,
    }
    single = next((r for r in ok if r["processes"] == 1), None)  # the first: 1 thread (CPU) or 1 GPU
    two = next((r for r in ok if r["processes"] == 2), None)
    if single and two:
        batch = result["batch_size"]
        for r in ok:
            r["training_speedup"] = r["training_samples_per_s"] / single["training_samples_per_s"]
            r["extraction_speedup"] = r["extraction_images_per_s"] / single["extraction_images_per_s"]
        step1, step2 = (
            r["training_seconds"] / (math.ceil(r["train_images"] / batch) * r["epochs"]) for r in (single, two)
        )
        grad_bytes = 4 * int(two["trainable_parameters"])
        result["projection"] = {
            "gradient_bytes": grad_bytes,
            "step_seconds_1": step1,
            "step_seconds_2": step2,
            **projection(step1, step2, batch, grad_bytes),
        }
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### Scaling ({result['device']}, {result['cores']} cores, torch {result['torch']}, "
        f"global batch {result['batch_size']})",
        "",
        "| config | processes | threads / process | cores used | extraction images/s | x | "
        "training samples/s | x | fine-tune accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['processes']} | {r['threads_per_process']} | | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['config']} | {r['processes']} | {r['threads_per_process']} | {r['cores_used']} | "
            f"{r['extraction_images_per_s']:.1f} | {r.get('extraction_speedup', float('nan')):.2f} | "
            f"{r['training_samples_per_s']:.1f} | {r.get('training_speedup', float('nan')):.2f} | "
            f"{100 * (r['fine_tune_accuracy'] or 0):.1f} |"
        )
    p = result.get("projection")
    if p:
        lines += [
            "",
            f"All-reduce volume per step: G = {p['gradient_bytes'] / 1e6:.1f} MB of fp32 gradients; effective "
            f"bandwidth measured at 2 processes: {p['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s "
            f"({1000 * p['comm_seconds_per_step_at_2']:.0f} ms per step).",
            f"Projection, `t_step(N) = t1/N + 2(N-1)/N G/bw` with t1 = {1000 * p['step_seconds_1']:.0f} ms, "
            f"one process's measured step (B/s1), and samples/s(N) = B/t_step(N):",
            "",
            "| processes | projected samples/s | efficiency |",
            "| ---: | ---: | ---: |",
        ]
        lines += [f"| {r['processes']} | {r['samples_per_s']:.1f} | {100 * r['efficiency']:.0f} % |" for r in p["rows"]]
    other = result.get("other_load") or {}
    if other.get("busy_warning"):
        lines += ["", f"Warning: {other['busy_warning']}."]
    return "\n".join(lines) + "\n"
