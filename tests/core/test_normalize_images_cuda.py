"""normalize_images on CUDA against the pure-PyTorch reference and the CPU kernel.

Skipped only where no CUDA device is present; on a GPU machine the extension must load with its
CUDA kernel (the test fails otherwise). Every channel gets its own mean and std, so a kernel
that mixes channels up fails. The CPU and CUDA kernels share their arithmetic
(csrc/ops/normalize_images.h), so their results must be equal bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import tlengine.kernels as K
import torch
from test_kernels import normalize_inputs
from tlengine.kernels import reference as R

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

OPS = torch.ops.tlengine
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SHAPES = [(4, 20, 30, 16, 17), (1, 9, 9, 9, 9), (3, 40, 33, 1, 1), (0, 8, 8, 4, 4), (2, 12, 80, 7, 67)]


@pytest.fixture(scope="module", autouse=True)
def cuda_kernel():
    assert K.extension_available(), f"the tlengine extension did not load: {K.status()['error']}"
    assert "cuda" in K.status()["kernels"]["normalize_images"], "the extension has no CUDA normalize_images kernel"


inputs = normalize_inputs  # uint8 NHWC images, crops, mirror flags, per-channel distinct mean / std


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    info = torch.finfo(dtype)
    return torch.exp2(torch.floor(torch.log2(x.abs().clamp_min(info.tiny)))) * info.eps


def assert_close_to_reference(got, want, mean, std):
    """One rounding of the output dtype plus a few float32 ulp of the largest intermediate
    (the kernels fold (x/255 - mean)/std into x*scale + shift)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    slack = 4 * torch.finfo(torch.float32).eps * max((1 + abs(m)) / abs(s) for m, s in zip(mean, std))
    g, w = got.float().cpu(), want.float()
    bound = (ulp(w, got.dtype) if got.dtype != torch.float32 else 0) + slack
    assert bool(((g - w).abs() <= bound).all()), f"max diff {(g - w).abs().max().item()}"


def check(images, offsets, mirror, oh, ow, mean, std, dtype, channels_last, device="cuda"):
    """The CUDA op on device copies of the inputs vs the reference and the CPU kernel."""
    args = (oh, ow, mean, std, dtype, channels_last)
    got = OPS.normalize_images(images.to(device), offsets.to(device), mirror.to(device), *args)
    want = R.normalize_images(images.cpu(), offsets.cpu(), mirror.cpu(), *args)
    cpu = OPS.normalize_images(images.cpu(), offsets.cpu(), mirror.cpu(), *args)
    assert got.device == torch.device(device)
    assert got.stride() == want.stride() == cpu.stride()
    assert_close_to_reference(got, want, mean, std)
    assert torch.equal(got.cpu(), cpu), "CUDA and CPU kernels round differently"
    return got


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels", [1, 3, 4, 16, 17, 40])
def test_matches_reference_and_cpu(channels, out_dtype, channels_last):
    """Up to 16 channels the coefficients travel as a kernel argument, beyond in a device tensor."""
    gen = torch.Generator().manual_seed(21)
    for n, h, w, oh, ow in SHAPES:
        images, offsets, mirror, mean, std = inputs(n, h, w, oh, ow, channels, gen)
        got = check(images, offsets, mirror, oh, ow, mean, std, out_dtype, channels_last)
        if channels_last:
            assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_large_batch(channels_last):
    gen = torch.Generator().manual_seed(22)
    images, offsets, mirror, mean, std = inputs(8, 256, 256, 224, 224, 3, gen)
    for dtype in FLOAT_DTYPES:
        check(images, offsets, mirror, 224, 224, mean, std, dtype, channels_last)


@pytest.mark.parametrize("channels", [3, 20])
def test_strided_inputs_made_on_the_device(channels):
    """NHWC views of NCHW device memory, every other image, and strided offsets / mirror."""
    gen = torch.Generator(device="cuda").manual_seed(23)
    nchw = torch.randint(0, 256, (6, channels, 24, 20), generator=gen, dtype=torch.uint8, device="cuda")
    images = nchw.permute(0, 2, 3, 1)[::2]
    offsets = torch.tensor([[0, 5, 1, 2, 3, 3], [4, 0, 2, 1, 0, 4]], device="cuda").t()[::2]
    mirror = torch.tensor([True, True, False, False, True, False], device="cuda")[::2]
    assert not images.is_contiguous() and not offsets.is_contiguous() and not mirror.is_contiguous()
    mean = [0.05 + 0.07 * c for c in range(channels)]
    std = [0.15 + 0.11 * c for c in range(channels)]
    for dtype in FLOAT_DTYPES:
        for channels_last in (False, True):
            check(images, offsets, mirror, 20, 16, mean, std, dtype, channels_last)
            front = K.normalize_images(images, offsets, mirror, 20, 16, mean, std, dtype, channels_last)
            assert front.device.type == "cuda"


def test_non_default_stream():
    """The kernel runs on the current stream: inputs produced on a side stream are seen complete."""
    gen = torch.Generator().manual_seed(24)
    images, offsets, mirror, mean, std = inputs(16, 64, 64, 56, 48, 3, gen)
    want = OPS.normalize_images(images, offsets, mirror, 56, 48, mean, std, torch.bfloat16, True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        big = torch.empty(16, 64, 64, 3, dtype=torch.uint8, device="cuda")
        for _ in range(20):  # queue work on the side stream ahead of the copy and the op
            big.random_(0, 256)
        dev_images = big.copy_(images, non_blocking=True)
        got = OPS.normalize_images(dev_images, offsets.cuda(), mirror.cuda(), 56, 48, mean, std, torch.bfloat16, True)
        got20 = OPS.normalize_images(
            dev_images[..., [0, 1, 2] * 7][..., :20], offsets.cuda(), mirror.cuda(), 56, 48, [0.3] * 20, [0.2] * 20
        )
    side.synchronize()
    assert torch.equal(got.cpu(), want)
    assert torch.equal(
        got20.cpu(),
        OPS.normalize_images(images[..., [0, 1, 2] * 7][..., :20], offsets, mirror, 56, 48, [0.3] * 20, [0.2] * 20),
    )


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("channels", [3, 20])
def test_second_device(channels):
    gen = torch.Generator().manual_seed(25)
    images, offsets, mirror, mean, std = inputs(3, 20, 30, 16, 17, channels, gen)
    with torch.cuda.device(0):
        for channels_last in (False, True):
            check(images, offsets, mirror, 16, 17, mean, std, torch.float16, channels_last, device="cuda:1")


def test_no_host_synchronisation():
    """Offsets are checked on the device: the op never waits for the GPU (sync debug mode
    raises on any synchronising call), not even for C > 16 (coefficients in a device tensor)."""
    gen = torch.Generator().manual_seed(26)
    for channels in (3, 20):
        images, offsets, mirror, mean, std = inputs(4, 20, 30, 16, 17, channels, gen)
        images, offsets, mirror = images.cuda(), offsets.cuda(), mirror.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for channels_last in (False, True):
                OPS.normalize_images(images, offsets, mirror, 16, 17, mean, std, torch.bfloat16, channels_last)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def test_out_of_range_offsets_fail_a_device_assertion():
    """An offset outside the image fails a device-side assertion (in a child process: the
    assertion leaves the CUDA context unusable)."""
    code = textwrap.dedent(
        """
        import torch, tlengine.kernels as K
        assert K.extension_available()
        images = torch.zeros(2, 8, 8, 3, dtype=torch.uint8, device="cuda")
        offsets = torch.tensor([[0, 0], [0, 5]], device="cuda")  # left 5 + width 4 > 8
        mirror = torch.zeros(2, dtype=torch.bool, device="cuda")
        out = torch.ops.tlengine.normalize_images(images, offsets, mirror, 4, 4, [0.5] * 3, [0.2] * 3, torch.float32)
        torch.cuda.synchronize()
        print("NO ERROR")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "NO ERROR" not in proc.stdout, output
    assert "device-side assert" in output or "CUDA_KERNEL_ASSERT" in output, output


@pytest.mark.parametrize("channels", [3, 20])
def test_opcheck(channels):
    gen = torch.Generator().manual_seed(27)
    images, offsets, mirror, mean, std = inputs(3, 10, 12, 8, 7, channels, gen)
    images, offsets, mirror = images.cuda(), offsets.cuda(), mirror.cuda()
    for dtype in FLOAT_DTYPES:
        for channels_last in (False, True):
            args = (images, offsets, mirror, 8, 7, mean, std, dtype, channels_last)
            torch.library.opcheck(OPS.normalize_images.default, args)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile(backend):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(28)
    images, offsets, mirror, mean, std = inputs(4, 10, 11, 8, 9, 3, gen)
    images, offsets, mirror = images.cuda(), offsets.cuda(), mirror.cuda()

    def f(images, offsets, mirror):
        x = K.normalize_images(images, offsets, mirror, 8, 9, mean, std, torch.bfloat16, channels_last=True)
        return x.float().mean((2, 3))

    got = torch.compile(f, backend=backend, fullgraph=True)(images, offsets, mirror)
    assert torch.allclose(got, f(images, offsets, mirror))
