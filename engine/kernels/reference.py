"""Pure-PyTorch reference ops: they *define* what the fused ops in ``tlengine._C`` compute.

The C++ and CUDA kernels must match these within float rounding: they may sum in a
different order, so a pooled value can differ in its last bit, and an int8 code that sits
within that rounding of a half-step can come out one step apart (seen for 4 of 196,608
values on random ResNet-50 maps). Where every intermediate is exact (integer-valued or
dyadic inputs) they match bit for bit, int8 codes included. The tests check both, for every
dtype, layout and pooling mode.
They are also the fallback when the extension is not built.

Shapes and units:
* images: uint8 ``[N,H,W,C]`` (HWC pixels, 0..255).
* features: ``[N,C,H,W]`` (conv maps) or ``[N,T,D]`` (token sequences).
* cache: ``[R, D_row]`` of float32 / float16 / bfloat16 / int8; ``scales``: float32 ``[R]``
  (used by int8 only: ``value = q * scale``).
"""

from __future__ import annotations

from typing import Sequence

import torch

POOLINGS = ("avg", "max", "cls", "none")
CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)
L2_EPS = 1e-12


def normalize_images(
    images: torch.Tensor,
    offsets: torch.Tensor,
    mirror: torch.Tensor,
    out_h: int,
    out_w: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``[N,H,W,C]`` -> crop ``[out_h,out_w]`` at ``offsets[n] = (top, left)`` -> mirror
    (left-right) where ``mirror[n]`` -> ``(x/255 - mean[c]) / std[c]`` -> ``[N,C,out_h,out_w]``.

    offsets: int64 ``[N,2]``; mirror: bool ``[N]``; mean/std: C floats; arithmetic in float32,
    rounded once to ``dtype`` (float32, float16 or bfloat16) at the end. ``channels_last``: the
    result has ``torch.channels_last`` strides (:func:`normalize_output`); the values do not change.
    """
    check_normalize_args(images, offsets, mirror, out_h, out_w, mean, std, dtype)
    n, h, w, c = images.shape
    _check_crop_offsets(offsets, h, w, out_h, out_w)
    out = normalize_output(n, c, out_h, out_w, dtype, images.device, channels_last)
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(c, 1, 1)
    for i in range(n):
        top, left = int(offsets[i, 0]), int(offsets[i, 1])
        x = images[i, top : top + out_h, left : left + out_w, :].permute(2, 0, 1).to(torch.float32)
        if bool(mirror[i]):
            x = x.flip(-1)
        out[i] = ((x / 255.0 - m) / s).to(dtype)
    return out


def normalize_output(
    n: int, c: int, out_h: int, out_w: int, dtype: torch.dtype, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """The uninitialised ``[n,c,out_h,out_w]`` result of normalize_images: NCHW-contiguous, or
    with ``torch.channels_last`` strides ``(out_h*out_w*c, 1, out_w*c, c)``, exactly as the C++
    kernels allocate it (also for c == 1 or 1x1 crops, where both layouts are "contiguous")."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((n, c, out_h, out_w), dtype=dtype, device=device, memory_format=memory_format)


def pooled_rows(features: torch.Tensor, pooling: str, l2_normalize: bool) -> torch.Tensor:
    """features -> float32 rows ``[N, D_row]`` before quantisation.

    ``[N,C,H,W]``: avg / max over H*W -> ``[N,C]``; none -> tokens in (h, w) order,
    ``[N, H*W*C]`` (each token's C channels contiguous); cls is not defined.
    ``[N,T,D]``: avg / max over T -> ``[N,D]``; cls -> token 0; none -> ``[N, T*D]``.
    ``l2_normalize`` divides each D-vector (each token for none) by max(||v||, 1e-12).
    """
    pooled_row_len(features.shape, pooling)  # checks pooling and rank
    x = features.to(torch.float32)
    if x.dim() == 4:
        n, c, h, w = x.shape
        tokens = x.reshape(n, c, h * w).transpose(1, 2)  # [N, HW, C]
    else:
        tokens = x
    if pooling == "avg":
        vecs = (
            tokens.mean(1, keepdim=True) if tokens.shape[1] else tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])
        )
    elif pooling == "max":
        vecs = tokens.amax(1, keepdim=True)
    elif pooling == "cls":
        vecs = tokens[:, :1]
    else:
        vecs = tokens
    if l2_normalize:
        vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)
    return vecs.reshape(vecs.shape[0], vecs.shape[1] * vecs.shape[2])  # not -1: N may be 0


def pooled_row_len(shape: Sequence[int], pooling: str) -> int:
    """Values per pooled row (D_row) for features of ``shape`` ``[N,C,H,W]`` or ``[N,T,D]``:
    D (C for maps), or T*D (H*W*C) for ``none``. Raises ValueError for an unknown pooling,
    another rank, or ``cls`` on maps."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
    if len(shape) == 4:
        if pooling == "cls":
            raise ValueError("pooling 'cls' needs [N,T,D] features, got [N,C,H,W]")
        _, d, h, w = shape
        tokens = h * w
    elif len(shape) == 3:
        _, tokens, d = shape
    else:
        raise ValueError(f"features must be [N,C,H,W] or [N,T,D], got {list(shape)}")
    return tokens * d if pooling == "none" else d


def quantize_rows(rows: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``[N,D]`` -> (stored ``[N,D]`` in ``dtype``, float32 scales ``[N]``).

    int8: ``scale = max|row| / 127``, or 1.0 where that is 0 (an all-zero row, or one so small
    that max/127 underflows); ``q = round_half_even(row / scale)`` clamped to [-127, 127].
    Non-finite rows: a NaN anywhere makes ``max|row|`` and so the scale NaN, an infinity makes
    it infinite; ``q`` is 0 wherever ``row / scale`` is NaN, so such a row is stored as all
    zeros with a NaN / inf scale and reads back as NaN everywhere, never as finite numbers.
    Float dtypes: a plain cast (NaN stays NaN), scale 1.0.
    """
    if dtype == torch.int8:
        amax = rows.abs().amax(1) if rows.shape[1] else rows.new_zeros(rows.shape[0])
        scale = amax / 127.0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(rows / scale[:, None]).clamp_(-127, 127)
        q = torch.where(q.isnan(), torch.zeros_like(q), q).to(torch.int8)  # never NaN -> int8
        return q, scale
    return rows.to(dtype), torch.ones(rows.shape[0], dtype=torch.float32, device=rows.device)


def pool_quantize_scatter(
    features: torch.Tensor,
    cache: torch.Tensor,
    scales: torch.Tensor,
    rows: torch.Tensor,
    pooling: str,
    l2_normalize: bool,
) -> None:
    """Pool, normalise and quantise ``features`` and write them into ``cache[rows[n]]`` and
    ``scales[rows[n]]`` in place. Where a row repeats in ``rows``, its last occurrence wins.
    """
    values = pooled_rows(features, pooling, l2_normalize)
    check_scatter_args(values.shape[0], values.shape[1], values.device, cache, scales, rows)
    _check_rows_range(rows, cache.shape[0])
    q, scale = quantize_rows(values, cache.dtype)
    winners = last_occurrence(rows)
    cache[rows[winners]] = q[winners]
    scales[rows[winners]] = scale[winners]


def gather_dequantize(
    cache: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``cache[rows] (* scales[rows] for int8)`` as ``dtype`` ``[B, D_row]``."""
    check_gather_args(cache, scales, rows, dtype)
    _check_rows_range(rows, cache.shape[0])
    picked = cache.index_select(0, rows).to(torch.float32)
    if cache.dtype == torch.int8:
        picked = picked * scales.index_select(0, rows)[:, None]
    return picked.to(dtype)


# ------------------------------------------------------------------ shared checks
def last_occurrence(rows: torch.Tensor) -> torch.Tensor:
    """Indices n such that rows[n] does not appear again later in ``rows``."""
    if rows.numel() == 0:
        return rows.new_zeros(0)
    order = torch.sort(rows, stable=True)
    sorted_rows, perm = order.values, order.indices
    last = torch.ones_like(sorted_rows, dtype=torch.bool)
    last[:-1] = sorted_rows[1:] != sorted_rows[:-1]
    return perm[last]


# The check_*_args functions look at metadata only (dtypes, shapes, devices), so the fake
# implementations that torch.compile traces with (tlengine.kernels) run them too; the checks
# that read values (row indices, crop offsets) follow them in the ops above.
def _check_output_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"output dtype must be float32, float16 or bfloat16, got {dtype}")


def _check_rows_meta(rows: torch.Tensor, device: torch.device) -> None:
    if rows.dtype != torch.int64 or rows.dim() != 1:
        raise ValueError(f"rows must be a 1-D int64 tensor, got {rows.dtype} {list(rows.shape)}")
    if rows.device != device:
        raise ValueError(f"rows are on {rows.device} but the cache is on {device}")


def _check_rows_range(rows: torch.Tensor, num_rows: int) -> None:
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_rows):
        raise IndexError(f"rows must be in [0, {num_rows}), got values in [{int(rows.min())}, {int(rows.max())}]")


def check_scatter_args(
    num_values: int, row_len: int, device: torch.device, cache: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor
) -> None:
    """pool_quantize_scatter: ``num_values`` pooled rows of ``row_len`` values on ``device``."""
    if cache.dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {cache.dtype}")
    if cache.dim() != 2 or row_len != cache.shape[1]:
        raise ValueError(
            f"pooled rows have {row_len} values but cache rows have "
            f"{cache.shape[1] if cache.dim() == 2 else list(cache.shape)}"
        )
    if scales.dtype != torch.float32 or scales.shape != (cache.shape[0],):
        raise ValueError(f"scales must be float32 [{cache.shape[0]}], got {scales.dtype} {list(scales.shape)}")
    if cache.shape[0] > 1 and cache.stride(0) < row_len:  # rows may be strided, not shared (expanded)
        raise ValueError(
            f"cache rows must not overlap (row stride >= row length), got strides {list(cache.stride())} "
            f"for rows of {row_len}"
        )
    if rows.dim() == 1 and num_values != rows.shape[0]:  # other ranks: _check_rows_meta says so
        raise ValueError(f"{num_values} feature rows but {rows.shape[0]} row indices")
    if device != cache.device:
        raise ValueError(f"features are on {device} but the cache is on {cache.device}")
    _check_rows_meta(rows, cache.device)


def check_gather_args(cache: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype) -> None:
    """gather_dequantize."""
    if cache.dtype not in CACHE_DTYPES or cache.dim() != 2:
        raise ValueError(f"cache must be 2-D of {CACHE_DTYPES}, got {cache.dtype} {list(cache.shape)}")
    if scales.dtype != torch.float32 or scales.shape != (cache.shape[0],):
        raise ValueError(f"scales must be float32 [{cache.shape[0]}], got {scales.dtype} {list(scales.shape)}")
    _check_rows_meta(rows, cache.device)
    _check_output_dtype(dtype)


def check_normalize_args(
    images: torch.Tensor,
    offsets: torch.Tensor,
    mirror: torch.Tensor,
    out_h: int,
    out_w: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype,
) -> None:
    """normalize_images."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} {list(images.shape)}")
    n, h, w, c = images.shape
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need {c} values (one per channel), got {len(mean)} and {len(std)}")
    if any(s == 0 for s in std):
        raise ValueError("std values must be non-zero")
    if offsets.dtype != torch.int64 or offsets.shape != (n, 2):
        raise ValueError(f"offsets must be int64 [{n},2], got {offsets.dtype} {list(offsets.shape)}")
    if mirror.dtype != torch.bool or mirror.shape != (n,):
        raise ValueError(f"mirror must be bool [{n}], got {mirror.dtype} {list(mirror.shape)}")
    if offsets.device != images.device or mirror.device != images.device:
        raise ValueError("images, offsets and mirror must be on the same device")
    if out_h <= 0 or out_w <= 0 or out_h > h or out_w > w:
        raise ValueError(f"crop {out_h}x{out_w} does not fit images of {h}x{w}")
    _check_output_dtype(dtype)


def _check_crop_offsets(offsets: torch.Tensor, h: int, w: int, out_h: int, out_w: int) -> None:
    if offsets.numel():
        tops, lefts = offsets[:, 0], offsets[:, 1]
        if int(tops.min()) < 0 or int(lefts.min()) < 0 or int(tops.max()) > h - out_h or int(lefts.max()) > w - out_w:
            raise IndexError(f"crop offsets must keep a {out_h}x{out_w} window inside {h}x{w} images")
