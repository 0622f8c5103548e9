// CPU pool_quantize_scatter: features -> pool -> optional L2 -> cast / int8 -> cache[rows].
//
// Each sample's features are read from memory once; the pooled row is built in a per-thread
// float32 buffer (L1/L2-resident) and then normalised and quantised into its cache row.
// Only the last occurrence of a repeated row is computed at all (it is what survives).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "../common.h"
#include "../checks.h"
#include "convert.h"

namespace tlengine {
namespace {

// src as float32: src itself for float input, else converted into tmp.
template <typename scalar_t>
inline const float* as_floats(const scalar_t* src, float* tmp, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return src;
  } else {
    cpu::load_floats(src, tmp, n);
    return tmp;
  }
}

// Sum and max of one short contiguous run (an NCHW plane: often 49 or 196 floats). Written
// as kLanes independent accumulators so the compiler emits whole-vector loads without an
// alignment-peeling prologue (planes start at arbitrary offsets); the order of the sum is
// free (the reference only promises float rounding for it).
constexpr int kLanes = 16;

inline float sum_of(const float* __restrict__ p, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += p[i + j];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += p[i];
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// max, NaN if any value is NaN (as torch.amax).
inline float max_of(const float* __restrict__ p, int64_t n) {
  float m = p[0];
  bool nan = false;
  int64_t i = 0;
  if (n >= kLanes) {
    float acc[kLanes];
    for (int j = 0; j < kLanes; ++j) acc[j] = p[j];
    for (i = kLanes; i + kLanes <= n; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const float x = p[i + j];
        acc[j] = x > acc[j] ? x : acc[j];
        nan |= x != x;
      }
    }
    for (int j = 0; j < kLanes; ++j) {
      m = acc[j] > m ? acc[j] : m;
      nan |= acc[j] != acc[j];
    }
  }
  for (; i < n; ++i) {
    m = p[i] > m ? p[i] : m;
    nan |= p[i] != p[i];
  }
  return nan ? NAN : m;
}

inline float nan_max(float acc, float x) {
  return (acc >= x || acc != acc) ? acc : x;
}

// Eight consecutive channel planes at once (NCHW maps: planes of T floats, T >= 8): out[k] =
// sum (or NaN-propagating max) of p[k*T .. k*T+T). Eight independent accumulators keep the
// loads streaming; one reduction per eight channels instead of one per channel (with T = 49,
// the per-channel horizontal reduction used to cost as much as the loads: max pooling ran at
// 20 % of copy bandwidth).
#if defined(__AVX__)
constexpr bool kHavePlanes8 = true;

// [v0 .. v7] -> one vector whose lane k holds the sum of v_k's lanes.
inline __m256 lane_sums(const __m256* v) {
  const __m256 ab = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 cd = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20), _mm256_permute2f128_ps(ab, cd, 0x31));
}

inline float lane_max(__m256 v) {
  v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
  v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0xB1));
  return _mm256_cvtss_f32(v);
}

// NaN: _mm256_max_ps drops a NaN in one of its operands, so max tracks one "saw a NaN" mask
// for all eight planes (one register: 8 accumulators + 8 masks would not fit in 16) and, in
// the rare case it is set, redoes those planes with max_of.
template <bool Max>
void reduce_planes8(const float* __restrict__ p, int64_t T, float* __restrict__ out) {
  __m256 acc[8];
  __m256 nan = _mm256_setzero_ps();
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  const int64_t whole = T & ~int64_t{7};
  if constexpr (Max) {
    for (int k = 0; k < 8; ++k) {
      acc[k] = _mm256_loadu_ps(p + k * T);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(acc[k], acc[k], _CMP_UNORD_Q));
    }
  }
  for (int64_t t = Max ? 8 : 0; t < whole; t += 8) {
    for (int k = 0; k < 8; ++k) {
      const __m256 x = _mm256_loadu_ps(p + k * T + t);
      if constexpr (Max) {
        acc[k] = _mm256_max_ps(acc[k], x);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      } else {
        acc[k] = _mm256_add_ps(acc[k], x);
      }
    }
  }
  if constexpr (Max) {
    if (_mm256_movemask_ps(nan) != 0) {
      for (int k = 0; k < 8; ++k) out[k] = max_of(p + k * T, T);
      return;
    }
    for (int k = 0; k < 8; ++k) {
      float m = lane_max(acc[k]);
      for (int64_t t = whole; t < T; ++t) m = nan_max(m, p[k * T + t]);
      out[k] = m;
    }
  } else {
    _mm256_storeu_ps(out, lane_sums(acc));
    for (int k = 0; k < 8; ++k) {
      for (int64_t t = whole; t < T; ++t) out[k] += p[k * T + t];
    }
  }
}
#else
constexpr bool kHavePlanes8 = false;

template <bool Max>
void reduce_planes8(const float*, int64_t, float*) {}
#endif

// dst[t * ds + j] = src[j * ss + t] for an 8x8 tile.
inline void transpose_8x8(const float* __restrict__ src, int64_t ss, float* __restrict__ dst, int64_t ds) {
#if defined(__AVX__)
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
         r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
         r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
         u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
         u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
#else
  float tile[8][8];
  for (int j = 0; j < 8; ++j)
    for (int t = 0; t < 8; ++t) tile[t][j] = src[j * ss + t];
  for (int t = 0; t < 8; ++t)
    for (int j = 0; j < 8; ++j) dst[t * ds + j] = tile[t][j];
#endif
}

// Channel-major [D][T] -> token-major [T][D]. Blocks of 8 tokens are the outer loop, so each
// pass writes 8 output rows left to right: the rows are D floats apart, often a power of two
// (2048 floats = 8 KiB), and visiting all T rows per channel block would map them to the same
// L1 set and thrash (2-3x slower for ResNet maps).
void transpose_to_tokens(const float* __restrict__ src, float* __restrict__ dst, int64_t T, int64_t D) {
  int64_t t0 = 0;
  for (; t0 + 8 <= T; t0 += 8) {
    int64_t d0 = 0;
    for (; d0 + 8 <= D; d0 += 8) transpose_8x8(src + d0 * T + t0, T, dst + t0 * D + d0, D);
    for (; d0 < D; ++d0) {
      for (int64_t t = 0; t < 8; ++t) dst[(t0 + t) * D + d0] = src[d0 * T + t0 + t];
    }
  }
  for (; t0 < T; ++t0) {
    for (int64_t d = 0; d < D; ++d) dst[t0 * D + d] = src[d * T + t0];
  }
}

// Token-major float32 [T][D]: vals[d] = sum (or NaN-propagating max) over t of x[t][d] for
// the leading whole blocks of kColumns columns, each accumulated in registers across all T
// rows (a row-at-a-time pass would load and store the accumulator for every row, which
// halves the throughput of this memory-bound loop). Returns the number of columns done;
// other dtypes return 0 and take the row-at-a-time path.
constexpr int64_t kColumns = 64;

template <bool Max, typename scalar_t>
int64_t column_blocks(const scalar_t* __restrict__ x, int64_t T, int64_t D, float* __restrict__ vals) {
  if constexpr (!std::is_same_v<scalar_t, float>) {
    return 0;
  } else {
    if (T == 0) return 0;
    int64_t d0 = 0;
    for (; d0 + kColumns <= D; d0 += kColumns) {
      float acc[kColumns];
      for (int64_t j = 0; j < kColumns; ++j) acc[j] = Max ? x[d0 + j] : 0.0f;
      for (int64_t t = Max ? 1 : 0; t < T; ++t) {
        const float* __restrict__ r = x + t * D + d0;
        for (int64_t j = 0; j < kColumns; ++j) acc[j] = Max ? nan_max(acc[j], r[j]) : acc[j] + r[j];
      }
      std::copy(acc, acc + kColumns, vals + d0);
    }
    return d0;
  }
}

inline void l2_normalize(float* __restrict__ v, int64_t n) {
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(v[i]) * static_cast<double>(v[i]);
  const float norm = l2_norm_clamped(ss);
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] / norm;
}

// One sample, laid out either token-major [T][D] or channel-major [D][T] (NCHW maps, or
// transposed token views), pooled into vals (D floats, T*D token-major for None).
// tmp holds tmp_floats(...) floats.
template <typename scalar_t>
void pool_sample(const scalar_t* __restrict__ x, bool channel_major, int64_t T, int64_t D, Pooling pooling,
                 bool l2, float* __restrict__ vals, float* __restrict__ tmp) {
  if (!channel_major) {
    switch (pooling) {
      case Pooling::Avg: {
        const int64_t done = column_blocks<false>(x, T, D, vals);
        std::fill(vals + done, vals + D, 0.0f);
        for (int64_t t = 0; t < T; ++t) {
          const float* __restrict__ r = as_floats(x + t * D, tmp, D);
          for (int64_t d = done; d < D; ++d) vals[d] += r[d];
        }
        if (T > 0) {
          const float count = static_cast<float>(T);
          for (int64_t d = 0; d < D; ++d) vals[d] = vals[d] / count;
        }
        break;
      }
      case Pooling::Max: {
        const int64_t done = column_blocks<true>(x, T, D, vals);
        for (int64_t d = done; d < D; ++d) vals[d] = static_cast<float>(x[d]);
        for (int64_t t = 1; t < T; ++t) {
          const float* __restrict__ r = as_floats(x + t * D, tmp, D);
          for (int64_t d = done; d < D; ++d) vals[d] = nan_max(vals[d], r[d]);
        }
        break;
      }
      case Pooling::Cls: cpu::load_floats(x, vals, D); break;
      case Pooling::None: cpu::load_floats(x, vals, T * D); break;
    }
  } else {
    // Whole groups of 8 channels go through reduce_planes8, the rest one channel at a time.
    const int64_t grouped = (kHavePlanes8 && T >= 8) ? (D & ~int64_t{7}) : 0;
    switch (pooling) {
      case Pooling::Avg: {
        const float count = static_cast<float>(T);
        for (int64_t d = 0; d < grouped; d += 8) reduce_planes8<false>(as_floats(x + d * T, tmp, 8 * T), T, vals + d);
        for (int64_t d = grouped; d < D; ++d) vals[d] = T > 0 ? sum_of(as_floats(x + d * T, tmp, T), T) : 0.0f;
        if (T > 0) {
          for (int64_t d = 0; d < D; ++d) vals[d] = vals[d] / count;
        }
        break;
      }
      case Pooling::Max:
        for (int64_t d = 0; d < grouped; d += 8) reduce_planes8<true>(as_floats(x + d * T, tmp, 8 * T), T, vals + d);
        for (int64_t d = grouped; d < D; ++d) vals[d] = max_of(as_floats(x + d * T, tmp, T), T);
        break;
      case Pooling::Cls:
        for (int64_t d = 0; d < D; ++d) vals[d] = static_cast<float>(x[d * T]);
        break;
      case Pooling::None: transpose_to_tokens(as_floats(x, tmp, T * D), vals, T, D); break;
    }
  }
  if (l2) {
    if (pooling == Pooling::None) {
      for (int64_t t = 0; t < T; ++t) l2_normalize(vals + t * D, D);
    } else {
      l2_normalize(vals, D);
    }
  }
}

// Scratch floats pool_sample needs besides vals (input rows converted to float32).
int64_t tmp_floats(bool float_input, bool channel_major, Pooling pooling, int64_t T, int64_t D) {
  if (float_input) return 1;
  if (!channel_major) return std::max<int64_t>(D, 1);
  return std::max<int64_t>(pooling == Pooling::None ? T * D : 8 * T, 1);  // 8 planes: reduce_planes8
}

// Writes a pooled float32 row into a cache row of the cache's dtype and returns its scale.
using StoreFn = float (*)(const float* vals, int64_t n, void* dst);

template <typename T>
float store_cast(const float* vals, int64_t n, void* dst) {
  cpu::store_floats(vals, static_cast<T*>(dst), n);
  return 1.0f;
}

float store_int8(const float* __restrict__ vals, int64_t n, void* dst_) {
  auto* __restrict__ dst = static_cast<int8_t*>(dst_);
  float amax = 0.0f;
#pragma omp simd reduction(max : amax)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(vals[i]);
    amax = a > amax ? a : amax;
  }
  const float scale = int8_scale(amax);
  for (int64_t i = 0; i < n; ++i) dst[i] = quantize_int8(vals[i], scale);
  return scale;
}

StoreFn store_fn(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return &store_cast<float>;
    case at::kHalf: return &store_cast<c10::Half>;
    case at::kBFloat16: return &store_cast<c10::BFloat16>;
    default: return &store_int8;
  }
}

// Indices n whose rows[n] does not occur again later, in increasing row order.
std::vector<int64_t> last_occurrences(const int64_t* rows, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [rows](int64_t a, int64_t b) { return rows[a] < rows[b]; });
  std::vector<int64_t> winners;
  winners.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (i + 1 == n || rows[order[i + 1]] != rows[order[i]]) winners.push_back(order[i]);
  }
  return winners;
}

void pool_quantize_scatter_kernel(const at::Tensor& features_in, at::Tensor& cache, at::Tensor& scales,
                                  const at::Tensor& rows_in, c10::string_view pooling_name, bool l2_normalize) {
  const PoolShape shape = check_pool_quantize_scatter_args(features_in, cache, scales, rows_in, pooling_name);
  const Pooling pooling = shape.pooling;
  const int64_t N = shape.n, T = shape.tokens, D = shape.dim, row_len = shape.row_len;
  const SampleLayout layout = sample_layout(features_in);
  const at::Tensor& features = layout.x;
  const bool channel_major = layout.channel_major;

  const at::Tensor rows = rows_in.contiguous();
  const int64_t* row_ptr = rows.const_data_ptr<int64_t>();
  check_rows_range(row_ptr, N, cache.size(0));
  if (N == 0) return;
  const std::vector<int64_t> winners = last_occurrences(row_ptr, N);

  const StoreFn store = store_fn(cache.scalar_type());
  auto* cache_base = static_cast<char*>(cache.mutable_data_ptr());
  const int64_t row_bytes = cache.stride(0) * cache.element_size();  // rows may be strided (a row slice)
  float* scale_ptr = scales.mutable_data_ptr<float>();
  const int64_t scale_stride = scales.stride(0);
  const int64_t sample_len = T * D;
  const int64_t tmp_len = tmp_floats(features.scalar_type() == at::kFloat, channel_major, pooling, T, D);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(sample_len, 1));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "pool_quantize_scatter", [&] {
    const scalar_t* x = features.const_data_ptr<scalar_t>();
    at::parallel_for(0, static_cast<int64_t>(winners.size()), grain, [&](int64_t begin, int64_t end) {
      std::vector<float> vals(std::max<int64_t>(row_len, 1)), tmp(tmp_len);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = winners[i], row = row_ptr[n];
        pool_sample<scalar_t>(x + n * sample_len, channel_major, T, D, pooling, l2_normalize, vals.data(), tmp.data());
        scale_ptr[row * scale_stride] = store(vals.data(), row_len, cache_base + row * row_bytes);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(tlengine, CPU, m) {
  m.impl("pool_quantize_scatter", &pool_quantize_scatter_kernel);
}

}  // namespace tlengine
