"""How far apart two domains look to a trained model: the proxy A-distance between its
features of the stage's test split and of an ``evaluate_on`` dataset's, and a 2-D t-SNE
map of both, one panel per arm (``plots/<name>_features_by_arm.png``).

The source-only arm's distance is the "before" of a domain-adaptation run; an adapted
arm whose features mix the domains scores lower (0: a linear classifier cannot tell them
apart; 2: it always can). Only models whose ``forward_features`` pools to one row per
sample (see :func:`tlengine.strategies.domain_losses.pooled_features`) get these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..strategies.domain_losses import pooled_features, proxy_a_distance
from .plots import _save, plt

#: samples per domain the distance is measured on (the first ones of each test split)
DISTANCE_SAMPLES = 400
#: samples per domain drawn on the map
MAP_SAMPLES = 150


def dataset_features(
    task: Any, model: Any, dataset: Any, *, batch_size: int, device: torch.device, limit: int = DISTANCE_SAMPLES
) -> torch.Tensor | None:
    """Pooled features [n,D] (float32, CPU) of at most ``limit`` samples of ``dataset``, drawn
    at random (fixed seed) from the whole split, in random order, since splits are often
    grouped by class; None when the model's features do not pool to one row per sample."""
    loader = task.loader(dataset, batch_size=batch_size, shuffle=False, seed=0)
    rows: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            inputs, _ = task.move_to(batch, device)
            try:
                rows.append(pooled_features(model.forward_features(inputs)).cpu())
            except (ValueError, TypeError, NotImplementedError):
                return None
    if not rows:
        return None
    features = torch.cat(rows)
    order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))
    return features[order[:limit]]


def domain_gap(source: torch.Tensor, target: torch.Tensor, *, seed: int) -> tuple[float, dict[str, list]]:
    """(proxy A-distance of ``source`` [N,D] vs ``target`` [M,D], a 2-D t-SNE map of up to
    :data:`MAP_SAMPLES` rows of each: ``{"source": [[x, y], ...], "target": [...]}``)."""
    from sklearn.manifold import TSNE

    distance = proxy_a_distance(source, target, seed=seed)
    s, t = source[:MAP_SAMPLES].double(), target[:MAP_SAMPLES].double()
    joint = torch.cat([s, t]).numpy()
    perplexity = float(min(30.0, (joint.shape[0] - 1) / 3))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(joint)
    coords = [[round(float(x), 3), round(float(y), 3)] for x, y in coords]
    return distance, {"source": coords[: len(s)], "target": coords[len(s) :]}


def plot_domain_maps(maps: dict[str, dict[str, list]], distances: dict[str, float], name: str, path: Path) -> Path:
    """One panel per arm: its source (stage data) and ``name`` features on the t-SNE map,
    titled with the arm's A-distance."""
    arms = list(maps)
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.6), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        for domain, label, colour in (("source", "stage data", "tab:blue"), ("target", name, "tab:orange")):
            points = maps[arm].get(domain) or []
            if points:
                xs, ys = zip(*points)
                ax.scatter(xs, ys, s=6, alpha=0.6, label=label, color=colour)
        ax.set_title(f"{arm}: A-distance {distances.get(arm, float('nan')):.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"test features, stage data vs {name} (t-SNE)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
