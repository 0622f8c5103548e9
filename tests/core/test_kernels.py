"""Fused ops (torch.ops.tlengine.*, C++ / CUDA) against the pure-PyTorch reference.

Inputs are built so that every sum either side forms is exact whatever its order (small
multiples of 1/8 whose means over tokens are multiples of 1/8 too): pooling, L2 and int8
results must then be bit-identical, not merely close. normalize_images differs from the
reference by float rounding only (common.h folds (x/255 - mean)/std into one multiply-add),
so it is checked to an ulp bound.

The extension must build here (a compiler is required): these tests fail rather than skip
when it does not. CUDA tests (marker ``cuda``) need a GPU; the slow CUDA *compile* test
needs only nvcc. The CUDA tests of pool_quantize_scatter and gather_dequantize are in
test_kernels_cuda.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tlengine.kernels as K
import torch
from tlengine.kernels import build
from tlengine.kernels import reference as R
from torch._subclasses.fake_tensor import FakeTensorMode

OPS = torch.ops.tlengine
CUDA = torch.cuda.is_available()
MEAN3, STD3 = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture(scope="module", autouse=True)
def extension():
    assert K.extension_available(), f"the tlengine extension did not load: {K.status()['error']}"
    return build.load_extension()


# ------------------------------------------------------------------ inputs
def exact_tokens(n: int, t: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """float32 [n, t, d] of k/8 (small ints k) whose sums over t are multiples of t/8."""
    k = torch.randint(-8, 9, (n, t, d), generator=gen)
    k[:, 0] -= k.sum(1) % t
    return k.float() / 8


def arrange(tokens: torch.Tensor, layout: str, hw: tuple[int, int] | None, dtype: torch.dtype, device="cpu"):
    """float32 tokens [N, T, D] -> features in one of the memory layouts the kernels handle
    differently, as ``dtype`` on ``device``. The views are made on ``device`` itself (moving a
    strided tensor to a GPU would make it contiguous and test the contiguous path again).

    4-D layouts ([N, C, H, W] with C = D and ``hw`` = (H, W), H*W = T): "nchw", "channels_last",
    "nchw_strided" (every other channel of a wider map: neither layout). 3-D ([N, T, D]): "ntd",
    "ntd_transposed" ([N, D, T] memory viewed as [N, T, D]: channel-major), "ntd_strided" (a
    column slice: neither layout).
    """
    x = tokens.to(device=device, dtype=dtype)
    n, t, d = x.shape
    if layout in ("nchw", "channels_last", "nchw_strided"):
        assert hw is not None and hw[0] * hw[1] == t
        out = x.transpose(1, 2).reshape(n, d, *hw).contiguous()
        if layout == "channels_last":
            out = out.contiguous(memory_format=torch.channels_last)
        elif layout == "nchw_strided":
            wide = torch.zeros(n, 2 * d, *hw, dtype=dtype, device=device)
            wide[:, ::2] = out
            out = wide[:, ::2]
    elif layout == "ntd":
        out = x
    elif layout == "ntd_transposed":
        out = x.transpose(1, 2).contiguous().transpose(1, 2)
    else:
        assert layout == "ntd_strided", layout
        wide = torch.zeros(n, t, d + 3, dtype=dtype, device=device)
        wide[:, :, 1 : d + 1] = x
        out = wide[:, :, 1 : d + 1]
    assert out.device == x.device
    if layout not in ("nchw", "ntd") and n > 1 and t > 1 and d > 1:
        assert not out.is_contiguous(), layout  # really the strided path
    return out


def make_features(
    layout: str,
    n: int,
    a: int,
    b: int,
    c: int | None,
    dtype: torch.dtype,
    gen: torch.Generator,
    device="cpu",
) -> torch.Tensor:
    """Exact-valued features (exact_tokens) in ``layout`` (see arrange), built on ``device``.

    4-D layouts: shape [n, a, b, c] (N, C, H, W); 3-D: [n, a, b] (N, T, D).
    """
    if c is not None:
        return arrange(exact_tokens(n, b * c, a, gen), layout, (b, c), dtype, device)
    return arrange(exact_tokens(n, a, b, gen), layout, None, dtype, device)


def features_of(
    layout: str, size: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, device="cpu"
) -> torch.Tensor:
    """make_features for a size (N, C, H, W) or (N, T, D)."""
    return make_features(layout, *size, *(() if len(size) == 4 else (None,)), dtype, gen, device)


def row_len(features: torch.Tensor, pooling: str) -> int:
    if pooling == "none":
        return (
            features[0].numel()
            if features.shape[0]
            else (features.shape[1] * features.shape[2] * (features.shape[3] if features.dim() == 4 else 1))
        )
    return features.shape[1] if features.dim() == 4 else features.shape[2]


def make_rows(n: int, num_rows: int, gen: torch.Generator) -> torch.Tensor:
    rows = torch.randperm(num_rows, generator=gen)[:n]
    if n >= 3:
        rows[-1] = rows[0]  # a repeated row: the last occurrence must win
        rows[1] = rows[0]
    return rows


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Distance to the next representable value of ``dtype`` above |x| (x in float32)."""
    info = torch.finfo(dtype)
    mag = x.abs().clamp_min(info.tiny)
    return torch.exp2(torch.floor(torch.log2(mag))) * info.eps


def assert_normalize_close(got: torch.Tensor, want: torch.Tensor, std: list[float], mean: list[float]) -> None:
    """Within one rounding of the output dtype, plus the float32 rounding the reordered
    arithmetic may add (a few ulp of the largest intermediate, |x/255/std| + |mean/std|)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    slack = 4 * torch.finfo(torch.float32).eps * max((1 + abs(m)) / abs(s) for m, s in zip(mean, std))
    g, w = got.float(), want.float()
    bound = (ulp(w, got.dtype) if got.dtype != torch.float32 else 0) + slack
    assert bool(((g - w).abs() <= bound).all()), f"max diff {(g - w).abs().max().item()}"


# ------------------------------------------------------------------ pool_quantize_scatter
LAYOUTS_4D = ["nchw", "channels_last", "nchw_strided"]
LAYOUTS_3D = ["ntd", "ntd_transposed", "ntd_strided"]
SIZES_4D = [(5, 7, 3, 3), (1, 13, 1, 1), (4, 3, 5, 7), (6, 40, 2, 2), (0, 3, 2, 2)]  # N, C, H, W
SIZES_3D = [(5, 6, 13), (1, 1, 7), (4, 17, 3), (6, 9, 40), (0, 2, 3)]  # N, T, D


def run_scatter(features, cache_dtype, pooling, l2, num_rows, gen, device="cpu"):
    d = row_len(features, pooling)
    rows = make_rows(features.shape[0], num_rows, gen)
    init = torch.randn(num_rows, d, generator=gen)
    init_cache = (init * 20).to(torch.int8) if cache_dtype == torch.int8 else init.to(cache_dtype)
    init_scales = torch.rand(num_rows, generator=gen)
    want_cache, want_scales = init_cache.clone(), init_scales.clone()
    R.pool_quantize_scatter(features, want_cache, want_scales, rows, pooling, l2)
    cache, scales = init_cache.to(device), init_scales.to(device)
    OPS.pool_quantize_scatter(features.to(device), cache, scales, rows.to(device), pooling, l2)
    return cache.cpu(), scales.cpu(), want_cache, want_scales


@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS_4D + LAYOUTS_3D)
def test_pool_quantize_scatter_matches_reference(layout, cache_dtype):
    gen = torch.Generator().manual_seed(0)
    sizes = SIZES_4D if layout in LAYOUTS_4D else SIZES_3D
    poolings = [p for p in R.POOLINGS if not (p == "cls" and layout in LAYOUTS_4D)]
    for size in sizes:
        features = features_of(layout, size, torch.float32, gen)
        for pooling in poolings:
            for l2 in (False, True):
                got, got_s, want, want_s = run_scatter(features, cache_dtype, pooling, l2, 11, gen)
                case = f"{layout} {list(features.shape)} {pooling} l2={l2}"
                assert torch.equal(got, want), f"cache differs: {case}"
                assert torch.equal(got_s, want_s), f"scales differ: {case}"


@pytest.mark.parametrize("feature_dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_feature_dtypes(feature_dtype, cache_dtype):
    gen = torch.Generator().manual_seed(1)
    for layout, size in [
        ("nchw", (3, 7, 3, 3)),
        ("nchw", (2, 17, 3, 4)),
        ("channels_last", (2, 13, 2, 2)),
        ("ntd", (3, 5, 13)),
        ("ntd_transposed", (2, 4, 7)),
    ]:
        features = features_of(layout, size, feature_dtype, gen)
        for pooling in R.POOLINGS:
            if pooling == "cls" and features.dim() == 4:
                continue
            for l2 in (False, True):
                got, got_s, want, want_s = run_scatter(features, cache_dtype, pooling, l2, 6, gen)
                assert torch.equal(got, want) and torch.equal(got_s, want_s), f"{layout} {pooling} l2={l2}"


def test_pool_quantize_scatter_large_and_realistic():
    """Sizes where the kernels' blocking and vector loops have full and partial blocks."""
    gen = torch.Generator().manual_seed(2)
    for layout, size in [("nchw", (4, 70, 7, 7)), ("ntd", (3, 20, 100)), ("channels_last", (2, 33, 4, 4))]:
        features = features_of(layout, size, torch.float32, gen)
        for pooling in ("avg", "max", "none"):
            for cache_dtype in (torch.float32, torch.int8):
                got, got_s, want, want_s = run_scatter(features, cache_dtype, pooling, True, 9, gen)
                assert torch.equal(got, want) and torch.equal(got_s, want_s), f"{layout} {pooling}"


@pytest.mark.parametrize("layout", ["nchw", "ntd", "ntd_transposed"])
def test_pool_quantize_scatter_propagates_nan(layout):
    """A NaN anywhere in a channel makes its avg and max NaN (as torch.mean / torch.amax),
    whether it sits in a vector block, the tail of a plane, or the first element."""
    gen = torch.Generator().manual_seed(5)
    size = (5, 20, 7, 7) if layout == "nchw" else (5, 49, 20)  # samples 0 and 1 lose their row to sample 4
    features = features_of(layout, size, torch.float32, gen).clone()
    maps = features.dim() == 4
    for sample, channel, token in [(2, 3, 20), (2, 12, 48), (3, 0, 0), (4, 19, 8)]:
        if maps:
            features[sample, channel, token // 7, token % 7] = float("nan")
        else:
            features[sample, token, channel] = float("nan")
    for pooling in ("avg", "max"):
        got, _, want, _ = run_scatter(features, torch.float32, pooling, False, 7, gen)
        assert torch.equal(got.isnan(), want.isnan()), f"{layout} {pooling}: NaN positions differ"
        assert int(want.isnan().sum()) == 4
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


def test_pool_quantize_scatter_random_floats_close():
    """Arbitrary floats: sums differ from the reference by rounding only."""
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(6, 30, 5, 5, generator=gen)
    rows = torch.arange(6)
    for pooling in ("avg", "max", "none"):
        for l2 in (False, True):
            got, got_s = torch.zeros(6, row_len(features, pooling)), torch.zeros(6)
            want, want_s = got.clone(), got_s.clone()
            OPS.pool_quantize_scatter(features, got, got_s, rows, pooling, l2)
            R.pool_quantize_scatter(features, want, want_s, rows, pooling, l2)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # summation order differs


def test_pool_quantize_scatter_row_slice_cache_and_front():
    gen = torch.Generator().manual_seed(4)
    features = make_features("ntd", 4, 3, 5, None, torch.float32, gen)
    big = torch.zeros(20, 5)
    cache = big[::2]  # strided rows, contiguous within a row
    scales = torch.zeros(20)[::2]
    K.pool_quantize_scatter(features, cache, scales, torch.tensor([1, 3, 1, 9]), "avg", True)
    want, want_s = torch.zeros(10, 5), torch.zeros(10)
    R.pool_quantize_scatter(features, want, want_s, torch.tensor([1, 3, 1, 9]), "avg", True)
    assert torch.equal(cache, want) and torch.equal(scales, want_s)
    assert torch.equal(big[1::2], torch.zeros(10, 5))


@pytest.mark.parametrize("pooling", R.POOLINGS)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_row_strided_cache(cache_dtype, pooling):
    """Every other row of a wider table (row stride > row length, base not at the table's
    start): written in place, nothing else in the table touched."""
    gen = torch.Generator().manual_seed(14)
    features = make_features("ntd_transposed", 5, 4, 6, None, torch.float32, gen)
    d = row_len(features, pooling)
    table = torch.full((16, d + 3), 7).to(cache_dtype)
    cache = table[1::2, 2 : d + 2]  # rows 2 * (d + 3) apart, starting 1 row + 2 values in
    scales = torch.full((16,), 5.0)[::2]
    rows = torch.tensor([6, 0, 3, 0, 7])
    assert not cache.is_contiguous() and cache.stride(1) == 1 and cache.stride(0) > d
    want, want_s = cache.clone(), scales.clone()
    R.pool_quantize_scatter(features, want, want_s, rows, pooling, True)
    before = table.clone()
    OPS.pool_quantize_scatter(features, cache, scales, rows, pooling, True)
    assert torch.equal(cache, want) and torch.equal(scales, want_s)
    untouched = torch.ones_like(table, dtype=torch.bool)
    untouched[1::2, 2 : d + 2] = False
    assert torch.equal(table[untouched], before[untouched])


def test_pool_quantize_scatter_rejects_overlapping_cache_rows():
    """An expanded cache (rows sharing memory) would race: the ops, the front, the reference
    and the fake all refuse it with the same ValueError."""
    cache = torch.zeros(1, 4).expand(5, 4)
    args = _scatter_args(cache=cache)
    raises_like_reference(ValueError, K.pool_quantize_scatter, R.pool_quantize_scatter, *args)
    with pytest.raises(ValueError, match="overlap"):
        OPS.pool_quantize_scatter(*args)
    with FakeTensorMode() as mode:  # the fake impl, as torch.compile traces it
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        assert fake[1].stride() == (0, 1)
        with pytest.raises(ValueError, match="overlap"):
            OPS.pool_quantize_scatter(*fake)


def special_tokens() -> torch.Tensor:
    """[6, T=5, D=7] float32: one ordinary sample, then an all-zero one, one with a NaN, one
    with +inf, one with a channel of -inf, and one so small that max/127 underflows to 0. The
    NaN and infs sit in token 0 so every pooling (cls included) sees them."""
    gen = torch.Generator().manual_seed(15)
    x = exact_tokens(6, 5, 7, gen)
    x[1] = 0.0
    x[2, 0, 3] = float("nan")
    x[3, 0, 6] = float("inf")
    x[4, :, 0] = float("-inf")
    x[5] = 1e-44  # subnormal: 1e-44 / 127 == 0 in float32
    return x


def special_features(layout: str) -> torch.Tensor:
    return arrange(special_tokens(), layout, (5, 1) if layout in LAYOUTS_4D else None, torch.float32)


def assert_same_nan(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype, what
    if got.is_floating_point():
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=what)
    else:
        assert torch.equal(got, want), what


@pytest.mark.parametrize("layout", ["nchw", "ntd", "ntd_transposed"])
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_nan_inf_zero_rows(layout, cache_dtype):
    """NaN, inf, all-zero and underflowing rows: the kernel matches the reference bit for bit
    (NaN positions included), which defines them (reference.quantize_rows)."""
    features = special_features(layout)
    rows = torch.arange(6)
    for pooling in R.POOLINGS:
        if pooling == "cls" and features.dim() == 4:
            continue
        for l2 in (False, True):
            d = row_len(features, pooling)
            got, got_s = torch.full((6, d), 3).to(cache_dtype), torch.full((6,), 2.0)
            want, want_s = got.clone(), got_s.clone()
            OPS.pool_quantize_scatter(features, got, got_s, rows, pooling, l2)
            R.pool_quantize_scatter(features, want, want_s, rows, pooling, l2)
            case = f"{layout} {pooling} l2={l2}"
            assert_same_nan(got, want, "cache: " + case)
            assert_same_nan(got_s, want_s, "scales: " + case)


def test_int8_rows_with_nan_inf_or_zeros_are_defined():
    """The int8 semantics, spelled out: an all-zero or underflowing row has scale 1 and codes
    0; a row with a NaN has a NaN scale, one with an inf an inf scale, both with codes 0, and
    both read back as NaN everywhere (never as finite numbers). Float caches keep NaN / inf."""
    features = special_features("ntd")
    for pooling in ("none", "cls", "max"):
        d = row_len(features, pooling)
        for impl in (OPS.pool_quantize_scatter, R.pool_quantize_scatter):
            cache, scales = torch.full((6, d), 9, dtype=torch.int8), torch.zeros(6)
            impl(features, cache, scales, torch.arange(6), pooling, False)
            assert cache[0].abs().max() == 127 and scales[0] > 0
            assert not cache[1:].any(), pooling  # every code 0
            assert scales[1] == 1 and scales[5] == 1
            assert scales[2].isnan() and scales[3] == float("inf") and scales[4] == float("inf")
            out = OPS.gather_dequantize(cache, scales, torch.arange(6), torch.float32)
            assert out[2:5].isnan().all() and torch.equal(out[[1, 5]], torch.zeros(2, d))
            want = R.gather_dequantize(cache, scales, torch.arange(6))
            torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
        floats, fscales = torch.zeros(6, d), torch.zeros(6)
        OPS.pool_quantize_scatter(features, floats, fscales, torch.arange(6), pooling, False)
        assert floats[2].isnan().any() and floats[3].isposinf().any() and floats[4].isneginf().any()
        assert torch.equal(fscales, torch.ones(6))


def test_reference_quantize_rows_special_values():
    rows = torch.tensor(
        [[0.0, 0.0, 0.0], [1e-44, -1e-44, 0.0], [float("nan"), 1.0, 2.0], [float("inf"), -1.0, 0.0], [-2.0, 1.0, 0.5]]
    )
    q, scale = R.quantize_rows(rows, torch.int8)
    assert q.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [-127, 64, 32]]
    assert scale[:2].tolist() == [1.0, 1.0] and scale[2].isnan() and scale[3].isposinf()
    assert scale[4] == torch.tensor(2.0) / 127


# ------------------------------------------------------------------ gather_dequantize
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_gather_dequantize_matches_reference(cache_dtype, out_dtype):
    gen = torch.Generator().manual_seed(5)
    for num_rows, dim, batch in [(50, 13, 7), (9, 1, 3), (30, 70, 30), (4, 8, 0), (1, 3, 1)]:
        if cache_dtype == torch.int8:
            cache = torch.randint(-127, 128, (num_rows, dim), generator=gen, dtype=torch.int8)
        else:
            cache = (torch.randn(num_rows, dim, generator=gen) * 100).to(cache_dtype)
        scales = torch.rand(num_rows, generator=gen) / 7
        rows = torch.randint(0, num_rows, (batch,), generator=gen)
        want = R.gather_dequantize(cache, scales, rows, out_dtype)
        for c, s in [
            (cache, scales),
            (torch.cat([cache, cache]).view(2, num_rows, dim)[1], scales),
            (cache.repeat(1, 2)[:, :dim], scales.repeat_interleave(2)[::2]),
        ]:
            got = OPS.gather_dequantize(c, s, rows, out_dtype)
            assert got.dtype == out_dtype and torch.equal(got, want), f"{num_rows}x{dim} batch {batch}"


def test_gather_dequantize_front_and_transposed_cache():
    cache = torch.randn(8, 5).t().contiguous().t()  # column-major: the kernel copies it
    rows = torch.tensor([7, 0, 7])
    assert torch.equal(K.gather_dequantize(cache, torch.ones(8), rows), cache[rows])


# ------------------------------------------------------------------ normalize_images
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels", [3, 1, 4, 5])
def test_normalize_images_matches_reference(channels, out_dtype):
    gen = torch.Generator().manual_seed(6)
    mean = MEAN3 if channels == 3 else [0.1 * (c + 1) for c in range(channels)]
    std = STD3 if channels == 3 else [0.2 + 0.05 * c for c in range(channels)]
    for n, h, w, oh, ow in [
        (4, 20, 30, 16, 17),
        (1, 9, 9, 9, 9),
        (3, 40, 33, 1, 1),
        (0, 8, 8, 4, 4),
        (2, 12, 80, 7, 67),
    ]:
        images, offsets, mirror, _, _ = normalize_inputs(n, h, w, oh, ow, channels, gen)
        want = R.normalize_images(images, offsets, mirror, oh, ow, mean, std, out_dtype)
        got = OPS.normalize_images(images, offsets, mirror, oh, ow, mean, std, out_dtype)
        assert_normalize_close(got, want, std, mean)


def test_normalize_images_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(7)
    nchw = torch.randint(0, 256, (6, 3, 24, 20), generator=gen, dtype=torch.uint8)
    images = nchw.permute(0, 2, 3, 1)[::2]  # an NHWC view of NCHW memory, every other image
    offsets = torch.tensor([[0, 5, 1, 2, 3, 3], [4, 0, 2, 1, 0, 4]]).t()[::2]  # strided [3, 2]
    mirror = torch.tensor([True, True, False, False, True, False])[::2]
    want = R.normalize_images(images, offsets, mirror, 20, 16, MEAN3, STD3)
    got = K.normalize_images(images, offsets, mirror, 20, 16, MEAN3, STD3)
    assert_normalize_close(got, want, STD3, MEAN3)


def normalize_inputs(n, h, w, oh, ow, channels, gen):
    """uint8 NHWC images, in-range crop offsets, mirror flags (both values present when n >= 2) and
    per-channel distinct mean / std, so a channel mix-up changes the result."""
    images = torch.randint(0, 256, (n, h, w, channels), generator=gen, dtype=torch.uint8)
    offsets = torch.stack(
        [torch.randint(0, h - oh + 1, (n,), generator=gen), torch.randint(0, w - ow + 1, (n,), generator=gen)], 1
    )
    mirror = torch.rand(n, generator=gen) < 0.5
    if n >= 2:
        mirror[0], mirror[1] = True, False
    mean = [0.1 + 0.03 * c for c in range(channels)]
    std = [0.2 + 0.05 * c for c in range(channels)]
    return images, offsets, mirror, mean, std


def channels_last_strides(shape):
    return torch.empty(shape, memory_format=torch.channels_last).stride()


# widths around the 16-pixel blocks of the vectorised rows (tails, a single block, 1 pixel)
NORMALIZE_SHAPES = [(4, 20, 40, 16, 37), (2, 9, 17, 9, 16), (3, 40, 33, 1, 1), (0, 8, 8, 4, 4), (2, 12, 80, 7, 67)]


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels", [1, 3, 4, 20])
def test_normalize_images_channels_last(channels, out_dtype):
    """channels_last=True: channels-last strides, the reference's values, and bit for bit the
    values of the NCHW result (the same arithmetic in another order)."""
    gen = torch.Generator().manual_seed(13)
    for n, h, w, oh, ow in NORMALIZE_SHAPES:
        images, offsets, mirror, mean, std = normalize_inputs(n, h, w, oh, ow, channels, gen)
        args = (images, offsets, mirror, oh, ow, mean, std, out_dtype)
        want = R.normalize_images(*args, channels_last=True)
        got = OPS.normalize_images(*args, channels_last=True)
        front = K.normalize_images(*args, channels_last=True)
        nchw = OPS.normalize_images(*args)
        cl_strides = channels_last_strides((n, channels, oh, ow))
        assert got.stride() == cl_strides and want.stride() == cl_strides and front.stride() == cl_strides
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert nchw.is_contiguous() and nchw.stride() == torch.empty(n, channels, oh, ow).stride()
        assert_normalize_close(got, want, std, mean)
        assert_normalize_close(got, R.normalize_images(*args), std, mean)
        assert torch.equal(got, nchw) and torch.equal(front, got)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("channels", [1, 3, 4, 20])
def test_normalize_images_mirror_is_a_flip(channels, channels_last):
    """A mirrored crop is exactly the unmirrored one flipped left-right, for every width around
    the 16-pixel blocks and every dtype."""
    gen = torch.Generator().manual_seed(14)
    for ow in (1, 2, 15, 16, 17, 31, 32, 33, 48, 50):
        images, offsets, _, mean, std = normalize_inputs(3, 5, ow + 3, 4, ow, channels, gen)
        for dtype in FLOAT_DTYPES:
            args = (images, offsets)
            plain = OPS.normalize_images(
                *args, torch.zeros(3, dtype=torch.bool), 4, ow, mean, std, dtype, channels_last
            )
            flipped = OPS.normalize_images(
                *args, torch.ones(3, dtype=torch.bool), 4, ow, mean, std, dtype, channels_last
            )
            assert torch.equal(flipped, plain.flip(-1)), (ow, dtype)


def test_normalize_images_channels_last_opcheck():
    """The fake (meta) impl gives the kernel's strides for either layout, degenerate ones included
    (C = 1 and 1x1 crops, where a tensor is "contiguous" in both formats)."""
    gen = torch.Generator().manual_seed(15)
    for channels, (oh, ow) in [(3, (8, 7)), (1, (6, 8)), (4, (1, 1)), (20, (3, 5))]:
        images, offsets, mirror, mean, std = normalize_inputs(3, 10, 12, oh, ow, channels, gen)
        for dtype in FLOAT_DTYPES:
            for channels_last in (False, True):
                args = (images, offsets, mirror, oh, ow, mean, std, dtype, channels_last)
                torch.library.opcheck(OPS.normalize_images.default, args)
    meta = K.normalize_images(
        torch.empty(2, 9, 9, 3, dtype=torch.uint8, device="meta"),
        torch.empty(2, 2, dtype=torch.int64, device="meta"),
        torch.empty(2, dtype=torch.bool, device="meta"),
        5,
        6,
        MEAN3,
        STD3,
        torch.bfloat16,
        channels_last=True,
    )
    assert meta.shape == (2, 3, 5, 6) and meta.stride() == channels_last_strides((2, 3, 5, 6))


def test_normalize_images_channels_last_in_torch_compile():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(16)
    images, offsets, mirror, mean, std = normalize_inputs(4, 10, 11, 8, 9, 3, gen)

    def f(images, offsets, mirror):
        return K.normalize_images(images, offsets, mirror, 8, 9, mean, std, torch.bfloat16, channels_last=True) * 2

    got = torch.compile(f, backend="aot_eager", fullgraph=True)(images, offsets, mirror)
    assert torch.equal(got, f(images, offsets, mirror))
    assert got.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ errors
def raises_like_reference(exc, fused, ref, *args):
    """The reference, the front and the op itself all raise ``exc``."""
    with pytest.raises(exc):
        ref(*args)
    with pytest.raises(exc):
        fused(*args)


def _scatter_args(**over):
    args = dict(
        features=torch.randn(3, 4, 2, 2),
        cache=torch.zeros(5, 4),
        scales=torch.ones(5),
        rows=torch.tensor([0, 1, 4]),
        pooling="avg",
        l2_normalize=False,
    )
    args.update(over)
    return tuple(args.values())


SCATTER_ERRORS = {
    "row too large": (IndexError, dict(rows=torch.tensor([0, 1, 5]))),
    "negative row": (IndexError, dict(rows=torch.tensor([0, -1, 2]))),
    "int32 rows": (ValueError, dict(rows=torch.tensor([0, 1, 2], dtype=torch.int32))),
    "2-D rows": (ValueError, dict(rows=torch.tensor([[0, 1, 2]]))),
    "rows count": (ValueError, dict(rows=torch.tensor([0, 1]))),
    "pooling name": (ValueError, dict(pooling="mean")),
    "cls on maps": (ValueError, dict(pooling="cls")),
    "2-D features": (ValueError, dict(features=torch.randn(3, 4))),
    "cache width": (ValueError, dict(cache=torch.zeros(5, 5))),
    "cache dtype": (ValueError, dict(cache=torch.zeros(5, 4, dtype=torch.float64))),
    "scales dtype": (ValueError, dict(scales=torch.ones(5, dtype=torch.float64))),
    "scales shape": (ValueError, dict(scales=torch.ones(4))),
    "features device": (ValueError, dict(features=torch.randn(3, 4, 2, 2, device="meta"))),
    "rows device": (ValueError, dict(rows=torch.tensor([0, 1, 4], device="meta"))),
}


@pytest.mark.parametrize("case", SCATTER_ERRORS, ids=str)
def test_pool_quantize_scatter_errors(case):
    exc, over = SCATTER_ERRORS[case]
    args = _scatter_args(**over)
    raises_like_reference(exc, K.pool_quantize_scatter, R.pool_quantize_scatter, *_scatter_args(**over))
    with pytest.raises(exc):
        OPS.pool_quantize_scatter(*args)


def test_pool_quantize_scatter_rejects_column_strided_cache():
    with pytest.raises(ValueError, match="contiguous"):
        OPS.pool_quantize_scatter(*_scatter_args(cache=torch.zeros(4, 5).t()))


GATHER_ERRORS = {
    "row too large": (IndexError, dict(rows=torch.tensor([5]))),
    "negative row": (IndexError, dict(rows=torch.tensor([-1]))),
    "float rows": (ValueError, dict(rows=torch.tensor([1.0]))),
    "2-D rows": (ValueError, dict(rows=torch.tensor([[1]]))),
    "cache dtype": (ValueError, dict(cache=torch.zeros(5, 4, dtype=torch.int32))),
    "1-D cache": (ValueError, dict(cache=torch.zeros(5))),
    "scales shape": (ValueError, dict(scales=torch.ones(6))),
    "output dtype": (ValueError, dict(dtype=torch.int64)),
    "rows device": (ValueError, dict(rows=torch.tensor([1], device="meta"))),
}


@pytest.mark.parametrize("case", GATHER_ERRORS, ids=str)
def test_gather_dequantize_errors(case):
    exc, over = GATHER_ERRORS[case]
    args = dict(cache=torch.zeros(5, 4), scales=torch.ones(5), rows=torch.tensor([0, 4]), dtype=torch.float32)
    args = tuple({**args, **over}.values())
    raises_like_reference(exc, K.gather_dequantize, R.gather_dequantize, *args)
    with pytest.raises(exc):
        OPS.gather_dequantize(*args)


NORMALIZE_ERRORS = {
    "offset past bottom": (IndexError, dict(offsets=torch.tensor([[0, 0], [5, 0]]))),
    "offset past right": (IndexError, dict(offsets=torch.tensor([[0, 3], [0, 0]]))),
    "negative offset": (IndexError, dict(offsets=torch.tensor([[0, 0], [-1, 0]]))),
    "float images": (ValueError, dict(images=torch.zeros(2, 8, 6, 3))),
    "3-D images": (ValueError, dict(images=torch.zeros(8, 6, 3, dtype=torch.uint8))),
    "int32 offsets": (ValueError, dict(offsets=torch.zeros(2, 2, dtype=torch.int32))),
    "offsets shape": (ValueError, dict(offsets=torch.zeros(3, 2, dtype=torch.int64))),
    "mirror dtype": (ValueError, dict(mirror=torch.zeros(2, dtype=torch.uint8))),
    "mean length": (ValueError, dict(mean=[0.5, 0.5])),
    "zero std": (ValueError, dict(std=[0.2, 0.0, 0.2])),
    "crop too big": (ValueError, dict(out_h=9)),
    "empty crop": (ValueError, dict(out_w=0)),
    "output dtype": (ValueError, dict(dtype=torch.float64)),
    "mirror device": (ValueError, dict(mirror=torch.zeros(2, dtype=torch.bool, device="meta"))),
}


@pytest.mark.parametrize("case", NORMALIZE_ERRORS, ids=str)
def test_normalize_images_errors(case):
    exc, over = NORMALIZE_ERRORS[case]
    args = dict(
        images=torch.zeros(2, 8, 6, 3, dtype=torch.uint8),
        offsets=torch.zeros(2, 2, dtype=torch.int64),
        mirror=torch.zeros(2, dtype=torch.bool),
        out_h=4,
        out_w=4,
        mean=[0.5] * 3,
        std=[0.2] * 3,
        dtype=torch.float32,
    )
    args = tuple({**args, **over}.values())
    raises_like_reference(exc, K.normalize_images, R.normalize_images, *args)
    with pytest.raises(exc):
        OPS.normalize_images(*args)


# ------------------------------------------------------------------ dispatcher integration
def test_opcheck():
    gen = torch.Generator().manual_seed(8)
    images = torch.randint(0, 256, (3, 10, 12, 3), generator=gen, dtype=torch.uint8)
    offsets, mirror = torch.tensor([[0, 0], [2, 4], [1, 1]]), torch.tensor([True, False, True])
    for dtype in FLOAT_DTYPES:
        torch.library.opcheck(OPS.normalize_images.default, (images, offsets, mirror, 8, 8, MEAN3, STD3, dtype))
    features = make_features("nchw", 4, 6, 2, 2, torch.float32, gen)
    for cache_dtype, pooling in [(torch.float32, "avg"), (torch.int8, "none"), (torch.bfloat16, "max")]:
        cache = torch.zeros(7, row_len(features, pooling), dtype=cache_dtype)
        torch.library.opcheck(
            OPS.pool_quantize_scatter.default,
            (features, cache, torch.ones(7), torch.tensor([6, 0, 2, 0]), pooling, True),
        )
    for cache_dtype in R.CACHE_DTYPES:
        cache = torch.ones(7, 5, dtype=cache_dtype)
        torch.library.opcheck(
            OPS.gather_dequantize.default, (cache, torch.rand(7), torch.tensor([1, 6, 1]), torch.float16)
        )


def test_meta_tensors_give_shapes():
    out = K.gather_dequantize(
        torch.empty(9, 4, device="meta"),
        torch.empty(9, device="meta"),
        torch.empty(3, dtype=torch.int64, device="meta"),
        torch.bfloat16,
    )
    assert out.shape == (3, 4) and out.dtype == torch.bfloat16 and out.device.type == "meta"
    out = K.normalize_images(
        torch.empty(2, 9, 9, 3, dtype=torch.uint8, device="meta"),
        torch.empty(2, 2, dtype=torch.int64, device="meta"),
        torch.empty(2, dtype=torch.bool, device="meta"),
        5,
        6,
        MEAN3,
        STD3,
    )
    assert out.shape == (2, 3, 5, 6)


def _cache_then_read(images, offsets, mirror, cache, scales, rows):
    x = K.normalize_images(images, offsets, mirror, 6, 6, MEAN3, STD3, torch.float32)
    K.pool_quantize_scatter(x, cache, scales, rows, "avg", True)
    return K.gather_dequantize(cache, scales, rows, torch.float32) * 2


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_ops_inside_torch_compile(backend):
    """aot_eager traces through the fake impls in < 1 s; inductor also generates code (~20 s on 2 cores)."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(9)
    images = torch.randint(0, 256, (4, 8, 8, 3), generator=gen, dtype=torch.uint8)
    offsets, mirror = torch.randint(0, 3, (4, 2), generator=gen), torch.tensor([True, False, False, True])
    rows = torch.tensor([5, 1, 2, 1])
    eager_cache, eager_scales = torch.zeros(8, 3, dtype=torch.int8), torch.zeros(8)
    want = _cache_then_read(images, offsets, mirror, eager_cache, eager_scales, rows)
    compiled = torch.compile(_cache_then_read, backend=backend, fullgraph=True)
    cache, scales = torch.zeros(8, 3, dtype=torch.int8), torch.zeros(8)
    got = compiled(images, offsets, mirror, cache, scales, rows)
    assert torch.equal(got, want) and torch.equal(cache, eager_cache) and torch.equal(scales, eager_scales)


# ------------------------------------------------------------------ loading
def test_loading_is_cached_and_reported():
    module = build.load_extension()
    assert module is build.load_extension()
    info = K.status()
    assert info["built"] and info["source"] in ("aot", "jit") and info["error"] is None
    assert set(info["kernels"]["gather_dequantize"]) >= {"cpu", "meta"}
    assert module.has_cuda() == info["cuda_compiled"]


def test_extensions_folder_is_independent_of_the_feature_cache_dir(monkeypatch, tmp_path):
    """Moving the feature caches (TLENGINE_CACHE_DIR) must not move, and so rebuild, the kernels."""
    monkeypatch.delenv("TLENGINE_EXTENSIONS_DIR", raising=False)
    default = build.extensions_root()
    assert default == Path.home() / ".cache" / "tlengine" / "extensions"
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(tmp_path / "features-elsewhere"))
    assert build.extensions_root() == default
    monkeypatch.setenv("TLENGINE_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert build.extensions_root() == tmp_path / "ext"


def _run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


FALLBACK_CHECK = """
    import torch, tlengine.kernels as K
    from tlengine.kernels import build
    build._import_aot = lambda: None  # pretend nothing was built ahead of time
    cache, scales = torch.zeros(4, 3), torch.zeros(4)
    K.pool_quantize_scatter(torch.ones(2, 3, 2, 2), cache, scales, torch.tensor([0, 3]), "avg", False)
    out = K.gather_dequantize(cache, scales, torch.tensor([3, 1]))
    assert out.tolist() == [[1.0] * 3, [0.0] * 3], out
    assert not K.extension_available()
    print(K.status()["error"])
"""


def test_fallback_without_compiler_says_so_once(tmp_path):
    result = _run_python(
        FALLBACK_CHECK,
        {"CXX": str(tmp_path / "no-such-compiler"), "TLENGINE_NO_EXT": "", "TLENGINE_EXTENSIONS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("fused kernels unavailable") == 1, result.stderr
    assert "no C++ compiler" in result.stderr and "pure-PyTorch reference" in result.stderr


def test_no_ext_env_forces_reference_quietly(tmp_path):
    result = _run_python(FALLBACK_CHECK, {"TLENGINE_NO_EXT": "1", "TLENGINE_EXTENSIONS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "fused kernels unavailable" not in result.stderr and "TLENGINE_NO_EXT" in result.stdout


JIT_LOAD = """
    import sys
    from torch.utils import cpp_extension
    from tlengine.kernels import build
    build._import_aot = lambda: None  # the JIT build, even where an ahead-of-time one is installed
    if sys.argv[-1] == "no-ninja":
        def refuse(*args, **kwargs):
            raise RuntimeError("cpp_extension.load was called")
        cpp_extension.load = refuse
    module = build.load_extension()
    assert module is not None, build.status()["error"]
    assert build.status()["source"] == "jit"
"""


def test_finished_build_is_imported_without_ninja():
    """A build directory the build marked finished is imported directly: ninja would otherwise
    rebuild everything when the same sources sit at another path (a fresh clone)."""
    first = _run_python(JIT_LOAD, {})  # builds only if this environment has not yet
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JIT_LOAD), "no-ninja"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert "building tlengine kernels" not in again.stderr, again.stderr


CUDA_BUILD_CHECK = """
    import json, torch
    from tlengine.kernels import build
    module = build._build_jit(verbose=False, with_cuda=True)
    if module is None:
        raise SystemExit("CUDA build failed: " + str(build.status()["error"]))
    ops = ("normalize_images", "pool_quantize_scatter", "gather_dequantize")
    print(json.dumps({"has_cuda": module.has_cuda(), "kernels": {
        op: torch._C._dispatch_has_kernel_for_dispatch_key("tlengine::" + op, "CUDA") for op in ops}}))
"""


@pytest.mark.slow
def test_cuda_sources_compile(tmp_path):
    """Compiles the .cu kernels (no GPU needed) into a fresh build directory."""
    if not torch.version.cuda:
        pytest.skip("torch is not a CUDA build")
    wanted, why = build.cuda_build_wanted()
    if not wanted and "TLENGINE_BUILD_CUDA" not in why:
        pytest.skip(why)
    result = _run_python(CUDA_BUILD_CHECK, {"TLENGINE_EXTENSIONS_DIR": str(tmp_path)}, timeout=3600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "has_cuda": True,
        "kernels": {"normalize_images": True, "pool_quantize_scatter": True, "gather_dequantize": True},
    }


# ------------------------------------------------------------------ CUDA parity (needs a GPU)
# pool_quantize_scatter and gather_dequantize on CUDA: tests/core/test_kernels_cuda.py.
cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels", [3, 1, 4])
def test_cuda_normalize_images_matches_reference(channels, out_dtype):
    gen = torch.Generator().manual_seed(12)
    mean, std = [0.3] * channels, [0.25] * channels
    for n, h, w, oh, ow in [(4, 20, 30, 16, 17), (1, 9, 9, 9, 9), (0, 8, 8, 4, 4), (8, 256, 256, 224, 224)]:
        images = torch.randint(0, 256, (n, h, w, channels), generator=gen, dtype=torch.uint8)
        offsets = torch.stack(
            [torch.randint(0, h - oh + 1, (n,), generator=gen), torch.randint(0, w - ow + 1, (n,), generator=gen)], 1
        )
        mirror = torch.rand(n, generator=gen) < 0.5
        want = R.normalize_images(images, offsets, mirror, oh, ow, mean, std, out_dtype)
        got = OPS.normalize_images(images.cuda(), offsets.cuda(), mirror.cuda(), oh, ow, mean, std, out_dtype)
        assert_normalize_close(got.cpu(), want, std, mean)
