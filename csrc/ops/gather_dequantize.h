// cache rows for a batch -> float tensor for the head, in one pass.
#pragma once
#include <ATen/ATen.h>

namespace tlengine {
// cache [R, D_row] (any strides), scales float32 [R], rows int64 [B] -> [B, D_row] in dtype.
// int8: q * scale (a NaN scale, from a NaN row, gives a NaN row).
// cache rows of length 0: nothing is read (and on CUDA no row index is checked).
//
// Out-of-range rows (outside [0, R)):
// * CPU: IndexError, as the reference.
// * CUDA: checked on the device, without a host synchronisation (CUDA-graph capturable): an
//   out-of-range row is never read; the kernel fails a device-side assertion
//   (CUDA_KERNEL_ASSERT), which surfaces as a RuntimeError "device-side assert triggered" at
//   the next synchronising CUDA call and leaves the process's CUDA context unusable. The
//   output's values for that call are undefined (it must not be used).
at::Tensor gather_dequantize(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows,
                             at::ScalarType dtype);
}  // namespace tlengine
