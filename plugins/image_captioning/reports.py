"""The captioning task's reports: its test captions beside the images, per arm.

``reports/captions.json`` - per arm, the first test images' predicted caption, references
and per-image BLEU-4 / CIDEr-D; ``plots/captions_<arm>.png`` - those images in a grid, each
with the arm's caption under it and the first reference.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Sequence

from PIL import Image
from tlengine.atomic import write_text
from tlengine.task import Evaluation

from .batches import load_image

#: pixels of one image in the grid
THUMB = 192


def write_caption_reports(
    run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any], items: Sequence[tuple[Any, list[str]]]
) -> list[Path]:
    written = []
    reports = Path(run_dir) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    document = {arm: ev.details.get("samples", []) for arm, ev in arms.items()}
    path = reports / "captions.json"
    write_text(path, json.dumps(document, indent=1))
    written.append(path)
    if items:
        plots = Path(run_dir) / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        for arm, samples in document.items():
            out = plots / f"captions_{arm}.png"
            _grid(items, samples).save(_tmp(out))
            _tmp(out).replace(out)
            written.append(out)
    return written


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp.png")


def _grid(items: Sequence[tuple[Any, list[str]]], samples: list[dict[str, Any]]) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(items), len(samples))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.9 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        image, references = items[k]
        image = image if isinstance(image, Image.Image) else load_image(Path(image))
        image = image.convert("RGB")
        image.thumbnail((THUMB, THUMB))
        ax.imshow(image)
        pred = "\n".join(textwrap.wrap(samples[k]["prediction"] or "(empty)", 34))
        ref = "\n".join(textwrap.wrap(references[0], 34))
        ax.set_title(f"{pred}\nref: {ref}", fontsize=8, loc="left")
    fig.tight_layout()
    fig.canvas.draw()
    out = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    plt.close(fig)
    return out
