"""Benchmark results -> markdown tables and files (JSON + markdown side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KERNEL_TARGET_VS_EAGER = 2.0  # each fused op >= 2x faster than its eager reference
KERNEL_TARGET_VS_COMPILE = 1.0  # ... and not slower than torch.compile of the reference


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _x(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def kernel_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per op: the worst speed-ups over its rows and whether the targets are met (reported only)."""
    out: dict[str, dict[str, Any]] = {}
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op]
        vs_eager = [r["speedup_vs_eager"] for r in mine if r.get("speedup_vs_eager") is not None]
        vs_compile = [r["speedup_vs_compile"] for r in mine if r.get("speedup_vs_compile") is not None]
        out[op] = {
            "rows": len(mine),
            "min_speedup_vs_eager": min(vs_eager) if vs_eager else None,
            "min_speedup_vs_compile": min(vs_compile) if vs_compile else None,
            "vs_eager_met": (min(vs_eager) >= KERNEL_TARGET_VS_EAGER) if len(vs_eager) == len(mine) else None,
            "vs_compile_met": (min(vs_compile) >= KERNEL_TARGET_VS_COMPILE) if len(vs_compile) == len(mine) else None,
        }
    return out


def _kernel_section(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Kernels: fused op vs eager reference vs torch.compile(reference)", ""]
    meta = result.get("kernels", result)
    lines.append(
        f"Median of repeated runs (torch.utils.benchmark, {meta.get('threads', result.get('threads'))} threads); "
        "GB/s = bytes the op must read + write / median time of the fused op; copy GB/s = plain "
        "`copy_` of the same bytes on the same device (the ceiling); copy vs eager = eager ms / that "
        "copy's ms, the most any single pass over these bytes could gain on eager. Buffers >= "
        f"{_num((meta.get('llc_bytes') or 0) / 2**20)} MiB LLC x 3 per call or per rotation of calls."
    )
    lines.append("")
    multi_device = len({r.get("device", "") for r in rows}) > 1
    header = (["device"] if multi_device else []) + [
        "op",
        "shape",
        "dtype",
        "fused ms",
        "eager ms",
        "compile ms",
        "vs eager",
        "vs compile",
        "GB/s",
        "copy GB/s",
        "% of copy",
        "copy vs eager",
    ]
    if any(r.get("pct_of_peak") is not None for r in rows):
        header.append("% of peak")
    body = []
    for r in rows:
        cells = ([r.get("device", "")] if multi_device else []) + [
            f"`{r['op']}`",
            r["shape"],
            r["dtype"],
            _num(r.get("fused_ms")),
            _num(r.get("eager_ms")),
            _num(r.get("compile_ms"))
            if r.get("compile_ms") is not None
            else ("error" if r.get("compile_error") else "—"),
            _x(r.get("speedup_vs_eager")),
            _x(r.get("speedup_vs_compile")),
            _num(r.get("gbps")),
            _num(r.get("copy_gbps")),
            _num(r.get("pct_of_copy")),
            _x(r.get("copy_bound_vs_eager")),
        ]
        if "% of peak" in header:
            cells.append(_num(r.get("pct_of_peak")))
        body.append(cells)
    lines += _table(header, body)
    lines.append("")
    targets = kernel_targets(rows)
    lines.append(
        f"Targets (reported, not asserted): fused >= {KERNEL_TARGET_VS_EAGER:g}x eager and "
        f">= {KERNEL_TARGET_VS_COMPILE:g}x torch.compile on every row."
    )
    lines.append("")
    for op, t in targets.items():
        lines.append(
            f"- `{op}`: worst vs eager {_x(t['min_speedup_vs_eager'])} ({_met(t['vs_eager_met'])}), "
            f"worst vs compile {_x(t['min_speedup_vs_compile'])} ({_met(t['vs_compile_met'])})"
        )
    notes = []
    if not meta.get("fused_available", True):
        notes.append(f"fused column empty: {meta.get('fused_note')}")
    for r in rows:
        if r.get("compile_error"):
            notes.append(f"torch.compile failed for `{r['op']}` {r['shape']} {r['dtype']}: {r['compile_error']}")
        if r.get("fused_error"):
            notes.append(f"fused op failed for `{r['op']}` {r['shape']} {r['dtype']}: {r['fused_error']}")
        err = r.get("fused_max_abs_err")
        if err is not None and err > _tolerance(r):
            notes.append(
                f"fused result differs from the reference for `{r['op']}` {r['shape']} {r['dtype']}: "
                f"max |diff| = {err:.3g}"
            )
    pool_note = next((r.get("note", "").split(";")[0] for r in rows if r["op"] == "pool_quantize_scatter"), "")
    if pool_note:
        notes.append(f"`pool_quantize_scatter`: {pool_note}")
    if meta.get("busy_warning"):
        notes.append(meta["busy_warning"])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    lines.append("")
    return lines


def _tolerance(row: dict[str, Any]) -> float:
    """Loose bound: differences beyond it are worth a note (float rounding stays well under)."""
    dt = row.get("out_dtype") or row.get("dtype")
    if row["op"] == "pool_quantize_scatter" and row.get("dtype") == "int8":
        return 0.05  # one quantisation step of a unit-scale row
    return {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}.get(dt, 1e-2)


def _met(flag: Any) -> str:
    return "n/a" if flag is None else ("met" if flag else "NOT met")


def _backbone_form(r: dict[str, Any]) -> str:
    """The frozen backbone's form in a training row: e.g. ``bf16, channels-last, compiled (41 s)``."""
    if r.get("extraction_precision") is None and r.get("compiled") is None:
        return "—"
    bits = [r.get("extraction_precision") or "?"]
    if r.get("fell_back_to_fp32"):
        bits[0] += " (fell back)"
    if r.get("channels_last"):
        bits.append("channels-last")
    if r.get("compiled"):
        cs = r.get("compile_seconds")
        bits.append("compiled" + (f" ({_num(cs)} s)" if cs is not None else ""))
    return ", ".join(bits)


def _training_section(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    meta = result.get("training", result)
    lines = ["## Training: feature extraction, naive vs cached (fp32, bf16, compiled backbone)", ""]
    lines.append(
        f"Pipeline `{Path(meta.get('pipeline', '')).name}` through `tlengine run`, one process per arm; "
        "seconds = the arm's time in metrics.json (cached arms include building the cache), "
        "accuracy = final test accuracy; backbone = the frozen backbone's precision / layout / compile "
        "as the run's execution plan reports it (cos = its first-batch check against fp32)."
    )
    lines.append("")
    body = []
    for r in rows:
        cos = r.get("min_cosine_to_fp32")
        body.append(
            [
                r["arm"],
                _backbone_form(r),
                str(r.get("epochs")),
                _num(r.get("seconds")),
                _x(r.get("speedup_vs_naive")),
                _num(r.get("accuracy"), 4),
                _num(r.get("accuracy_delta_points")),
                _num(r.get("extraction_seconds")),
                "—" if cos is None else f"{cos:.6f}",
                _num(r.get("wall_seconds")),
            ]
        )
    lines += _table(
        [
            "arm",
            "backbone",
            "epochs",
            "seconds",
            "speed-up vs naive",
            "accuracy",
            "Δ acc (points)",
            "cache build s",
            "cos",
            "wall s (process)",
        ],
        body,
    )
    lines.append("")
    notes = [f"`{r['arm']}`: {r['error']}" for r in rows if r.get("error")]
    notes += [f"`{r['arm']}`: {r['note']}" for r in rows if r.get("note")]
    if meta.get("busy_warning"):
        notes.append(meta["busy_warning"])
    targets = meta.get("targets") or {}
    for arm, t in targets.items():
        notes.append(
            f"target `{arm}` >= {t['speedup_target']:g}x naive: {_met(t['speedup_met'])}; accuracy within "
            f"{t['accuracy_points_target']:g} point: {_met(t['accuracy_met'])}"
            + ("" if t.get("comparable", True) else " (not 10 epochs: not comparable with the target)")
        )
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def _extraction_section(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    meta = result.get("extraction", result)
    lines = ["## Extraction: frozen backbone, eager vs channels-last vs bf16 vs torch.compile", ""]
    lines.append(
        f"Each form built through `configure_execution` and run as `model.forward_features(x)` under "
        f"`torch.no_grad()`; random weights; median of {meta.get('timed_batches')} timed batches after "
        f"{meta.get('warmup')} warm-up ones (and after the precision check and, for compiled forms, the "
        "compiling call). dtype = the precision the plan kept; vs eager = eager-fp32 ms / this form's ms "
        "(same model); cos = lowest per-sample cosine similarity of the features to eager-fp32 on the same "
        "input; compile s = the first compiled call (cold: inductor compiled, warm: from its cache "
        f"`{meta.get('inductor_cache', '')}`)."
    )
    lines.append("")
    body = []
    for r in rows:
        if r.get("error"):
            body.append([r["model"], r["form"], str(r.get("batch")), str(r.get("input_size"))] + ["error"] + ["—"] * 5)
            continue
        compile_s = "—"
        if r.get("compiled"):
            compile_s = _num(r.get("compile_seconds")) + (f" ({r['compile_cache']})" if r.get("compile_cache") else "")
        body.append(
            [
                r["model"],
                r["form"],
                str(r.get("batch")),
                f"{r.get('input_size')}px",
                r.get("dtype", "—") + (" (fell back)" if r.get("fell_back_to_fp32") else ""),
                _num(r.get("ms_per_image")),
                _num(r.get("images_per_s")),
                _x(r.get("speedup_vs_eager_fp32")),
                compile_s,
                "—" if r.get("min_cosine_vs_eager_fp32") is None else f"{r['min_cosine_vs_eager_fp32']:.6f}",
            ]
        )
    lines += _table(
        ["model", "form", "batch", "input", "dtype", "ms/image", "images/s", "vs eager fp32", "compile s", "cos"],
        body,
    )
    lines.append("")
    notes = [f"{r['model']} `{r['form']}`: {r['error']}" for r in rows if r.get("error")]
    notes += [f"{r['model']} `{r['form']}`: {r['note']}" for r in rows if r.get("note")]
    if meta.get("busy_warning"):
        notes.append(meta["busy_warning"])
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    return lines


def _text_section(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Text: naive vs cached training arms (accuracy and macro-F1) and the encoder's texts/s by padding."""
    meta = result.get("text", result)
    training = [r for r in rows if r.get("kind") == "text-training"]
    throughput = [r for r in rows if r.get("kind") == "text-throughput"]
    lines: list[str] = []
    if training:
        tmeta = meta.get("training") or {}
        lines += ["## Text training: feature extraction, naive vs cached (fp32, bf16 encoder)", ""]
        lines.append(
            f"Pipeline `{Path(tmeta.get('pipeline', '')).name}` through `tlengine run`, one process per arm; "
            "seconds = the arm's time in metrics.json (cached arms include building the cache), accuracy and "
            "macro-F1 = final test metrics; encoder = the frozen encoder's precision as the run's execution plan "
            "reports it (cos = its first-batch check against fp32)."
        )
        lines.append("")
        body = []
        for r in training:
            cos = r.get("min_cosine_to_fp32")
            body.append(
                [
                    r["arm"],
                    _backbone_form(r),
                    str(r.get("epochs")),
                    _num(r.get("seconds")),
                    _x(r.get("speedup_vs_naive")),
                    _num(r.get("accuracy"), 4),
                    _num(r.get("macro_f1"), 4),
                    _num(r.get("accuracy_delta_points")),
                    _num(r.get("macro_f1_delta_points")),
                    _num(r.get("extraction_seconds")),
                    "—" if cos is None else f"{cos:.6f}",
                    _num(r.get("wall_seconds")),
                ]
            )
        lines += _table(
            [
                "arm",
                "encoder",
                "epochs",
                "seconds",
                "speed-up vs naive",
                "accuracy",
                "macro-F1",
                "Δ acc (points)",
                "Δ F1 (points)",
                "cache build s",
                "cos",
                "wall s (process)",
            ],
            body,
        )
        lines.append("")
        notes = [f"`{r['arm']}`: {r['error']}" for r in training if r.get("error")]
        notes += [f"`{r['arm']}`: {r['note']}" for r in training if r.get("note")]
        target = tmeta.get("accuracy_points_target")
        notes += [
            f"`{r['arm']}` accuracy within {target:g} point of naive: {_met(r.get('accuracy_met'))}"
            for r in training
            if r["arm"] != "naive" and target is not None
        ]
        if tmeta.get("busy_warning"):
            notes.append(tmeta["busy_warning"])
        if notes:
            lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    if throughput:
        pmeta = meta.get("throughput") or {}
        lines += ["## Text encoding: texts/s, dynamic padding vs padding to max_length", ""]
        lines.append(
            f"`{pmeta.get('weights')}` under `torch.inference_mode` on {pmeta.get('texts')} texts, batch "
            f"{pmeta.get('batch')}, max_length {pmeta.get('max_length')}; median of {pmeta.get('repeats')} timed "
            f"round(s) after {pmeta.get('warmup')} warm-up round(s), the forms alternating within a round. "
            "Tokenisation of every text: "
            f"{_num(pmeta.get('tokenize_seconds'))} s ({_num(pmeta.get('tokenize_texts_per_s'))} texts/s), "
            "counted in texts/s; encode = collating + encoder + masked mean pooling only. tokens/text = real "
            "tokens, padded = positions the encoder ran; vs max_length = texts/s / pad-to-max-length's; cos = "
            "lowest per-text cosine of the pooled features to pad-to-max-length fp32."
        )
        lines.append("")
        body = []
        for r in throughput:
            if r.get("error"):
                body.append([r["form"], r["padding"], r["order"], r["precision"]] + ["error"] + ["—"] * 6)
                continue
            cos = r.get("min_cosine_vs_max_length")
            body.append(
                [
                    r["form"],
                    r["padding"],
                    r["order"],
                    r["precision"],
                    _num(r.get("tokens_per_text")),
                    _num(r.get("padded_tokens_per_text")),
                    _num(r.get("encode_texts_per_s")),
                    _num(r.get("texts_per_s")),
                    _x(r.get("speedup_vs_max_length")),
                    "—" if cos is None else f"{cos:.6f}",
                    _num(r.get("encode_seconds")),
                ]
            )
        lines += _table(
            [
                "form",
                "padding",
                "order",
                "precision",
                "tokens/text",
                "padded/text",
                "encode texts/s",
                "texts/s (with tokenisation)",
                "vs max_length",
                "cos",
                "encode s",
            ],
            body,
        )
        lines.append("")
        notes = [f"`{r['form']}`: {r['error']}" for r in throughput if r.get("error")]
        if pmeta.get("busy_warning"):
            notes.append(pmeta["busy_warning"])
        if notes:
            lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    """Kernel, extraction, training, text, detection and/or captioning tables for a result of any kind (or all)."""
    rows = result.get("rows", [])
    text_rows = [r for r in rows if str(r.get("kind", "")).startswith("text-")]
    detection_rows = [r for r in rows if str(r.get("kind", "")).startswith("detection-")]
    captioning_rows = [r for r in rows if str(r.get("kind", "")).startswith("captioning-")]
    rows = [r for r in rows if not str(r.get("kind", "")).startswith(("text-", "detection-", "captioning-"))]
    kernel_rows = [r for r in rows if r.get("kind") == "kernel" or ("op" in r and "arm" not in r)]
    training_rows = [r for r in rows if r.get("kind") == "training" or ("arm" in r and "op" not in r)]
    extraction_rows = [r for r in rows if r.get("kind") == "extraction"]
    hw = (
        result.get("hardware")
        or (result.get("kernels") or {}).get("hardware")
        or (result.get("extraction") or {}).get("hardware")
        or (result.get("text") or {}).get("hardware")
    )
    head = [
        "# tlengine benchmarks",
        "",
        f"device {result.get('device')}" + (f" ({hw})" if hw else "") + f", {result.get('threads')} threads, "
        f"torch {result.get('torch')}"
        + (", QUICK sizes (smoke test, not for comparison)" if result.get("quick") else ""),
        "",
    ]
    out = head
    if kernel_rows:
        out += _kernel_section(result, kernel_rows)
    if extraction_rows:
        out += _extraction_section(result, extraction_rows)
    if training_rows:
        out += _training_section(result, training_rows)
    if text_rows:
        out += _text_section(result, text_rows)
    if detection_rows:
        from benchmarks.detection import markdown_section

        out += markdown_section(result, detection_rows)
    if captioning_rows:
        from benchmarks.captioning import markdown_section as captioning_section

        out += captioning_section(result, captioning_rows)
    skipped = result.get("skipped") or (result.get("text") or {}).get("skipped")
    if skipped:
        out += [skipped, ""]
    return "\n".join(out).rstrip() + "\n"


def write_results(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<kind>.json`` and ``<kind>.md`` into out_dir; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = result.get("kind") or "bench"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path
