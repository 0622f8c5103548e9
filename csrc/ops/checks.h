// Argument checks shared by the CPU and CUDA kernels, so both reject bad input with the
// same messages and exception types as engine/kernels/reference.py: TORCH_CHECK_VALUE
// surfaces in Python as ValueError, TORCH_CHECK_INDEX as IndexError. Host code only.
//
// Each op has one check_<op>_args that validates everything knowable from metadata; the
// device-specific parts (reading the row indices / crop offsets) stay in the kernels. On CPU
// the row indices are in host memory and are checked here (check_rows_range: IndexError). The
// CUDA kernels of pool_quantize_scatter and gather_dequantize check them on the device
// instead (a device-side assertion, no host synchronisation: see ../pool_quantize_scatter.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/StringUtil.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "common.h"

namespace tlengine {

inline bool is_cache_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kChar;
}

inline bool is_output_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline void check_output_dtype(at::ScalarType dtype) {
  TORCH_CHECK_VALUE(is_output_dtype(dtype), "output dtype must be float32, float16 or bfloat16, got ", dtype);
}

inline Pooling parse_pooling(c10::string_view name) {
  if (name == "avg") return Pooling::Avg;
  if (name == "max") return Pooling::Max;
  if (name == "cls") return Pooling::Cls;
  if (name == "none") return Pooling::None;
  TORCH_CHECK_VALUE(false, "pooling must be one of ('avg', 'max', 'cls', 'none'), got '", std::string(name), "'");
  return Pooling::None;  // not reached
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

// lo / hi: the smallest and largest row index asked for (only called when there is one).
inline void check_rows_bounds(int64_t lo, int64_t hi, int64_t num_rows) {
  TORCH_CHECK_INDEX(lo >= 0 && hi < num_rows, "rows must be in [0, ", num_rows, "), got values in [", lo, ", ", hi,
                    "]");
}

// Every rows[i] in [0, num_rows), for row indices in host memory.
inline void check_rows_range(const int64_t* rows, int64_t n, int64_t num_rows) {
  if (n == 0) return;
  int64_t lo = rows[0], hi = rows[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, rows[i]);
    hi = std::max(hi, rows[i]);
  }
  check_rows_bounds(lo, hi, num_rows);
}

// ------------------------------------------------------------------ normalize_images
// Everything but the crop offsets' values. Returns nothing; sizes come from images.
inline void check_normalize_images_args(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror,
                                        int64_t out_h, int64_t out_w, at::ArrayRef<double> mean,
                                        at::ArrayRef<double> stdev, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(images.scalar_type() == at::kByte && images.dim() == 4, "images must be uint8 [N,H,W,C], got ",
                    images.scalar_type(), " ", images.sizes());
  const int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  TORCH_CHECK_VALUE(static_cast<int64_t>(mean.size()) == c && static_cast<int64_t>(stdev.size()) == c,
                    "mean and std need ", c, " values (one per channel), got ", mean.size(), " and ", stdev.size());
  TORCH_CHECK_VALUE(std::none_of(stdev.begin(), stdev.end(), [](double s) { return s == 0.0; }),
                    "std values must be non-zero");
  TORCH_CHECK_VALUE(offsets.scalar_type() == at::kLong && offsets.dim() == 2 && offsets.size(0) == n &&
                        offsets.size(1) == 2,
                    "offsets must be int64 [", n, ",2], got ", offsets.scalar_type(), " ", offsets.sizes());
  TORCH_CHECK_VALUE(mirror.scalar_type() == at::kBool && mirror.dim() == 1 && mirror.size(0) == n,
                    "mirror must be bool [", n, "], got ", mirror.scalar_type(), " ", mirror.sizes());
  TORCH_CHECK_VALUE(offsets.device() == images.device() && mirror.device() == images.device(),
                    "images, offsets and mirror must be on the same device");
  TORCH_CHECK_VALUE(out_h > 0 && out_w > 0 && out_h <= h && out_w <= w, "crop ", out_h, "x", out_w,
                    " does not fit images of ", h, "x", w);
  check_output_dtype(dtype);
}

// ------------------------------------------------------------------ pool_quantize_scatter
struct PoolShape {
  Pooling pooling = Pooling::Avg;
  int64_t n = 0;        // samples
  int64_t tokens = 0;   // T (H*W for maps)
  int64_t dim = 0;      // D (C for maps)
  int64_t row_len = 0;  // values per cache row: D, or T*D for 'none'
};

// Everything but the row indices' values.
inline PoolShape check_pool_quantize_scatter_args(const at::Tensor& features, const at::Tensor& cache,
                                                  const at::Tensor& scales, const at::Tensor& rows,
                                                  c10::string_view pooling_name) {
  PoolShape s;
  s.pooling = parse_pooling(pooling_name);
  const int64_t ndim = features.dim();
  TORCH_CHECK_VALUE(ndim == 3 || ndim == 4, "features must be [N,C,H,W] or [N,T,D], got ", features.sizes());
  TORCH_CHECK_VALUE(ndim == 3 || s.pooling != Pooling::Cls, "pooling 'cls' needs [N,T,D] features, got [N,C,H,W]");
  const auto ftype = features.scalar_type();
  TORCH_CHECK_VALUE(ftype == at::kFloat || ftype == at::kHalf || ftype == at::kBFloat16 || ftype == at::kDouble,
                    "features must be float32, float16, bfloat16 or float64, got ", ftype);
  s.n = features.size(0);
  s.dim = ndim == 4 ? features.size(1) : features.size(2);
  s.tokens = ndim == 4 ? features.size(2) * features.size(3) : features.size(1);
  TORCH_CHECK_VALUE(s.tokens > 0 || s.pooling == Pooling::Avg || s.pooling == Pooling::None, "pooling '",
                    std::string(pooling_name), "' needs at least one token, got ", features.sizes());
  s.row_len = s.pooling == Pooling::None ? s.tokens * s.dim : s.dim;

  TORCH_CHECK_VALUE(is_cache_dtype(cache.scalar_type()),
                    "cache dtype must be one of (torch.float32, torch.float16, torch.bfloat16, torch.int8), got ",
                    cache.scalar_type());
  TORCH_CHECK_VALUE(cache.dim() == 2 && cache.size(1) == s.row_len, "pooled rows have ", s.row_len,
                    " values but cache rows have ",
                    cache.dim() == 2 ? c10::str(cache.size(1)) : c10::str(cache.sizes()));
  check_scales(scales, cache);
  TORCH_CHECK_VALUE(features.device() == cache.device(), "features are on ", features.device(),
                    " but the cache is on ", cache.device());
  check_rows_meta(rows, cache);
  TORCH_CHECK_VALUE(s.n == rows.size(0), s.n, " feature rows but ", rows.size(0), " row indices");
  TORCH_CHECK_VALUE(cache.stride(1) == 1 || s.row_len <= 1,
                    "cache rows must be contiguous (the cache is written in place), got strides ", cache.strides());
  // Rows may be strided (a row slice of a bigger cache) but must not share memory (an
  // expanded cache): rows written in parallel would race.
  TORCH_CHECK_VALUE(cache.stride(0) >= s.row_len || cache.size(0) <= 1,
                    "cache rows must not overlap (row stride >= row length), got strides ", cache.strides(),
                    " for rows of ", s.row_len);
  TORCH_CHECK_VALUE(scales.device() == cache.device(), "scales are on ", scales.device(), " but the cache is on ",
                    cache.device());
  return s;
}

// Per sample, features are read either token-major [T][D] or channel-major [D][T]. The
// layout the tensor already has is used when it is one of them (NCHW, channels_last,
// [N,T,D] or its transpose); any other strides are made contiguous first.
struct SampleLayout {
  at::Tensor x;  // [N,T,D] (token-major) or [N,D,T] (channel-major) view, contiguous
  bool channel_major = false;
};

inline SampleLayout sample_layout(const at::Tensor& features) {
  const bool maps = features.dim() == 4;
  const at::Tensor token_view = maps ? features.permute({0, 2, 3, 1}) : features;
  const at::Tensor channel_view = maps ? features : features.permute({0, 2, 1});
  if (token_view.is_contiguous()) return {token_view, false};
  if (channel_view.is_contiguous()) return {channel_view, true};
  return maps ? SampleLayout{channel_view.contiguous(), true} : SampleLayout{token_view.contiguous(), false};
}

// ------------------------------------------------------------------ gather_dequantize
// Everything but the row indices' values.
inline void check_gather_dequantize_args(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows,
                                         at::ScalarType dtype) {
  TORCH_CHECK_VALUE(is_cache_dtype(cache.scalar_type()) && cache.dim() == 2,
                    "cache must be 2-D of (torch.float32, torch.float16, torch.bfloat16, torch.int8), got ",
                    cache.scalar_type(), " ", cache.sizes());
  check_scales(scales, cache);
  check_rows_meta(rows, cache);
  check_output_dtype(dtype);
  TORCH_CHECK_VALUE(scales.device() == cache.device(), "cache and scales must be on the same device, got ",
                    cache.device(), " and ", scales.device());
}

}  // namespace tlengine
