// features [N,C,H,W] or [N,T,D] -> pool -> optional L2 -> cast/int8-quantize -> cache[rows].
#pragma once
#include <ATen/ATen.h>
#include <string>

namespace tlengine {
// cache [R, D_row] (float32/float16/bfloat16/int8), scales float32 [R], rows int64 [N].
// Mutates cache and scales; where a row repeats, its last occurrence wins.
//
// cache: each row contiguous (stride(1) == 1); rows may be strided (a row slice of a bigger
// cache, stride(0) >= D_row) but must not overlap. Same on CPU and CUDA.
//
// int8 (common.h: int8_scale, quantize_int8): scale = max|row| / 127, or 1 where that is 0
// (all-zero rows); a row with a NaN gets a NaN scale (inf: an inf scale) and all-zero codes, so
// it reads back as NaN; no NaN is ever converted to an integer. Float caches: NaN stays NaN.
//
// Out-of-range rows (outside [0, R)):
// * CPU: IndexError before anything is written, as the reference.
// * CUDA: checked on the device, so the call never synchronises with the host (and can be
//   captured in a CUDA graph). A block whose row is out of range writes nothing and fails a
//   device-side assertion (CUDA_KERNEL_ASSERT, as torch's own index ops do): the error
//   surfaces as a RuntimeError "device-side assert triggered" at the next synchronising CUDA
//   call, and the process's CUDA context is unusable afterwards. Other, in-range rows of the
//   same call may or may not have been written. Nothing outside the cache is ever written.
void pool_quantize_scatter(const at::Tensor& features, at::Tensor& cache, at::Tensor& scales,
                           const at::Tensor& rows, c10::string_view pooling, bool l2_normalize);
}  // namespace tlengine
