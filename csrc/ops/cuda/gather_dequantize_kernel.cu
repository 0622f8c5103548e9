// CUDA implementation of tlengine::gather_dequantize (semantics: engine/kernels/reference.py):
// out[b, j] = cache[rows[b], j] (* scales[rows[b]] for an int8 cache), as float32 / float16 /
// bfloat16 [B, D_row].
//
// Grid-stride loop over B*D_row, one thread per group of kVec consecutive columns. When the
// cache rows are contiguous, D_row % kVec == 0 and both base pointers are aligned, a group
// is one aligned vector load and one aligned vector store; otherwise kVec = 1 (scalar,
// any cache strides).
//
// Row indices are bounds-checked on the device, by the thread that reads the row
// (row_in_range, dispatch.cuh): nothing is copied to the host, so a call never blocks and can
// be captured in a CUDA graph. An out-of-range row is never read; it fails a device-side
// assertion (../gather_dequantize.h).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../checks.h"
#include "../common.h"
#include "dispatch.cuh"

namespace tlengine {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr int64_t kMaxBlocks = 65535;  // grid-stride beyond this

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T val[N];
};

template <typename cache_t>
__device__ __forceinline__ float decode(cache_t v, float scale) {
  if constexpr (std::is_same_v<cache_t, int8_t>) {
    return dequantize_int8(v, scale);
  } else {
    return static_cast<float>(v);
  }
}

// VEC > 1 requires cache_s1 == 1, cache_s0 % VEC == 0, dim % VEC == 0 and aligned bases.
template <typename cache_t, typename out_t, int VEC>
__global__ void __launch_bounds__(kThreads)
gather_dequantize_kernel(const cache_t* __restrict__ cache, int64_t cache_s0, int64_t cache_s1,
                         const float* __restrict__ scales, int64_t scales_s0, const int64_t* __restrict__ rows,
                         int64_t num_rows, out_t* __restrict__ out, int64_t batch, int64_t dim) {
  const int64_t groups_per_row = dim / VEC;
  const int64_t total = batch * groups_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total; g += stride) {
    const int64_t b = g / groups_per_row;
    const int64_t j = (g - b * groups_per_row) * VEC;
    const int64_t row = rows[b];
    if (!row_in_range(row, num_rows)) continue;  // never read outside the cache
    float scale = 1.0f;
    if constexpr (std::is_same_v<cache_t, int8_t>) scale = scales[row * scales_s0];
    out_t* dst = out + b * dim + j;
    if constexpr (VEC == 1) {
      *dst = static_cast<out_t>(decode<cache_t>(cache[row * cache_s0 + j * cache_s1], scale));
    } else {
      const Vec<cache_t, VEC> in = *reinterpret_cast<const Vec<cache_t, VEC>*>(cache + row * cache_s0 + j);
      Vec<out_t, VEC> result;
#pragma unroll
      for (int k = 0; k < VEC; ++k) result.val[k] = static_cast<out_t>(decode<cache_t>(in.val[k], scale));
      *reinterpret_cast<Vec<out_t, VEC>*>(dst) = result;
    }
  }
}

bool is_aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename cache_t, typename out_t>
void launch_gather(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows, at::Tensor& out) {
  const int64_t batch = out.size(0), dim = out.size(1);
  const cache_t* cache_ptr = cache.const_data_ptr<cache_t>();
  out_t* out_ptr = out.data_ptr<out_t>();
  const bool vectorize = cache.stride(1) == 1 && cache.stride(0) % kVec == 0 && dim % kVec == 0 &&
                         is_aligned(cache_ptr, sizeof(cache_t) * kVec) && is_aligned(out_ptr, sizeof(out_t) * kVec);
  const int vec = vectorize ? kVec : 1;
  const int64_t groups = batch * (dim / vec);
  const int64_t blocks = std::min<int64_t>((groups + kThreads - 1) / kThreads, kMaxBlocks);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (vectorize) {
    gather_dequantize_kernel<cache_t, out_t, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        cache_ptr, cache.stride(0), cache.stride(1), scales.const_data_ptr<float>(), scales.stride(0),
        rows.const_data_ptr<int64_t>(), cache.size(0), out_ptr, batch, dim);
  } else {
    gather_dequantize_kernel<cache_t, out_t, 1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        cache_ptr, cache.stride(0), cache.stride(1), scales.const_data_ptr<float>(), scales.stride(0),
        rows.const_data_ptr<int64_t>(), cache.size(0), out_ptr, batch, dim);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor gather_dequantize_cuda(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows,
                                  at::ScalarType dtype) {
  check_gather_dequantize_args(cache, scales, rows, dtype);
  const at::ScalarType cache_type = cache.scalar_type();
  TORCH_CHECK(cache.is_cuda(), "gather_dequantize (CUDA): cache must be a CUDA tensor, got ", cache.device());
  c10::cuda::CUDAGuard guard(cache.device());

  const int64_t batch = rows.size(0), dim = cache.size(1);  // row bounds: checked by the kernel
  at::Tensor out = at::empty({batch, dim}, cache.options().dtype(dtype));
  if (out.numel() == 0) return out;

  const at::Tensor row_idx = rows.contiguous();
  AT_DISPATCH_SWITCH(cache_type, "gather_dequantize_cuda", TLE_CACHE_CASES([&] {
    using cache_t = scalar_t;
    AT_DISPATCH_SWITCH(dtype, "gather_dequantize_cuda",
                       TLE_FLOAT_CASES([&] { launch_gather<cache_t, scalar_t>(cache, scales, row_idx, out); }));
  }));
  return out;
}

}  // namespace
}  // namespace tlengine

TORCH_LIBRARY_IMPL(tlengine, CUDA, m) {
  m.impl("gather_dequantize", &tlengine::gather_dequantize_cuda);
}
