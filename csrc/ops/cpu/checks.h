// Argument checks shared by the CPU kernels. The messages and exception types follow
// engine/kernels/reference.py: TORCH_CHECK_VALUE surfaces in Python as ValueError,
// TORCH_CHECK_INDEX as IndexError.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

namespace tlengine {
namespace cpu {

inline bool is_cache_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kChar;
}

inline bool is_output_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline void check_scales(const at::Tensor& scales, const at::Tensor& cache) {
  TORCH_CHECK_VALUE(scales.scalar_type() == at::kFloat && scales.dim() == 1 && scales.size(0) == cache.size(0),
                    "scales must be float32 [", cache.size(0), "], got ", scales.scalar_type(), " ",
                    scales.sizes());
}

// rows: int64 [N] on the cache's device.
inline void check_rows_meta(const at::Tensor& rows, const at::Tensor& cache) {
  TORCH_CHECK_VALUE(rows.scalar_type() == at::kLong && rows.dim() == 1, "rows must be a 1-D int64 tensor, got ",
                    rows.scalar_type(), " ", rows.sizes());
  TORCH_CHECK_VALUE(rows.device() == cache.device(), "rows are on ", rows.device(), " but the cache is on ",
                    cache.device());
}

// Every rows[i] in [0, num_rows).
inline void check_rows_range(const int64_t* rows, int64_t n, int64_t num_rows) {
  if (n == 0) return;
  int64_t lo = rows[0], hi = rows[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, rows[i]);
    hi = std::max(hi, rows[i]);
  }
  TORCH_CHECK_INDEX(lo >= 0 && hi < num_rows, "rows must be in [0, ", num_rows, "), got values in [", lo, ", ", hi,
                    "]");
}

}  // namespace cpu
}  // namespace tlengine
