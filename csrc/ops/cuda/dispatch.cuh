// AT_DISPATCH_SWITCH case lists and device helpers shared by the CUDA kernels.
#pragma once

#include <ATen/Dispatch.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstdio>

// float32 / float16 / bfloat16: features read as is, and every output dtype.
#define TLE_FLOAT_CASES(...)                   \
  AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)    \
  AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)     \
  AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__)

// The cache dtypes: the float ones and int8 (with a per-row scale).
#define TLE_CACHE_CASES(...)      \
  TLE_FLOAT_CASES(__VA_ARGS__)    \
  AT_DISPATCH_CASE(at::kChar, __VA_ARGS__)

namespace tlengine {

// Device-side bounds check of a cache row index, instead of copying min/max to the host
// (which blocks and breaks CUDA-graph capture). Out of range: prints the index and fails a
// device-side assertion (torch's CUDA_KERNEL_ASSERT: kept in release builds; the error
// surfaces at the next synchronising CUDA call). Returns whether the row is in range, so
// callers skip the access even where assertions are compiled out.
__device__ __forceinline__ bool row_in_range(int64_t row, int64_t num_rows) {
  const bool in_range = row >= 0 && row < num_rows;
  CUDA_KERNEL_ASSERT_PRINTF(in_range, "tlengine: cache row index %lld is out of range [0, %lld)",
                            static_cast<long long>(row), static_cast<long long>(num_rows));
  return in_range;
}

}  // namespace tlengine
