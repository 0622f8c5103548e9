"""pool_quantize_scatter and gather_dequantize on CUDA, against the pure-PyTorch reference.

Everything here needs a GPU and skips without one (marker ``cuda``); the CPU side of the same
arithmetic (common.h) is tested in test_kernels.py. Inputs are exact (test_kernels.exact_tokens),
so results must be bit-identical to the reference computed on the CPU.

Strided inputs are built on the device (test_kernels.arrange): ``.to("cuda")`` of a strided
CPU tensor would give the kernel a contiguous copy and test the contiguous path again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import tlengine.kernels as K
import torch
from test_kernels import (
    LAYOUTS_3D,
    LAYOUTS_4D,
    SIZES_3D,
    SIZES_4D,
    arrange,
    exact_tokens,
    features_of,
    make_rows,
    row_len,
)
from tlengine.cache import CacheKey, FeatureCache
from tlengine.kernels import reference as R

OPS = torch.ops.tlengine
DEV = "cuda"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@pytest.fixture(scope="module", autouse=True)
def extension():
    assert K.extension_available(), f"the tlengine extension did not load: {K.status()['error']}"
    kernels = K.status()["kernels"]
    assert "cuda" in kernels["pool_quantize_scatter"] and "cuda" in kernels["gather_dequantize"], kernels


# ------------------------------------------------------------------ helpers
def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Bit-equal values on the CPU, NaN where the other has NaN."""
    got, want = got.cpu(), want.cpu()
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.is_floating_point():
        return bool((got.isnan() == want.isnan()).all()) and torch.equal(got.nan_to_num(0), want.nan_to_num(0))
    return torch.equal(got, want)


def check_scatter(features, cache, scales, rows, pooling, l2, case=""):
    """Runs the CUDA op on (possibly strided) device tensors in place and the reference on CPU
    copies, and compares cache and scales bit for bit."""
    want, want_s = cache.cpu().clone(), scales.cpu().clone()
    R.pool_quantize_scatter(features.cpu(), want, want_s, rows.cpu(), pooling, l2)
    OPS.pool_quantize_scatter(features, cache, scales, rows, pooling, l2)
    assert same(cache, want), f"cache differs: {case}"
    assert same(scales, want_s), f"scales differ: {case}"


def fresh_cache(num_rows, d, cache_dtype, gen, device=DEV):
    init = torch.randn(num_rows, d, generator=gen)
    cache = (init * 20).to(torch.int8) if cache_dtype == torch.int8 else init.to(cache_dtype)
    return cache.to(device), torch.rand(num_rows, generator=gen).to(device)


def run_scatter(features, cache_dtype, pooling, l2, num_rows, gen, case=""):
    cache, scales = fresh_cache(num_rows, row_len(features, pooling), cache_dtype, gen, features.device)
    rows = make_rows(features.shape[0], num_rows, gen).to(features.device)
    check_scatter(features, cache, scales, rows, pooling, l2, case)


def poolings_for(features):
    return [p for p in R.POOLINGS if not (p == "cls" and features.dim() == 4)]


def channel_tokens(n: int, t: int, d: int) -> torch.Tensor:
    """[n, t, d] float32 where channel d of sample n averages to (n*d_count + d + 1) / 8, a
    different value for every (sample, channel); the tokens add +-k/8 (k = 1, 1, 2, 2, ...),
    different per token and summing to 0, so a token or channel mix-up changes the result."""
    base = (torch.arange(n * d, dtype=torch.float32).view(n, 1, d) + 1) / 8
    k = torch.arange(t) // 2 + 1
    delta = torch.where(torch.arange(t) % 2 == 0, k, -k).float() / 8
    if t % 2:
        delta[-1] = 0
    return base + delta.view(1, t, 1)


# ------------------------------------------------------------------ pool_quantize_scatter
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS_4D + LAYOUTS_3D)
def test_pool_quantize_scatter_matches_reference(layout, cache_dtype):
    gen = torch.Generator().manual_seed(10)
    sizes = SIZES_4D if layout in LAYOUTS_4D else SIZES_3D
    for size in sizes + ([(3, 70, 7, 7)] if layout in LAYOUTS_4D else [(3, 197, 40)]):
        features = features_of(layout, size, torch.float32, gen, device=DEV)
        assert features.is_cuda
        for pooling in poolings_for(features):
            for l2 in (False, True):
                run_scatter(features, cache_dtype, pooling, l2, 11, gen, f"{layout} {size} {pooling} l2={l2}")


@pytest.mark.parametrize("layout", LAYOUTS_4D + LAYOUTS_3D)
def test_pool_quantize_scatter_keeps_channels_apart(layout):
    """Every (sample, channel) pools to its own value: cache rows must be exactly those values
    (avg), in channel order, and the 'none' rows every token's channels in (h, w) order."""
    n, (h, w), d = 4, (3, 5), 11
    tokens = channel_tokens(n, h * w, d)
    features = arrange(tokens, layout, (h, w) if layout in LAYOUTS_4D else None, torch.float32, DEV)
    rows = torch.tensor([3, 0, 5, 1], device=DEV)
    cache, scales = torch.zeros(6, d, device=DEV), torch.zeros(6, device=DEV)
    OPS.pool_quantize_scatter(features, cache, scales, rows, "avg", False)
    base = (torch.arange(n * d, dtype=torch.float32).view(n, d) + 1) / 8
    assert torch.equal(cache[rows].cpu(), base)
    cache = torch.zeros(6, h * w * d, device=DEV)
    OPS.pool_quantize_scatter(features, cache, scales, rows, "none", False)
    assert torch.equal(cache[rows].cpu(), tokens.reshape(n, -1))
    gen = torch.Generator().manual_seed(16)
    for pooling in poolings_for(features):
        for cache_dtype in R.CACHE_DTYPES:
            for l2 in (False, True):
                run_scatter(features, cache_dtype, pooling, l2, 7, gen, f"{layout} {pooling} {cache_dtype} l2={l2}")


@pytest.mark.parametrize("feature_dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_feature_dtypes(feature_dtype, cache_dtype):
    """float16 / bfloat16 features are what a backbone gives under autocast."""
    gen = torch.Generator().manual_seed(1)
    for layout, size in [
        ("nchw", (3, 7, 3, 3)),
        ("nchw", (2, 17, 3, 4)),
        ("channels_last", (2, 13, 2, 2)),
        ("nchw_strided", (3, 9, 3, 3)),
        ("ntd", (3, 5, 13)),
        ("ntd_transposed", (2, 4, 7)),
        ("ntd_strided", (3, 6, 40)),
    ]:
        features = features_of(layout, size, feature_dtype, gen, device=DEV)
        assert features.dtype == feature_dtype
        for pooling in poolings_for(features):
            for l2 in (False, True):
                run_scatter(features, cache_dtype, pooling, l2, 6, gen, f"{layout} {pooling} l2={l2}")


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_pool_quantize_scatter_autocast_features(amp_dtype):
    """Features straight from a conv under torch.autocast (arbitrary values: equal to the
    reference up to summation order)."""
    gen = torch.Generator().manual_seed(17)
    conv = torch.nn.Conv2d(3, 24, 3).to(DEV)
    images = torch.randn(5, 3, 9, 9, generator=gen).to(DEV)
    with torch.autocast("cuda", dtype=amp_dtype):
        features = conv(images)
    assert features.dtype == amp_dtype
    rows = torch.tensor([4, 0, 2, 0, 1], device=DEV)
    for pooling in ("avg", "max", "none"):
        for cache_dtype in (torch.float32, amp_dtype):
            d = row_len(features, pooling)
            got, got_s = torch.zeros(5, d, dtype=cache_dtype, device=DEV), torch.zeros(5, device=DEV)
            want, want_s = got.cpu(), got_s.cpu()
            OPS.pool_quantize_scatter(features, got, got_s, rows, pooling, True)
            R.pool_quantize_scatter(features.cpu(), want, want_s, rows.cpu(), pooling, True)
            atol = 1e-6 if cache_dtype == torch.float32 else 1e-2
            torch.testing.assert_close(got.cpu().float(), want.float(), rtol=1e-5, atol=atol)
            assert torch.equal(got_s.cpu(), want_s)


def special_tokens() -> torch.Tensor:
    """[6, 5, 7]: ordinary, all-zero, NaN, +inf, a channel of -inf, and underflowing rows."""
    gen = torch.Generator().manual_seed(15)
    x = exact_tokens(6, 5, 7, gen)
    x[1] = 0.0
    x[2, 0, 3] = float("nan")
    x[3, 0, 6] = float("inf")
    x[4, :, 0] = float("-inf")
    x[5] = 1e-44
    return x


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "ntd", "ntd_transposed"])
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_nan_inf_zero_rows(layout, cache_dtype):
    features = arrange(special_tokens(), layout, (5, 1) if layout in LAYOUTS_4D else None, torch.float32, DEV)
    rows = torch.arange(6, device=DEV)
    for pooling in poolings_for(features):
        for l2 in (False, True):
            d = row_len(features, pooling)
            cache = torch.full((6, d), 3, device=DEV).to(cache_dtype)
            scales = torch.full((6,), 2.0, device=DEV)
            check_scatter(features, cache, scales, rows, pooling, l2, f"{layout} {pooling} l2={l2}")
            if cache_dtype == torch.int8 and not l2:
                s = scales.cpu()
                assert not cache[1:].any() and s[1] == 1 and s[5] == 1 and s[2].isnan()
                out = OPS.gather_dequantize(cache, scales, rows, torch.float32)
                assert out[2:5].isnan().all() and not out[[1, 5]].any()


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "ntd", "ntd_transposed", "ntd_strided"])
def test_pool_quantize_scatter_rows_over_8192_floats(layout):
    """Pooled rows longer than the kernel's shared-memory buffer (8,192 floats) go through a
    global workspace; 'none' rows that long through the tiled kernels."""
    gen = torch.Generator().manual_seed(18)
    n, (h, w), d = 3, (2, 2), 8200
    features = arrange(
        exact_tokens(n, h * w, d, gen), layout, (h, w) if layout in LAYOUTS_4D else None, torch.float32, DEV
    )
    for pooling in poolings_for(features):
        assert row_len(features, pooling) > 8192
        for cache_dtype in (torch.float32, torch.bfloat16, torch.int8):
            for l2 in (False, True):
                run_scatter(features, cache_dtype, pooling, l2, 5, gen, f"{layout} {pooling} {cache_dtype} l2={l2}")


@pytest.mark.parametrize("pooling", R.POOLINGS)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_pool_quantize_scatter_row_strided_cache(cache_dtype, pooling):
    """A row slice of a wider device table (row stride > row length, base not at the table's
    start, so also not vector-aligned): written in place; the rest of the table untouched."""
    gen = torch.Generator().manual_seed(19)
    features = features_of("ntd_transposed", (5, 4, 6), torch.float32, gen, device=DEV)
    d = row_len(features, pooling)
    table = torch.full((16, d + 3), 7, device=DEV).to(cache_dtype)
    cache = table[1::2, 2 : d + 2]
    scales = torch.full((16,), 5.0, device=DEV)[::2]
    assert not cache.is_contiguous() and cache.stride(1) == 1 and cache.stride(0) > d and cache.is_cuda
    before = table.clone()
    check_scatter(features, cache, scales, torch.tensor([6, 0, 3, 0, 7], device=DEV), pooling, True, pooling)
    untouched = torch.ones_like(table, dtype=torch.bool)
    untouched[1::2, 2 : d + 2] = False
    assert torch.equal(table[untouched].cpu(), before[untouched].cpu())


def test_pool_quantize_scatter_metadata_errors_on_cuda():
    cache, scales = torch.zeros(5, 4, device=DEV), torch.ones(5, device=DEV)
    features = torch.randn(2, 4, 2, 2, device=DEV)
    with pytest.raises(ValueError):  # rows on the CPU
        OPS.pool_quantize_scatter(features, cache, scales, torch.tensor([0, 1]), "avg", False)
    with pytest.raises(ValueError, match="overlap"):
        OPS.pool_quantize_scatter(
            features, torch.zeros(1, 4, device=DEV).expand(5, 4), scales, torch.tensor([0, 1], device=DEV), "avg", False
        )
    with pytest.raises(ValueError, match="contiguous"):
        OPS.pool_quantize_scatter(
            features, torch.zeros(4, 5, device=DEV).t(), scales, torch.tensor([0, 1], device=DEV), "avg", False
        )


def test_pool_quantize_scatter_empty_rows():
    """Zero-length rows store only the scale (1); zero samples change nothing."""
    features = torch.zeros(3, 0, 2, 2, device=DEV)
    cache, scales = torch.zeros(5, 0, dtype=torch.int8, device=DEV), torch.full((5,), 4.0, device=DEV)
    check_scatter(features, cache, scales, torch.tensor([4, 0, 4], device=DEV), "avg", False)
    assert scales.cpu().tolist() == [1.0, 4.0, 4.0, 4.0, 1.0]
    no_rows = torch.zeros(0, dtype=torch.int64, device=DEV)
    check_scatter(torch.zeros(0, 3, 2, 2, device=DEV), torch.zeros(5, 3, device=DEV), scales, no_rows, "max", True)


# ------------------------------------------------------------------ gather_dequantize
def cache_values(num_rows, dim, cache_dtype, gen):
    if cache_dtype == torch.int8:
        return torch.randint(-127, 128, (num_rows, dim), generator=gen, dtype=torch.int8)
    return (torch.randn(num_rows, dim, generator=gen) * 100).to(cache_dtype)


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_gather_dequantize_matches_reference(cache_dtype, out_dtype):
    gen = torch.Generator().manual_seed(11)
    for num_rows, dim, batch in [(50, 13, 7), (9, 1, 3), (300, 2048, 256), (4, 8, 0), (70, 64, 70)]:
        cache = cache_values(num_rows, dim, cache_dtype, gen)
        scales = torch.rand(num_rows, generator=gen) / 7
        rows = torch.randint(0, num_rows, (batch,), generator=gen)
        want = R.gather_dequantize(cache, scales, rows, out_dtype)
        got = OPS.gather_dequantize(cache.to(DEV), scales.to(DEV), rows.to(DEV), out_dtype)
        assert got.is_cuda and same(got, want), f"{num_rows}x{dim} batch {batch}"


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", R.CACHE_DTYPES, ids=str)
def test_gather_dequantize_misaligned_and_strided(cache_dtype, out_dtype):
    """Caches the vectorised path must not take: a base one element past an aligned address, a
    row stride that is not a multiple of the vector width, a column-major cache; strided scales
    and rows. All built on the device."""
    gen = torch.Generator().manual_seed(20)
    num_rows, dim = 40, 64  # dim % 4 == 0: only the layout keeps the kernel off the vector path
    values = cache_values(num_rows, dim, cache_dtype, gen).to(DEV)
    flat = torch.zeros(num_rows * dim + 1, dtype=cache_dtype, device=DEV)
    offset_by_one = flat[1:].view(num_rows, dim)
    offset_by_one.copy_(values)
    assert offset_by_one.storage_offset() == 1 and offset_by_one.is_contiguous()
    wide = torch.zeros(num_rows, dim + 1, dtype=cache_dtype, device=DEV)
    odd_stride = wide[:, :dim]
    odd_stride.copy_(values)
    column_major = values.t().contiguous().t()
    assert not odd_stride.is_contiguous() and not column_major.is_contiguous()
    scales = (torch.rand(2 * num_rows, generator=gen) / 7).to(DEV)[::2]
    rows = torch.randint(0, num_rows, (2 * 33,), generator=gen).to(DEV)[::2]
    assert not scales.is_contiguous() and not rows.is_contiguous()
    want = R.gather_dequantize(values.cpu(), scales.cpu(), rows.cpu(), out_dtype)
    for cache in (values, offset_by_one, odd_stride, column_major):
        got = OPS.gather_dequantize(cache, scales, rows, out_dtype)
        assert same(got, want), f"storage offset {cache.storage_offset()}, strides {cache.stride()}"


def test_gather_dequantize_nan_scale_and_errors_on_cuda():
    cache = torch.tensor([[1, -2], [0, 0]], dtype=torch.int8, device=DEV)
    scales = torch.tensor([float("nan"), 1.0], device=DEV)
    out = OPS.gather_dequantize(cache, scales, torch.tensor([0, 1], device=DEV), torch.float32)
    assert out[0].isnan().all() and not out[1].any()
    with pytest.raises(ValueError):  # rows on the CPU
        OPS.gather_dequantize(cache, scales, torch.tensor([1]), torch.float32)


# ------------------------------------------------------------------ streams, devices, graphs
def test_no_host_synchronisation():
    """Neither op copies anything to the host (the row bounds are checked on the device)."""
    gen = torch.Generator().manual_seed(21)
    features = features_of("nchw", (4, 6, 3, 3), torch.float32, gen, device=DEV)
    cache, scales = torch.zeros(9, 6, dtype=torch.int8, device=DEV), torch.zeros(9, device=DEV)
    none_cache = torch.zeros(9, 54, device=DEV)
    rows = torch.tensor([8, 0, 3, 0], device=DEV)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        OPS.pool_quantize_scatter(features, cache, scales, rows, "avg", True)
        OPS.pool_quantize_scatter(features, none_cache, scales, rows, "none", True)
        OPS.gather_dequantize(cache, scales, rows, torch.float16)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_non_default_stream():
    """The kernels run on the current stream: the inputs are written on a side stream behind
    a long sleep, so a kernel launched on another stream would read them too early."""
    gen = torch.Generator().manual_seed(22)
    src = features_of("nchw", (6, 16, 7, 7), torch.float32, gen, device=DEV)
    rows = torch.tensor([5, 1, 2, 1, 0, 7], device=DEV)
    want, want_s = torch.zeros(8, 16, dtype=torch.int8), torch.zeros(8)
    R.pool_quantize_scatter(src.cpu(), want, want_s, rows.cpu(), "avg", True)
    features = torch.zeros_like(src)
    cache, scales = torch.zeros(8, 16, dtype=torch.int8, device=DEV), torch.zeros(8, device=DEV)
    side = torch.cuda.Stream()
    assert side != torch.cuda.current_stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before the inputs exist
        features.copy_(src)
        OPS.pool_quantize_scatter(features, cache, scales, rows, "avg", True)
        cache_again = cache.clone()
        torch.cuda._sleep(200_000_000)
        out = OPS.gather_dequantize(cache_again, scales, rows, torch.float32)
    side.synchronize()
    assert torch.equal(cache.cpu(), want) and torch.equal(scales.cpu(), want_s)
    assert torch.equal(out.cpu(), R.gather_dequantize(want, want_s, rows.cpu()))


@two_gpus
def test_second_device():
    """Tensors on cuda:1 while cuda:0 is current: the kernels run on the tensors' device."""
    gen = torch.Generator().manual_seed(23)
    dev = torch.device("cuda", 1)
    torch.cuda.set_device(0)
    features = features_of("channels_last", (5, 12, 4, 4), torch.bfloat16, gen, device=dev)
    for pooling, cache_dtype in [("avg", torch.int8), ("none", torch.float16), ("max", torch.float32)]:
        cache, scales = fresh_cache(7, row_len(features, pooling), cache_dtype, gen, dev)
        rows = torch.tensor([6, 0, 3, 0, 2], device=dev)
        check_scatter(features, cache, scales, rows, pooling, True, pooling)
        out = OPS.gather_dequantize(cache, scales, rows, torch.bfloat16)
        assert out.device == dev and torch.cuda.current_device() == 0
        assert same(out, R.gather_dequantize(cache.cpu(), scales.cpu(), rows.cpu(), torch.bfloat16))
    big = features_of("ntd", (2, 2, 9000), torch.float32, gen, device=dev)  # the workspace branch
    run_scatter(big, torch.int8, "avg", True, 3, gen, "workspace on cuda:1")


def test_cuda_graph_capture():
    """Both ops record into a CUDA graph (impossible with a host synchronisation) and replay
    with new inputs."""
    gen = torch.Generator().manual_seed(24)
    features = torch.zeros(4, 8, 3, 3, device=DEV)
    rows = torch.zeros(4, dtype=torch.int64, device=DEV)
    cache, scales = torch.zeros(10, 8, dtype=torch.int8, device=DEV), torch.zeros(10, device=DEV)

    def step():
        OPS.pool_quantize_scatter(features, cache, scales, rows, "avg", True)
        return OPS.gather_dequantize(cache, scales, rows, torch.float32)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as the CUDA-graph docs ask
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for _ in range(2):
        x = features_of("nchw", (4, 8, 3, 3), torch.float32, gen)
        r = make_rows(4, 10, gen)
        features.copy_(x.to(DEV))
        rows.copy_(r.to(DEV))
        cache.zero_()
        graph.replay()
        torch.cuda.synchronize()
        want, want_s = torch.zeros(10, 8, dtype=torch.int8), torch.zeros(10)
        R.pool_quantize_scatter(x, want, want_s, r, "avg", True)
        assert torch.equal(cache.cpu(), want) and torch.equal(scales.cpu()[r], want_s[r])
        assert torch.equal(out.cpu(), R.gather_dequantize(want, want_s, r))


OUT_OF_RANGE = """
    import sys, torch, tlengine.kernels as K
    assert K.extension_available()
    op, row = sys.argv[1], int(sys.argv[2])
    cache, scales = torch.zeros(5, 4, device="cuda"), torch.ones(5, device="cuda")
    rows = torch.tensor([0, row, 2], device="cuda")
    if op == "scatter":
        torch.ops.tlengine.pool_quantize_scatter(torch.randn(3, 4, 2, 2, device="cuda"), cache, scales, rows, "avg", False)
    elif op == "scatter-none":
        torch.ops.tlengine.pool_quantize_scatter(
            torch.randn(3, 2, 2, 1, device="cuda"), cache, scales, rows, "none", False)
    elif op == "scatter-empty":
        torch.ops.tlengine.pool_quantize_scatter(
            torch.randn(3, 0, 2, 2, device="cuda"), cache[:, :0], scales, rows, "avg", False)
    else:
        torch.ops.tlengine.gather_dequantize(cache, scales, rows, torch.float32)
    print("launched without blocking", flush=True)
    torch.cuda.synchronize()
    print("NOT DETECTED", flush=True)
"""


@pytest.mark.parametrize("row", [5, -1])
@pytest.mark.parametrize("op", ["scatter", "scatter-none", "scatter-empty", "gather"])
def test_out_of_range_rows_fail_loudly(op, row):
    """On CUDA the bounds are checked on the device: the call returns without blocking and the
    device-side assertion surfaces at the next synchronisation (in a child process: it leaves
    the CUDA context unusable)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OUT_OF_RANGE), op, str(row)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "NOT DETECTED" not in output, output
    assert "launched without blocking" in output, output
    assert "device-side assert" in output or "out of range" in output, output


# ------------------------------------------------------------------ dispatcher integration
def test_opcheck_on_cuda():
    gen = torch.Generator().manual_seed(8)
    features = features_of("nchw", (4, 6, 2, 2), torch.float32, gen, device=DEV)
    half_tokens = features_of("ntd_transposed", (3, 5, 8), torch.float16, gen, device=DEV)
    for feats, cache_dtype, pooling in [
        (features, torch.float32, "avg"),
        (features, torch.int8, "none"),
        (features, torch.bfloat16, "max"),
        (half_tokens, torch.int8, "cls"),
    ]:
        rows = torch.tensor([6, 0, 2, 0][: feats.shape[0]], device=DEV)
        cache = torch.zeros(14, row_len(feats, pooling) + 1, dtype=cache_dtype, device=DEV)[::2, 1:]  # strided rows
        torch.library.opcheck(
            OPS.pool_quantize_scatter.default, (feats, cache, torch.ones(7, device=DEV), rows, pooling, True)
        )
    for cache_dtype in R.CACHE_DTYPES:
        cache = torch.ones(7, 5, dtype=cache_dtype, device=DEV)
        args = (cache, torch.rand(7, device=DEV), torch.tensor([1, 6, 1], device=DEV), torch.float16)
        torch.library.opcheck(OPS.gather_dequantize.default, args)


def _scatter_then_read(features, cache, scales, rows):
    K.pool_quantize_scatter(features, cache, scales, rows, "avg", True)
    return K.gather_dequantize(cache, scales, rows, torch.float32) * 2


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_ops_inside_torch_compile_on_cuda(backend):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(9)
    features = features_of("channels_last", (4, 6, 3, 3), torch.float16, gen, device=DEV)
    rows = torch.tensor([5, 1, 2, 1], device=DEV)
    eager_cache, eager_scales = torch.zeros(8, 6, dtype=torch.int8, device=DEV), torch.zeros(8, device=DEV)
    want = _scatter_then_read(features, eager_cache, eager_scales, rows)
    compiled = torch.compile(_scatter_then_read, backend=backend, fullgraph=True)
    cache, scales = torch.zeros(8, 6, dtype=torch.int8, device=DEV), torch.zeros(8, device=DEV)
    got = compiled(features, cache, scales, rows)
    assert got.is_cuda and torch.equal(got, want)
    assert torch.equal(cache, eager_cache) and torch.equal(scales, eager_scales)


# ------------------------------------------------------------------ the feature cache on the GPU
KEY = CacheKey(
    backbone="tiny-cnn",
    weights_fingerprint="w0",
    layer="pooled",
    preprocessing={"size": 32},
    dataset_fingerprint="d0",
    pooling="avg",
    dtype="float32",
    views=2,
)


@pytest.mark.parametrize("dtype", ["int8", "bfloat16", "float32"])
@pytest.mark.parametrize("pooling", ["avg", "none"])
def test_feature_cache_on_gpu_with_fused_kernels(dtype, pooling):
    """FeatureCache in GPU memory with kernels='fused' (the CUDA kernels, no fallback) against
    the same cache on the CPU with the reference ops: identical rows."""
    key = replace(KEY, dtype=dtype, pooling=pooling, l2_normalize=pooling == "none")
    gen = torch.Generator().manual_seed(25)
    n, c, hw = 10, 12, 3
    row_dim = row_len(torch.empty(1, c, hw, hw), pooling)
    # With an index: the store writes in place only when features.device == its device.
    device = torch.device(DEV, torch.cuda.current_device()) if DEV == "cuda" else torch.device(DEV)
    gpu = FeatureCache.open(key, num_samples=n, row_dim=row_dim, device=device, kernels="fused")
    cpu = FeatureCache.open(key, num_samples=n, row_dim=row_dim, device="cpu", kernels="torch")
    with gpu, cpu:
        assert gpu.data.device == device and gpu.stats["kernels"] == "fused"
        for start in range(0, gpu.rows, 6):
            rows = torch.arange(start, min(start + 6, gpu.rows))
            rows = torch.cat([rows, rows[:1]])  # a repeated row: the last occurrence wins
            x = features_of("nchw", (len(rows), c, hw, hw), torch.float32, gen)
            gpu.write(x.to(device), rows.to(device))
            cpu.write(x, rows)
        gpu.finalize()  # every row written
        cpu.finalize()
        order = torch.randperm(gpu.rows, generator=gen)
        got = gpu.read(order.to(device), torch.float32)
        assert got.device == device and torch.equal(got.cpu(), cpu.read(order))
        assert torch.equal(gpu.data.cpu(), cpu.data) and torch.equal(gpu.scales.cpu(), cpu.scales)
