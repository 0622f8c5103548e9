// features [N,C,H,W] or [N,T,D] -> pool -> optional L2 -> cast/int8-quantize -> cache[rows].
#pragma once
#include <ATen/ATen.h>
#include <string>

namespace tlengine {
// cache [R, D_row] (float32/float16/bfloat16/int8), scales float32 [R], rows int64 [N].
// Mutates cache and scales; where a row repeats, its last occurrence wins.
void pool_quantize_scatter(const at::Tensor& features, at::Tensor& cache, at::Tensor& scales,
                           const at::Tensor& rows, c10::string_view pooling, bool l2_normalize);
}  // namespace tlengine
