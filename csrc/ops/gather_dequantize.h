// cache rows for a batch -> float tensor for the head, in one pass.
#pragma once
#include <ATen/ATen.h>

namespace tlengine {
// cache [R, D_row], scales float32 [R], rows int64 [B] -> [B, D_row] in dtype.
at::Tensor gather_dequantize(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows,
                             at::ScalarType dtype);
}  // namespace tlengine
