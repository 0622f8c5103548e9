"""Frozen-backbone throughput: the same backbone in each form the execution plan offers.

Every form is built through the product path: the backbone as the image plugin builds it
(``build_backbone``, random weights, head removed; nothing is downloaded), wrapped in a
:class:`tlengine.model.TransferModel` with ``frozen_parts = {"backbone"}``, given an
execution plan by :func:`tlengine.execution.configure_execution` with the form's
``ExtractionConfig``, and called as ``model.forward_features(x)`` under ``torch.no_grad()``
(so the plan runs it in inference mode):

=====================  =========  =============  =======  ===========================================
form                   precision  channels_last  compile  what runs
=====================  =========  =============  =======  ===========================================
eager-fp32             fp32       off            off      plain eager fp32, NCHW (the reference)
channels-last-fp32     fp32       on             off      eager fp32, channels-last
channels-last-bf16     bf16       on             off      eager, bf16 autocast, channels-last
compiled-fp32          fp32       on             on       ``torch.compile`` fp32, channels-last
compiled-bf16          bf16       on             on       ``torch.compile`` + bf16, channels-last
=====================  =========  =============  =======  ===========================================

Each form gets its own deep copy of one randomly initialised backbone (same weights) and
the same fixed input batch. Per row: the median time of ``batches`` timed calls after
``warmup`` untimed ones (and after the plan's first call, which checks the reduced
precision against fp32, and the compiling call of compiled forms), as ms per image and
images/s; the ratio to ``eager-fp32`` of the same model; the lowest per-sample cosine
similarity of the form's features to the ``eager-fp32`` features
(:func:`tlengine.execution.min_cosine`); ``dtype``, the precision the plan actually
kept (a bf16 form whose first batch is not within ``extraction.tolerance`` of fp32 falls
back to fp32, and the row says so).

Compiled forms: ``compile_seconds`` is the plan's own measure of the first compiled call
(``Execution.stats()``); inductor's cache is the user's (``$TLENGINE_CACHE_DIR/inductor``
unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so a second run loads the compiled code:
``compile_cache`` says ``cold`` (inductor compiled every graph), ``warm`` (every graph
came from its cache) or ``partial``, from inductor's FX-graph cache counters.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.machine import OtherLoad


@dataclass(frozen=True)
class Form:
    name: str
    precision: str  # extraction.precision
    channels_last: str  # extraction.channels_last
    compile: str  # extraction.compile


FORMS: list[Form] = [
    Form("eager-fp32", "fp32", "off", "off"),
    Form("channels-last-fp32", "fp32", "on", "off"),
    Form("channels-last-bf16", "bf16", "on", "off"),
    Form("compiled-fp32", "fp32", "on", "on"),
    Form("compiled-bf16", "bf16", "on", "on"),
]
REFERENCE_FORM = FORMS[0].name

#: (label, backbone name as a pipeline's ``model.backbone`` spells it)
MODELS: list[tuple[str, str]] = [
    ("EfficientNet-Lite0", "timm/tf_efficientnet_lite0"),
    ("ResNet-50", "resnet50"),
    ("ViT-B/16", "vit_b_16"),
]
#: quick mode (tests, CI): the image plugin's tiny CNN at 64 px
QUICK_MODELS: list[tuple[str, str]] = [("tiny-cnn", "tiny-cnn")]

DEFAULTS = {"batch": 32, "input_size": 224, "warmup": 2, "batches": 5}
QUICK_DEFAULTS = {"batch": 8, "input_size": 64, "warmup": 1, "batches": 3}


def build_backbone(name: str, seed: int = 0) -> Any:
    """The head-less backbone ``name`` with random weights, as the image plugin builds it."""
    from tlengine_plugins.image_classification.backbones import build_backbone as plugin_build

    torch.manual_seed(seed)
    return plugin_build(name, weights=None, weights_registry=None, base_dir=Path("."))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fx_cache_counters() -> tuple[int, int]:
    """(hits, misses) of inductor's FX-graph cache so far in this process."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - very old torch
        return 0, 0
    c = counters["inductor"]
    return int(c.get("fxgraph_cache_hit", 0)), int(c.get("fxgraph_cache_miss", 0))


def _cache_state(hits: int, misses: int) -> str | None:
    if misses and hits:
        return "partial"
    if misses:
        return "cold"
    if hits:
        return "warm"
    return None  # no graph went through inductor's cache (cache off, or nothing compiled)


def run_form(
    backbone: Any,
    form: Form,
    x: torch.Tensor,
    *,
    device: torch.device,
    warmup: int,
    batches: int,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Time ``form`` of (a deep copy of) ``backbone`` on ``x``; returns (row fields, features)."""
    from tlengine.config import ExtractionConfig
    from tlengine.execution import configure_execution
    from tlengine.model import TransferModel

    bb = copy.deepcopy(backbone)  # blocks keep pointing into the copy (deepcopy's memo)
    bb.module.to(device).eval()
    model = TransferModel(bb)
    model.frozen_parts = {"backbone"}
    model.eval()
    config = ExtractionConfig(precision=form.precision, channels_last=form.channels_last, compile=form.compile)
    notes: list[str] = []
    execution = configure_execution(model, config, device=device, echo=notes.append)
    if form.compile != "off":
        torch._dynamo.reset()  # each compiled form compiles as in a fresh process
    hits0, misses0 = _fx_cache_counters()
    out: dict[str, Any] = {}
    with torch.no_grad():
        t0 = time.perf_counter()
        model.forward_features(x)  # the plan's first call: fp32 (and the reduced dtype, checked)
        _sync(device)
        out["first_call_seconds"] = round(time.perf_counter() - t0, 3)
        if form.compile != "off":
            t0 = time.perf_counter()
            model.forward_features(x)  # compiles
            _sync(device)
            out["compile_call_seconds"] = round(time.perf_counter() - t0, 3)
        features = None
        for _ in range(max(warmup, 1)):
            features = model.forward_features(x)
        _sync(device)
        times = []
        for _ in range(batches):
            t0 = time.perf_counter()
            model.forward_features(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    hits1, misses1 = _fx_cache_counters()
    stats = execution.stats()["backbone"]
    n = x.shape[0]
    ms_image = 1000.0 * statistics.median(times) / n
    out.update(
        dtype=stats["precision"],
        channels_last=stats["channels_last"],
        compiled=stats["compiled"],
        compile_seconds=stats.get("compile_seconds"),
        fell_back_to_fp32=bool(stats.get("fell_back_to_fp32", False)),
        check_min_cosine=stats.get("min_cosine_to_fp32"),
        ms_per_image=round(ms_image, 4),
        ms_per_batch=round(ms_image * n, 3),
        ms_per_batch_min=round(1000.0 * min(times), 3),
        ms_per_batch_max=round(1000.0 * max(times), 3),
        images_per_s=round(1000.0 / ms_image, 2),
    )
    if form.compile != "off":
        out["compile_cache"] = _cache_state(hits1 - hits0, misses1 - misses0)
        out["fxgraph_cache_hits"], out["fxgraph_cache_misses"] = hits1 - hits0, misses1 - misses0
    if notes:
        out["note"] = "; ".join(notes)
    assert features is not None
    features = features.detach().float().cpu()
    del model, execution, bb
    if form.compile != "off":
        torch._dynamo.reset()
    return out, features


def run_extraction_benchmark(
    *,
    quick: bool = False,
    compile: bool = True,
    models: list[tuple[str, str]] | None = None,
    batch: int | None = None,
    input_size: int | None = None,
    warmup: int | None = None,
    batches: int | None = None,
    device: str = "auto",
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Images/s of each frozen-backbone form (see the module docstring); one row per (model, form).

    quick: the tiny CNN at 64 px, batch 8, three timed batches (seconds plus compiling;
    for tests, not for numbers). compile=False skips the compiled forms. device: cpu,
    cuda[:N], or auto (CUDA when present, else CPU).
    """
    from tlengine.execution import cache_base, min_cosine

    dflt = QUICK_DEFAULTS if quick else DEFAULTS
    batch = batch or dflt["batch"]
    input_size = input_size or dflt["input_size"]
    warmup = dflt["warmup"] if warmup is None else warmup
    batches = batches or dflt["batches"]
    models = list(models or (QUICK_MODELS if quick else MODELS))
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    forms = [f for f in FORMS if compile or f.compile == "off"]
    threads = torch.get_num_threads()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with OtherLoad() as load:
        for label, name in models:
            if echo:
                echo(f"[{label}] building {name} (random weights)")
            backbone = build_backbone(name)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 3, input_size, input_size, generator=gen).to(dev)  # normalised-image scale
            reference: torch.Tensor | None = None
            eager_ms: float | None = None
            for form in forms:
                row: dict[str, Any] = {
                    "kind": "extraction",
                    "model": label,
                    "backbone": name,
                    "form": form.name,
                    "precision": form.precision,
                    "channels_last_setting": form.channels_last,
                    "compile_setting": form.compile,
                    "batch": batch,
                    "input_size": input_size,
                    "warmup": warmup,
                    "timed_batches": batches,
                }
                try:
                    fields, features = run_form(backbone, form, x, device=dev, warmup=warmup, batches=batches)
                except Exception as exc:  # one broken form (e.g. a compile failure) must not hide the others
                    row["error"] = (
                        f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400]
                    )
                    rows.append(row)
                    if echo:
                        echo(f"[{label}] {form.name}: error {row['error']}")
                    continue
                row.update(fields)
                if form.name == REFERENCE_FORM:
                    reference, eager_ms = features, fields["ms_per_image"]
                row["min_cosine_vs_eager_fp32"] = (
                    round(min_cosine(reference, features), 6) if reference is not None else None
                )
                row["speedup_vs_eager_fp32"] = (
                    round(eager_ms / row["ms_per_image"], 3) if eager_ms and row["ms_per_image"] else None
                )
                rows.append(row)
                if echo:
                    echo(
                        f"[{label}] {form.name:20s} {row['dtype']:5s} {row['ms_per_image']:.3f} ms/image  "
                        f"{row['images_per_s']:.1f} img/s  x{row['speedup_vs_eager_fp32']}  "
                        f"cos {row['min_cosine_vs_eager_fp32']}"
                        + (
                            f"  compile {row.get('compile_seconds')} s ({row.get('compile_cache')})"
                            if row.get("compiled")
                            else ""
                        )
                    )
            del backbone
    from benchmarks.kernels import cpu_name

    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {
        "kind": "extraction",
        "device": str(dev),
        "hardware": hw,
        "threads": threads,
        "torch": torch.__version__,
        "quick": quick,
        "compile": compile,
        "batch": batch,
        "input_size": input_size,
        "warmup": warmup,
        "timed_batches": batches,
        "forms": [f.__dict__ for f in forms],
        "inductor_cache": _inductor_cache_dir(cache_base()),
        "seconds": round(time.perf_counter() - started, 1),
        **load.summary(),
        "rows": rows,
    }


def _inductor_cache_dir(base: Path) -> str:
    import os

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(base / "inductor")
