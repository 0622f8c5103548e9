"""The speech task's reports: what adaptation did to the target speaker and to the others.

``reports/adaptation.json`` — per arm: the target speaker's WER/CER, its relative WER
reduction against the unadapted ``zero-shot`` arm, the other speakers' WER before and
after and whether that rise stays within ``data.forgetting_tolerance``; every speaker's
WER/CER; the first test transcripts. ``plots/wer_per_speaker.png`` — WER of every
speaker under every arm, the target first. ``plots/wer_vs_adaptation_utterances.png`` —
when several stages adapt to the same speaker with different ``data.adaptation_utterances``
(5, 10, 20, 50): the target's WER per arm against that count (mean over seeds), also in
``adaptation.json`` under ``curve``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tlengine.atomic import write_text
from tlengine.task import Evaluation

from .scoring import relative_reduction

BASE_ARM = "zero-shot"


def adaptation_summary(arms: dict[str, Evaluation], info: dict[str, Any]) -> dict[str, Any]:
    """Per arm: target WER/CER, reduction vs the base arm, the others' WER before/after."""
    base = arms.get(BASE_ARM)
    tolerance = float(info.get("forgetting_tolerance", 0.02))
    out: dict[str, Any] = {"target_speaker": info.get("adapted_to"), "base_arm": BASE_ARM if base else None, "arms": {}}
    for name, ev in arms.items():
        m = ev.metrics
        row: dict[str, Any] = {"wer": m.get("wer"), "cer": m.get("cer"), "wer_others": m.get("wer_others")}
        if base is not None and name != BASE_ARM:
            before = base.metrics.get("wer", math.nan)
            row["wer_before"] = before
            row["relative_wer_reduction"] = _finite(relative_reduction(before, m["wer"]))
            if "wer_others" in m and "wer_others" in base.metrics:
                rise = m["wer_others"] - base.metrics["wer_others"]
                row |= {"wer_others_before": base.metrics["wer_others"], "wer_others_rise": rise}
                row["others_held"] = bool(rise <= tolerance)
        row["per_speaker"] = {
            s: {"wer": r["wer"], "cer": r["cer"], "utterances": r["utterances"]}
            for s, r in ev.details.get("per_speaker", {}).items()
        }
        row["samples"] = ev.details.get("samples", [])
        out["arms"][name] = row
    out["forgetting_tolerance"] = tolerance
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def write_adaptation_reports(run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
    summary = adaptation_summary(arms, info)
    summary["curve"] = adaptation_curve(Path(run_dir), info.get("adapted_to"))
    reports = Path(run_dir) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / "adaptation.json"
    write_text(path, json.dumps(summary, indent=1))
    written = [path]
    plot = plot_wer_per_speaker(summary, Path(run_dir) / "plots" / "wer_per_speaker.png")
    if plot is not None:
        written.append(plot)
    if len({n for points in summary["curve"].values() for n in points}) > 1:
        written.append(plot_curve(summary["curve"], info.get("adapted_to"), Path(run_dir) / "plots"))
    return written


def adaptation_curve(run_dir: Path, speaker: str | None) -> dict[str, dict[int, dict[str, float]]]:
    """Target WER per arm against the number of adaptation utterances, over every finished
    stage that adapted to ``speaker``: ``{arm: {n: {"wer": mean, "std": std, "seeds": k}}}``."""
    import statistics

    found: dict[str, dict[int, list[float]]] = {}
    for meta_path in sorted(run_dir.glob("arms/*/*/seed*/model.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            result = json.loads((meta_path.parent / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        info = meta.get("info", {})
        if speaker is None or info.get("adapted_to") != speaker or "adaptation_utterances" not in info:
            continue
        wer = result.get("test", {}).get("metrics", {}).get("wer")
        if wer is not None:
            found.setdefault(meta["arm"], {}).setdefault(int(info["adaptation_utterances"]), []).append(float(wer))
    return {
        arm: {
            n: {"wer": statistics.fmean(v), "std": statistics.pstdev(v) if len(v) > 1 else 0.0, "seeds": len(v)}
            for n, v in sorted(points.items())
        }
        for arm, points in found.items()
    }


def plot_curve(curve: dict[str, dict[int, dict[str, float]]], speaker: str | None, plots: Path) -> Path:
    """The target's WER (%) per arm against the adaptation utterances (log-scaled axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for arm, points in curve.items():
        ns = sorted(points)
        ax.errorbar(
            ns, [100 * points[n]["wer"] for n in ns], yerr=[100 * points[n]["std"] for n in ns], marker="o", label=arm
        )
    ax.set_xscale("log")
    ns = sorted({n for points in curve.values() for n in points})
    ax.minorticks_off()  # log-axis minor labels such as "3x10^1" say nothing here
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("adaptation utterances")
    ax.set_ylabel("WER (%)")
    ax.set_title(f"target speaker {speaker}: WER against adaptation data")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = plots / "wer_vs_adaptation_utterances.png"
    plots.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def plot_wer_per_speaker(summary: dict[str, Any], out: Path) -> Path | None:
    """Grouped bars: WER (%) of each speaker (target first) under each arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    speakers = sorted({s for row in arms.values() for s in row["per_speaker"]})
    if not arms or not speakers:
        return None
    target = summary.get("target_speaker")
    if target in speakers:
        speakers.remove(target)
        speakers.insert(0, target)
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(speakers) + 2), 3.6))
    for k, (arm, row) in enumerate(arms.items()):
        values = [100 * row["per_speaker"].get(s, {}).get("wer", math.nan) for s in speakers]
        ax.bar([i + k * width for i in range(len(speakers))], values, width, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(speakers))])
    ax.set_xticklabels([f"{s}\n(target)" if s == target else s for s in speakers], fontsize=8)
    ax.set_ylabel("WER (%)")
    ax.set_title("word error rate per speaker and arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
