"""Fused feature-cache ops, with the pure-PyTorch reference as fallback.

:func:`normalize_images`, :func:`pool_quantize_scatter` and :func:`gather_dequantize` have the
signatures and semantics of :mod:`tlengine.kernels.reference` (shapes are documented there).
They run ``torch.ops.tlengine.*`` (C++ / CUDA, built on first use: :mod:`tlengine.kernels.build`)
when the extension loads and has a kernel for the tensors' device, and the reference otherwise;
when the extension cannot be built they say so once on stderr. Errors have the reference's
types: ValueError for bad dtypes, shapes and devices, IndexError for out-of-range rows or crop
offsets. The ops have fake (meta) implementations, so ``torch.compile`` traces them.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import torch

from . import reference
from .build import _lock, load_extension
from .build import status as _build_status

__all__ = [
    "normalize_images",
    "pool_quantize_scatter",
    "gather_dequantize",
    "extension_available",
    "status",
    "reference",
]

_OPS = ("normalize_images", "pool_quantize_scatter", "gather_dequantize")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}
# kernels: {(op, device type)} the extension implements; filled once, on first use.
_ready: dict[str, Any] = {"done": False, "ok": False, "kernels": frozenset(), "noted": frozenset()}


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
    """uint8 ``[N,H,W,C]`` -> crop ``[out_h,out_w]`` at ``offsets[n] = (top, left)`` (int64
    ``[N,2]``) -> mirror where ``mirror[n]`` (bool ``[N]``) -> ``(x/255 - mean[c]) / std[c]`` ->
    ``[N,C,out_h,out_w]`` in ``dtype`` (float32 / float16 / bfloat16), NCHW-contiguous or, with
    ``channels_last``, in ``torch.channels_last`` memory format (written directly, no extra pass).

    Crop offsets outside the images raise IndexError, except in the CUDA kernel, which checks
    them on the device without blocking and fails a device-side assertion instead
    (csrc/ops/normalize_images.h)."""
    if _use_extension("normalize_images", images, offsets, mirror):
        return torch.ops.tlengine.normalize_images(
            images,
            offsets,
            mirror,
            out_h,
            out_w,
            [float(m) for m in mean],
            [float(s) for s in std],
            dtype,
            bool(channels_last),
        )
    return reference.normalize_images(images, offsets, mirror, out_h, out_w, mean, std, dtype, channels_last)


def pool_quantize_scatter(
    features: torch.Tensor,
    cache: torch.Tensor,
    scales: torch.Tensor,
    rows: torch.Tensor,
    pooling: str,
    l2_normalize: bool,
) -> None:
    """Pool ``features`` (``[N,C,H,W]`` or ``[N,T,D]``; ``pooling`` avg / max / cls / none),
    optionally L2-normalise, cast or int8-quantise, and write ``cache[rows[n]]`` (``[R, D_row]``)
    and ``scales[rows[n]]`` (float32 ``[R]``) in place; a repeated row keeps its last occurrence.

    ``cache`` rows must be contiguous and may be strided (a row slice), not overlapping. An
    out-of-range row raises IndexError before anything is written, except in the CUDA kernel,
    which checks on the device so as not to block: there it fails a device-side assertion
    (a RuntimeError at the next synchronising call; see csrc/ops/pool_quantize_scatter.h)."""
    if _use_extension("pool_quantize_scatter", features, cache, scales, rows):
        torch.ops.tlengine.pool_quantize_scatter(features, cache, scales, rows, pooling, bool(l2_normalize))
        return
    reference.pool_quantize_scatter(features, cache, scales, rows, pooling, l2_normalize)


def gather_dequantize(
    cache: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``cache[rows]`` (``* scales[rows]`` for int8) as ``dtype`` ``[B, D_row]``; rows int64 ``[B]``.

    Out-of-range rows raise IndexError, except in the CUDA kernel, which checks them on the
    device without blocking and fails a device-side assertion instead (csrc/ops/gather_dequantize.h)."""
    if _use_extension("gather_dequantize", cache, scales, rows):
        return torch.ops.tlengine.gather_dequantize(cache, scales, rows, dtype)
    return reference.gather_dequantize(cache, scales, rows, dtype)


def extension_available() -> bool:
    """Whether the fused ops are loaded (building them on first call if needed)."""
    return _load()


def status() -> dict[str, Any]:
    """:func:`tlengine.kernels.build.status` plus ``kernels``: op -> devices with a fused kernel."""
    info = _build_status()
    info["kernels"] = {op: sorted(dev for o, dev in _ready["kernels"] if o == op) for op in _OPS}
    return info


# ------------------------------------------------------------------ loading and routing
def _use_extension(op: str, *tensors: Any) -> bool:
    if not _ready["done"]:
        _load()
    if not _ready["ok"] or not all(isinstance(t, torch.Tensor) for t in tensors):
        return False
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        return False  # the reference raises the documented ValueError
    if (op, device.type) in _ready["kernels"]:
        return True
    _note_no_kernel(device.type)
    return False


@torch.compiler.disable
def _note_no_kernel(device_type: str) -> None:
    if device_type not in _ready["noted"]:
        _ready["noted"] = _ready["noted"] | {device_type}
        print(
            f"tlengine: the fused kernels have no {device_type} implementation in this build; "
            f"using the pure-PyTorch reference ops for {device_type} tensors",
            file=sys.stderr,
            flush=True,
        )


@torch.compiler.disable
def _load() -> bool:
    with _lock:
        if not _ready["done"]:
            _load_locked()
    return _ready["ok"]


def _load_locked() -> None:
    module = load_extension()
    kernels: set[tuple[str, str]] = set()
    if module is not None:
        _register_fakes()
        for op in _OPS:
            for device, key in _DISPATCH_KEYS.items():
                if torch._C._dispatch_has_kernel_for_dispatch_key(f"tlengine::{op}", key):
                    kernels.add((op, device))
    else:
        info = _build_status()
        if info["reason"] != "disabled":
            print(
                f"tlengine: fused kernels unavailable ({info['error']}); using the pure-PyTorch reference ops",
                file=sys.stderr,
                flush=True,
            )
    _ready.update(done=True, ok=module is not None, kernels=frozenset(kernels))


def _register_fakes() -> None:
    """Shape/dtype-only implementations for FakeTensor tracing (torch.compile, opcheck); they
    run the reference's metadata checks, so a traced call fails as the eager one would."""

    def same_device(message, *tensors):
        # Real tensors on different devices reach the Meta kernel (this fake) when one is meta.
        if any(t.device != tensors[0].device for t in tensors[1:]):
            raise ValueError(message + ": got " + ", ".join(str(t.device) for t in tensors))

    @torch.library.register_fake("tlengine::normalize_images")
    def _normalize_images_fake(images, offsets, mirror, out_h, out_w, mean, std, dtype, channels_last=False):
        if images.dtype == torch.uint8 and images.dim() == 4:  # else the check below names the problem
            same_device("images, offsets and mirror must be on the same device", images, offsets, mirror)
        reference.check_normalize_args(images, offsets, mirror, out_h, out_w, mean, std, dtype)
        n, _, _, c = images.shape
        return reference.normalize_output(n, c, out_h, out_w, dtype, images.device, channels_last)

    @torch.library.register_fake("tlengine::pool_quantize_scatter")
    def _pool_quantize_scatter_fake(features, cache, scales, rows, pooling, l2_normalize):
        same_device("features, cache, scales and rows must be on the same device", features, cache, scales, rows)
        row_len = reference.pooled_row_len(features.shape, pooling)
        reference.check_scatter_args(features.shape[0], row_len, features.device, cache, scales, rows)
        return None

    @torch.library.register_fake("tlengine::gather_dequantize")
    def _gather_dequantize_fake(cache, scales, rows, dtype):
        same_device("cache, scales and rows must be on the same device", cache, scales, rows)
        reference.check_gather_args(cache, scales, rows, dtype)
        return cache.new_empty((rows.shape[0], cache.shape[1]), dtype=dtype)


class _Ops:
    """The three ops as one namespace, so callers can switch implementations at once."""

    def __init__(self, normalize_images: Any, pool_quantize_scatter: Any, gather_dequantize: Any):
        self.normalize_images = normalize_images
        self.pool_quantize_scatter = pool_quantize_scatter
        self.gather_dequantize = gather_dequantize


def ops_for(kind: str) -> _Ops:
    """The ops for a pipeline's ``cache.kernels`` setting: "torch" = the pure-PyTorch
    reference, "auto" = fused where built (else the reference), "fused" = fused or an error."""
    if kind == "torch":
        return _Ops(reference.normalize_images, reference.pool_quantize_scatter, reference.gather_dequantize)
    if kind == "fused" and not extension_available():
        from ..errors import TLEngineError

        raise TLEngineError(
            "cache.kernels is 'fused' but the tlengine C++ extension is not available "
            "(see `tlengine kernels`); use kernels: auto or torch"
        )
    if kind not in ("auto", "fused"):
        raise ValueError(f"kernels must be 'auto', 'fused' or 'torch', got '{kind}'")
    return _Ops(normalize_images, pool_quantize_scatter, gather_dequantize)
