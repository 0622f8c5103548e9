"""PNG plots of a run: training curves, confusion matrices, and the arm comparison.

Everything renders off-screen (Agg backend) and every file is written atomically: saved
under a temporary name in the target directory, then moved into place with
``os.replace``, so a crash never leaves a half-written PNG behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, even when a display exists

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 120

#: Stable colours per well-known arm, so every plot of every run agrees.
_ARM_COLOURS = {
    "fine-tune": "tab:blue",
    "feature-extraction": "tab:orange",
    "scratch": "tab:green",
    "source": "tab:purple",
}
_OTHER_COLOURS = ["tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def _arm_colours(arms: Sequence[str]) -> dict[str, str]:
    """One colour per arm: fixed ones for the core arms, then a cycle for the rest."""
    colours: dict[str, str] = {}
    spare = iter(_OTHER_COLOURS * (len(arms) // len(_OTHER_COLOURS) + 1))
    for arm in arms:
        colours[arm] = _ARM_COLOURS.get(arm) or next(spare)
    return colours


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened with "xb" (not mkstemp, which forces mode 0600) keeps the umask's permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _series(records: Sequence[dict[str, Any]], arm: str, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key`` for one arm, sorted by epoch, None/missing skipped;
    records of several seeds are averaged per epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        if r.get("arm") == arm and _is_number(r.get(key)) and r.get("epoch") is not None:
            by_epoch.setdefault(int(r["epoch"]), []).append(float(r[key]))
    epochs = sorted(by_epoch)
    return epochs, [float(np.mean(by_epoch[e])) for e in epochs]


_ACRONYMS = {
    "f1": "F1",
    "mae": "MAE",
    "mse": "MSE",
    "rmse": "RMSE",
    "auc": "AUC",
    "map": "mAP",
    "iou": "IoU",
    "r2": "R²",
}


def _pretty(metric: str) -> str:
    """``val_macro_f1`` -> ``validation macro F1``."""
    words = metric.split("_")
    if words and words[0] == "val":
        words[0] = "validation"
    return " ".join(_ACRONYMS.get(w.lower(), w) for w in words)


def plot_curves(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Loss and validation-metric curves per arm, from the lines of ``metrics.jsonl``.

    Args:
        records: dicts ``{"arm", "epoch" (from 1), "train_loss", "val_loss" | None, "lr",
            "val_<metric>"..., "seconds"}`` for one or more arms. Values that are None
            (or missing, or not finite) are skipped.
        out_dir: directory to write into (created if needed).

    Returns:
        The files written: ``loss.png`` (train loss solid, validation loss dashed, one colour
        per arm) and ``val_<metric>.png`` for every ``val_<metric>`` key other than
        ``val_loss`` (one line per arm). Nothing is written for an empty ``records``.
    """
    out_dir = Path(out_dir)
    arms = list(dict.fromkeys(str(r["arm"]) for r in records if "arm" in r))
    if not arms:
        return []
    colours = _arm_colours(arms)
    written: list[Path] = []
    markers = {"marker": "o", "markersize": 3}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        epochs, values = _series(records, arm, "train_loss")
        if epochs:
            ax.plot(epochs, values, "-", color=colours[arm], label=f"{arm} (train)", **markers)
        epochs, values = _series(records, arm, "val_loss")
        if epochs:
            ax.plot(epochs, values, "--", color=colours[arm], label=f"{arm} (val)", **markers)
    ax.set_title("Loss per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    _finish_epoch_axes(ax)
    written.append(_save(fig, out_dir / "loss.png"))

    metric_keys = list(dict.fromkeys(k for r in records for k in r if k.startswith("val_") and k != "val_loss"))
    for key in metric_keys:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for arm in arms:
            epochs, values = _series(records, arm, key)
            if epochs:
                ax.plot(epochs, values, "-", color=colours[arm], label=arm, **markers)
        title = _pretty(key)
        ax.set_title(f"{title[:1].upper()}{title[1:]} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(_pretty(key))
        _finish_epoch_axes(ax)
        written.append(_save(fig, out_dir / f"{key}.png"))
    return written


def _finish_epoch_axes(ax: Any) -> None:
    """Integer epoch ticks, grid, and a legend when anything was drawn."""
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, *, title: str) -> Path:
    """A confusion-matrix heatmap: colour = row-normalised rate, text = absolute count.

    Args:
        matrix: K x K counts, rows = true class, columns = predicted class.
        classes: the K class names.
        path: PNG file to write (parent created if needed).
        title: figure title, e.g. ``"fine-tune: test confusion matrix"``.

    Rows with no samples stay blank. Works for 2..50 classes: the figure grows and the
    fonts shrink with K; zero counts off the diagonal are left blank.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({k}, {k}) for {k} classes")
    row_sums = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=float), where=row_sums > 0)

    side = float(np.clip(1.2 + 0.42 * k, 4.5, 18.0))
    label_font = float(np.clip(11 - 0.12 * k, 6, 10))
    cell_font = float(np.clip(11.5 - 0.15 * k, 4.5, 10))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class")

    for i in range(k):
        for j in range(k):
            if counts[i, j] == 0 and i != j:
                continue  # empty off-diagonal cells stay clean so errors stand out
            colour = "white" if rates[i, j] > 0.55 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=cell_font)

    ticks = np.arange(k)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(
        classes,
        rotation=45 if k <= 12 else 90,
        ha="right" if k <= 12 else "center",
        rotation_mode="anchor" if k <= 12 else "default",
        fontsize=label_font,
    )
    ax.set_yticklabels(classes, fontsize=label_font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, Path(path))


def plot_arm_comparison(
    arms: dict[str, dict[str, float]], metric: str, path: Path, errors: dict[str, float] | None = None
) -> Path:
    """A bar per arm of its final test ``metric`` (e.g. scratch vs feature-extraction vs fine-tune).

    Args:
        arms: arm name -> its test metrics, e.g. ``{"fine-tune": {"accuracy": 0.93}}``.
            Arms without a numeric ``metric`` are drawn as an empty slot labelled "n/a".
        metric: the metric to compare, e.g. ``"accuracy"``. Metrics in [0, 1] are shown
            as percentages.
        path: PNG file to write.
        errors: arm name -> standard deviation over seeds, drawn as error bars (optional).
    """
    names = list(arms)
    values = [arms[n].get(metric) for n in names]
    numeric = [float(v) for v in values if _is_number(v)]
    as_percent = bool(numeric) and all(0.0 <= v <= 1.0 for v in numeric)
    scale = 100.0 if as_percent else 1.0
    colours = _arm_colours(names)

    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(names) + 2), 4.5))
    heights = [float(v) * scale if _is_number(v) else 0.0 for v in values]
    yerr = [float((errors or {}).get(n) or 0.0) * scale for n in names] if errors else None
    bars = ax.bar(
        range(len(names)), heights, color=[colours[n] for n in names], width=0.6, yerr=yerr, capsize=4 if yerr else 0
    )
    top = max([h for h in heights] + [0.0])
    for bar, value in zip(bars, values):
        text = (f"{float(value) * scale:.1f}%" if as_percent else f"{float(value):.4g}") if _is_number(value) else "n/a"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=10,
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=0 if len(names) <= 4 else 30, ha="center" if len(names) <= 4 else "right")
    label = _pretty(metric)
    ax.set_ylabel(f"test {label}" + (" (%)" if as_percent else ""))
    ax.set_xlabel("arm")
    ax.set_title(f"Test {label} by arm")
    if as_percent:
        ax.set_ylim(0, 105)
    elif top > 0 and min(heights) >= 0:
        ax.set_ylim(0, top * 1.15)  # headroom for the value labels
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, Path(path))
