"""Losses and measures of the domain-adaptation strategies (pure functions, no state).

* :func:`grad_reverse` — the gradient reversal layer of DANN (Ganin & Lempitsky, 2015):
  the identity forward, the gradient times ``-coeff`` backward.
* :func:`dann_coefficient` — DANN's schedule of the reversal weight over training.
* :func:`coral_loss` — Deep CORAL (Sun & Saenko, 2016): the distance between the two
  domains' feature covariances.
* :func:`multi_kernel_mmd` — the squared maximum mean discrepancy under a sum of Gaussian
  kernels (DAN, Long et al. 2015; TLlib's MK-MMD).
* :func:`pooled_features` — one [N,D] row per sample from what ``forward_features``
  returns (padded sequences are averaged under their mask).
* :func:`proxy_a_distance` — the proxy A-distance (Ben-David et al., 2007): how well a
  linear classifier tells the two domains apart, 0 (indistinguishable) to 2 (separable).

Every loss computes in float32 (also under autocast) and accepts source and target batches
of different sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class GradientReversal(torch.autograd.Function):
    """``y = x`` forward; ``dL/dx = -coeff * dL/dy`` backward (no gradient for ``coeff``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output.neg() * ctx.coeff, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """The gradient reversal layer: ``x`` [any shape] unchanged forward; the gradient that
    flows back through it is multiplied by ``-coeff``."""
    return GradientReversal.apply(x, coeff)


def dann_coefficient(progress: float, *, gamma: float = 10.0, max_weight: float = 1.0) -> float:
    """DANN's reversal weight at training progress ``progress`` in [0, 1] (clipped):
    ``max_weight * (2 / (1 + exp(-gamma * p)) - 1)`` — 0 at the start, rising smoothly
    towards ``max_weight`` (``max_weight * 0.99991`` at p = 1 with gamma = 10), so the
    feature extractor is not pushed by a discriminator that has not learnt anything yet."""
    p = min(1.0, max(0.0, float(progress)))
    return float(max_weight) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def _float32(x: Tensor) -> Tensor:
    return x.float() if x.dtype != torch.float32 else x


def _check_pair(source: Tensor, target: Tensor, what: str, min_rows: int = 1) -> None:
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(
            f"{what} needs [N,D] source and [M,D] target features, got {list(source.shape)} and {list(target.shape)}"
        )
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"{what}: source and target features differ in width ({source.shape[1]} vs {target.shape[1]})")
    if source.shape[0] < min_rows or target.shape[0] < min_rows:
        raise ValueError(
            f"{what} needs at least {min_rows} rows per domain, got {source.shape[0]} source and "
            f"{target.shape[0]} target rows"
        )


def _covariance(x: Tensor) -> Tensor:
    """Unbiased covariance [D,D] of the rows of x [N,D] (N >= 2)."""
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """Deep CORAL: ``||C_s - C_t||_F^2 / (4 d^2)``, with C_s, C_t the unbiased [D,D]
    covariances of source [N,D] and target [M,D] (N, M >= 2) and d = D. A scalar, float32."""
    _check_pair(source, target, "coral_loss", min_rows=2)
    with torch.autocast(source.device.type, enabled=False):
        s, t = _float32(source), _float32(target)
        d = s.shape[1]
        diff = _covariance(s) - _covariance(t)
        return (diff * diff).sum() / (4.0 * d * d)


def _squared_distances(z: Tensor) -> Tensor:
    """[K,K] squared Euclidean distances between the rows of z [K,D] (exact zeros on the diagonal)."""
    sq = (z * z).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    return dist * (1.0 - torch.eye(z.shape[0], device=z.device, dtype=z.dtype))


def multi_kernel_mmd(
    source: Tensor, target: Tensor, *, kernel_mults: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> Tensor:
    """Squared MMD between source [N,D] and target [M,D] (the biased V-statistic):
    ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)`` over all pairs (diagonals included),
    with ``k(x, y) = sum_m exp(-||x - y||^2 / (m * b))`` over ``m`` in ``kernel_mults``.

    The base bandwidth ``b`` is the mean squared distance between distinct rows of the
    joint sample (source and target stacked), detached — the median-like heuristic of DAN
    and TLlib's MK-MMD. A scalar, float32, >= 0 up to rounding; 0 for identical samples.
    """
    _check_pair(source, target, "multi_kernel_mmd")
    mults = [float(m) for m in kernel_mults]
    if not mults or any(m <= 0 for m in mults):
        raise ValueError(f"kernel_mults must be positive numbers, got {list(kernel_mults)}")
    with torch.autocast(source.device.type, enabled=False):
        z = torch.cat([_float32(source), _float32(target)])
        n, k = source.shape[0], z.shape[0]
        dist = _squared_distances(z)
        base = dist.detach().sum() / max(1, k * (k - 1))
        base = base.clamp_min(torch.finfo(torch.float32).tiny)  # all rows equal: every distance is 0 anyway
        kernel = torch.zeros_like(dist)
        for m in mults:
            kernel = kernel + torch.exp(-dist / (m * base))
        k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
        return k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()


def pooled_features(features: Any) -> Tensor:
    """One float32 row [N,D] per sample from what ``model.forward_features`` returns:

    * [N,D] — unchanged;
    * ``(hidden [N,T,D], lengths [N])`` (padded sequences) — the mean over each row's first
      ``lengths`` frames; padding never counts;
    * [N,T,D] — the mean over all T tokens; [N,C,H,W] — the mean over the map (global
      average pooling).
    """
    if isinstance(features, (tuple, list)):
        if len(features) != 2:
            raise ValueError(f"expected features or (hidden [N,T,D], lengths [N]), got a sequence of {len(features)}")
        hidden, lengths = features
        if hidden.dim() != 3:
            raise ValueError(f"padded features must be [N,T,D], got {list(hidden.shape)}")
        hidden = _float32(hidden)
        t = hidden.shape[1]
        lengths = torch.as_tensor(lengths, device=hidden.device)
        mask = (torch.arange(t, device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
        total = (hidden * mask[..., None]).sum(1)
        return total / mask.sum(1, keepdim=True).clamp_min(1.0)
    if not isinstance(features, Tensor):
        raise ValueError(
            f"cannot pool features of type {type(features).__name__} (expected a tensor or (hidden, lengths))"
        )
    if features.dim() == 2:
        return _float32(features)
    if features.dim() == 3:
        return _float32(features).mean(1)
    if features.dim() == 4:
        return _float32(features).mean((2, 3))
    raise ValueError(f"cannot pool features of shape {list(features.shape)} to [N,D]")


def proxy_a_distance(source: Tensor, target: Tensor, *, seed: int = 0) -> float:
    """The proxy A-distance ``2 * (1 - 2 * err)``, clipped to [0, 2], between source [N,D]
    and target [M,D] features.

    ``err`` is the test error of a logistic regression (on standardised features) that
    tells source from target: each domain is subsampled to ``min(N, M)`` rows (balanced),
    half of each trains the classifier and the other half tests it. ~0: the domains look
    alike to a linear classifier; 2: they are linearly separable. Deterministic in ``seed``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check_pair(source, target, "proxy_a_distance", min_rows=2)
    s = pooled_features(source.detach()).cpu().double()
    t = pooled_features(target.detach()).cpu().double()
    g = torch.Generator().manual_seed(seed)
    n = min(s.shape[0], t.shape[0])
    s = s[torch.randperm(s.shape[0], generator=g)[:n]]
    t = t[torch.randperm(t.shape[0], generator=g)[:n]]
    half = n // 2
    x_train = torch.cat([s[:half], t[:half]]).numpy()
    x_test = torch.cat([s[half:], t[half:]]).numpy()
    y_train = [1] * half + [0] * half
    y_test = [1] * (n - half) + [0] * (n - half)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    classifier.fit(x_train, y_train)
    err = 1.0 - float(classifier.score(x_test, y_test))
    return min(2.0, max(0.0, 2.0 * (1.0 - 2.0 * err)))
