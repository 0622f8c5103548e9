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

struct AddOp {
  static __m256 apply(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
};
struct MaxOp {  // NaN is checked separately (reduce_planes8)
  static __m256 apply(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
};

// [v0 .. v7] -> one vector whose lane k is Op over v_k's eight lanes: pairs of vectors are
// interleaved and combined, then the 128-bit halves (21 instructions for eight channels).
template <typename Op>
inline __m256 across_lanes(const __m256* v) {
  __m256 pairs[4];
  for (int j = 0; j < 4; ++j) {  // lanes per half: [a0 b0 a1 b1] with a = v[2j], b = v[2j+1]
    pairs[j] = Op::apply(_mm256_unpacklo_ps(v[2 * j], v[2 * j + 1]), _mm256_unpackhi_ps(v[2 * j], v[2 * j + 1]));
  }
  // per half: [v0 v1 v2 v3] and [v4 v5 v6 v7]
  const __m256 q0 = Op::apply(_mm256_shuffle_ps(pairs[0], pairs[1], 0x44), _mm256_shuffle_ps(pairs[0], pairs[1], 0xEE));
  const __m256 q1 = Op::apply(_mm256_shuffle_ps(pairs[2], pairs[3], 0x44), _mm256_shuffle_ps(pairs[2], pairs[3], 0xEE));
  return Op::apply(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

// NaN: _mm256_max_ps drops a NaN in one of its operands, so max tracks one "saw a NaN" mask
// for all eight planes (one register; an unordered compare of two planes' vectors checks
// both) and, in the rare case it is set, redoes those planes with max_of.
template <bool Max>
void reduce_planes8(const float* __restrict__ p, int64_t T, float* __restrict__ out) {
  __m256 acc[8];
  __m256 nan = _mm256_setzero_ps();
  const int64_t whole = T & ~int64_t{7};
  // Ask for the group two ahead now: with eight interleaved streams per group the hardware
  // prefetchers alone fall behind (time / f.sum() of the same bytes, ResNet-50 and VGG16
  // maps: 1.11-1.19 with this prefetch, 1.22-1.93 without, on a noisy 2-core VM).
  const char* ahead = reinterpret_cast<const char*>(p + 16 * T);
  for (int64_t off = 0; off < 8 * T * static_cast<int64_t>(sizeof(float)); off += 64) {
    _mm_prefetch(ahead + off, _MM_HINT_T0);
  }
  for (int k = 0; k < 8; ++k) acc[k] = Max ? _mm256_loadu_ps(p + k * T) : _mm256_setzero_ps();
  if constexpr (Max) {
    for (int k = 0; k < 8; k += 2) nan = _mm256_or_ps(nan, _mm256_cmp_ps(acc[k], acc[k + 1], _CMP_UNORD_Q));
  }
  for (int64_t t = Max ? 8 : 0; t < whole; t += 8) {
    for (int k = 0; k < 8; k += 2) {
      const __m256 x0 = _mm256_loadu_ps(p + k * T + t), x1 = _mm256_loadu_ps(p + (k + 1) * T + t);
      if constexpr (Max) {
        acc[k] = _mm256_max_ps(acc[k], x0);
        acc[k + 1] = _mm256_max_ps(acc[k + 1], x1);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(x0, x1, _CMP_UNORD_Q));
      } else {
        acc[k] = _mm256_add_ps(acc[k], x0);
        acc[k + 1] = _mm256_add_ps(acc[k + 1], x1);
      }
    }
  }
  if constexpr (Max) {
    if (_mm256_movemask_ps(nan) != 0) {
      for (int k = 0; k < 8; ++k) out[k] = max_of(p + k * T, T);
      return;
    }
    _mm256_storeu_ps(out, across_lanes<MaxOp>(acc));
    for (int k = 0; k < 8; ++k) {
      for (int64_t t = whole; t < T; ++t) out[k] = nan_max(out[k], p[k * T + t]);
    }
  } else {
    _mm256_storeu_ps(out, across_lanes<AddOp>(acc));
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

// The row's max |value| propagates NaN (as torch.amax, and the CUDA kernel's NanMax): the
// vectorised max below drops NaNs, so they are counted separately. A NaN row then gets a NaN
// scale and all-zero codes (common.h: int8_scale, quantize_int8).
float store_int8(const float* __restrict__ vals, int64_t n, void* dst_) {
  auto* __restrict__ dst = static_cast<int8_t*>(dst_);
  float amax = 0.0f;
  int nans = 0;
#pragma omp simd reduction(max : amax) reduction(+ : nans)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(vals[i]);
    amax = a > amax ? a : amax;
    nans += a != a;
  }
  const float scale = int8_scale(nans ? NAN : amax);
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

// Indices n whose rows[n] does not occur again later, in increasing n: the features are then
// read front to back (in row order, i.e. a random sample order, the hardware prefetchers
// restart at every sample and the read rate drops by a third).
std::vector<int64_t> last_occurrences(const int64_t* rows, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [rows](int64_t a, int64_t b) { return rows[a] < rows[b]; });
  std::vector<int64_t> winners;
  winners.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (i + 1 == n || rows[order[i + 1]] != rows[order[i]]) winners.push_back(order[i]);
  }
  std::sort(winners.begin(), winners.end());
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
