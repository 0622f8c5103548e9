// CPU gather_dequantize: out[b] = cache[rows[b]] (* scales[rows[b]] for int8), one pass.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "../checks.h"
#include "convert.h"

namespace tlengine {
namespace {

template <typename cache_t, typename out_t>
void gather_rows(const cache_t* __restrict__ cache, int64_t row_stride, const float* __restrict__ scales,
                 int64_t scale_stride, const int64_t* __restrict__ rows, out_t* __restrict__ out, int64_t batch,
                 int64_t dim) {
  // Each task copies >= ~64 KiB so small batches don't pay for waking threads.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    constexpr bool direct = std::is_same_v<out_t, float> || std::is_same_v<cache_t, out_t>;
    std::vector<float> tmp(direct ? 0 : dim);
    for (int64_t b = begin; b < end; ++b) {
      const cache_t* __restrict__ src = cache + rows[b] * row_stride;
      out_t* __restrict__ dst = out + b * dim;
      if constexpr (std::is_same_v<cache_t, int8_t>) {
        const float scale = scales[rows[b] * scale_stride];
        float* __restrict__ vals = direct ? reinterpret_cast<float*>(dst) : tmp.data();
        for (int64_t d = 0; d < dim; ++d) vals[d] = dequantize_int8(src[d], scale);
        if constexpr (!direct) cpu::store_floats(vals, dst, dim);
      } else if constexpr (std::is_same_v<cache_t, out_t>) {
        std::memcpy(dst, src, dim * sizeof(out_t));
      } else if constexpr (std::is_same_v<out_t, float>) {
        cpu::load_floats(src, dst, dim);
      } else {
        cpu::load_floats(src, tmp.data(), dim);
        cpu::store_floats(tmp.data(), dst, dim);
      }
    }
  });
}

template <typename F>
void with_float_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(c10::Half{});
    case at::kBFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK(false, "unexpected dtype ", t);
  }
}

at::Tensor gather_dequantize_kernel(const at::Tensor& cache_in, const at::Tensor& scales, const at::Tensor& rows_in,
                                    at::ScalarType dtype) {
  check_gather_dequantize_args(cache_in, scales, rows_in, dtype);

  const at::Tensor rows = rows_in.contiguous();
  const int64_t batch = rows.numel(), num_rows = cache_in.size(0), dim = cache_in.size(1);
  check_rows_range(rows.const_data_ptr<int64_t>(), batch, num_rows);

  // Rows may be strided (a row slice of a bigger cache); only a strided inner dim needs a copy.
  const at::Tensor cache = (cache_in.stride(1) == 1 || dim <= 1) ? cache_in : cache_in.contiguous();
  at::Tensor out = at::empty({batch, dim}, cache.options().dtype(dtype));
  if (batch == 0 || dim == 0) return out;

  const int64_t* row_ptr = rows.const_data_ptr<int64_t>();
  const float* scale_ptr = scales.const_data_ptr<float>();
  auto run = [&](auto cache_tag, auto out_tag) {
    using cache_t = decltype(cache_tag);
    using out_t = decltype(out_tag);
    gather_rows<cache_t, out_t>(static_cast<const cache_t*>(cache.const_data_ptr()), cache.stride(0), scale_ptr,
                                scales.stride(0), row_ptr, static_cast<out_t*>(out.mutable_data_ptr()), batch, dim);
  };
  with_float_type(dtype, [&](auto out_tag) {
    if (cache.scalar_type() == at::kChar) {
      run(int8_t{}, out_tag);
    } else {
      with_float_type(cache.scalar_type(), [&](auto cache_tag) { run(cache_tag, out_tag); });
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tlengine, CPU, m) {
  m.impl("gather_dequantize", &gather_dequantize_kernel);
}

}  // namespace tlengine
