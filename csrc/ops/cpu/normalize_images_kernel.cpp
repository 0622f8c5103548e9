// CPU normalize_images: uint8 NHWC -> crop / mirror -> (x/255 - mean)/std -> NCHW or
// channels-last [N,C,out_h,out_w], one pass (arithmetic: ../normalize_images.h).
//
// Work unit: one output row y of one image, rows spread over threads with at::parallel_for.
// Its source is one contiguous run of out_w*C bytes. A mirrored row first has its pixels
// reversed into a small buffer (L1-resident; the source is still read in ascending order, which
// keeps the hardware prefetcher streaming), so both directions then run the same forward,
// vectorisable loops:
// * channels_last: the output row is out_w*C contiguous values in the source's own order, so
//   it is one elementwise loop dst[i] = src[i] * scale[i] + shift[i] over per-position
//   coefficient rows (channel i % C, built once per call) - no shuffles at all;
// * NCHW: each channel is de-interleaved from the row with a constant stride into its plane.
// On AVX-512 VBMI builds (-march=native on a CPU that has it), 3-channel rows use vpermb to
// de-interleave (and reverse) 16 pixels per instruction instead.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
#include <immintrin.h>
#define TLE_NORMALIZE_VBMI 1
#endif

#include "../common.h"
#include "../checks.h"
#include "convert.h"
#include "huge_pages.h"

namespace tlengine {
namespace {

constexpr int64_t kChunk = 256;  // floats per float16 conversion chunk (one L1-resident buffer)

#if TLE_NORMALIZE_VBMI
// 48 bytes (16 pixels of 3 channels) as a 32-byte and a 16-byte access: never past the row,
// and plain loads (an AVX-512 masked load that misses the cache stalls much longer).
inline __m512i load48(const uint8_t* p) {
  const __m512i lo = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_inserti64x2(lo, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32)), 2);
}

inline void store48(uint8_t* p, __m512i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_castsi512_si256(v));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 32), _mm512_extracti64x2_epi64(v, 2));
}
#endif

// dst pixel x = src pixel n-1-x, for n pixels of C bytes. The source (image memory, not yet in
// cache) is read in ascending order like every unmirrored row, so the hardware prefetcher keeps
// streaming; the reversed stores go to a small L1-resident buffer.
template <int kC>
inline void reverse_pixels(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t n, int64_t C) {
  if constexpr (kC == 1) {
    for (int64_t i = 0; i < n; ++i) dst[n - 1 - i] = src[i];
  } else if constexpr (kC == 4) {
    for (int64_t i = 0; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, src + 4 * i, 4);
      std::memcpy(dst + 4 * (n - 1 - i), &v, 4);
    }
  } else if constexpr (kC == 3) {
    int64_t i = 0;
#if TLE_NORMALIZE_VBMI
    // 16 pixels (48 bytes) per step: one vpermb reverses their order, keeping each pixel's bytes
    alignas(64) uint8_t idx[64] = {};
    for (int p = 0; p < 16; ++p) {
      for (int c = 0; c < 3; ++c) idx[3 * p + c] = static_cast<uint8_t>(3 * (15 - p) + c);
    }
    const __m512i perm = _mm512_load_si512(idx);
    for (; i + 16 <= n; i += 16) {  // src pixels i..i+15 -> dst pixels n-16-i..n-1-i
      store48(dst + 3 * (n - 16 - i), _mm512_permutexvar_epi8(perm, load48(src + 3 * i)));
    }
#endif
    for (; i < n; ++i) std::memcpy(dst + 3 * (n - 1 - i), src + 3 * i, 3);
  } else {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + (n - 1 - i) * C, src + i * C, C);
  }
}

inline uint16_t bf16_round(float v) {  // cpu::bf16_bits, written branch-free so loops vectorise
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  const uint16_t r = static_cast<uint16_t>((u + (((u >> 16) & 1u) + UINT32_C(0x7FFF))) >> 16);
  return v != v ? UINT16_C(0x7FC0) : r;
}

// dst[i] = normalize(src[i]) with the coefficient of position i: one output row's values in
// memory order (channels-last rows: scale/shift hold channel i % C).
template <typename out_t>
inline void normalize_run(const uint8_t* __restrict__ src, const float* __restrict__ scale,
                          const float* __restrict__ shift, out_t* __restrict__ dst, int64_t len,
                          float* __restrict__ scratch) {
  if constexpr (std::is_same_v<out_t, float>) {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<float>(src[i]) * scale[i] + shift[i];
  } else if constexpr (std::is_same_v<out_t, c10::BFloat16>) {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < len; ++i) d[i] = bf16_round(static_cast<float>(src[i]) * scale[i] + shift[i]);
  } else {
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
      const int64_t m = std::min(kChunk, len - i0);
      for (int64_t i = 0; i < m; ++i) scratch[i] = static_cast<float>(src[i0 + i]) * scale[i0 + i] + shift[i0 + i];
      cpu::store_floats(scratch, dst + i0, m);
    }
  }
}

// dst[x] = normalize(src[x * C + c]) for one channel of one row (NCHW planes).
template <int kC, typename out_t>
inline void normalize_channel(const uint8_t* __restrict__ src, int64_t C, NormalizeCoeff k, out_t* __restrict__ dst,
                              int64_t n, float* __restrict__ scratch) {
  const int64_t s = kC > 0 ? kC : C;
  const float a = k.scale, b = k.shift;
  if constexpr (std::is_same_v<out_t, float>) {
    for (int64_t x = 0; x < n; ++x) dst[x] = static_cast<float>(src[x * s]) * a + b;
  } else if constexpr (std::is_same_v<out_t, c10::BFloat16>) {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t x = 0; x < n; ++x) d[x] = bf16_round(static_cast<float>(src[x * s]) * a + b);
  } else {
    for (int64_t x0 = 0; x0 < n; x0 += kChunk) {
      const int64_t m = std::min(kChunk, n - x0);
      for (int64_t x = 0; x < m; ++x) scratch[x] = static_cast<float>(src[(x0 + x) * s]) * a + b;
      cpu::store_floats(scratch, dst + x0, m);
    }
  }
}

#if TLE_NORMALIZE_VBMI
// 16 lanes of float32 -> out_t, stored at dst (16 elements).
template <typename out_t>
inline void store16(__m512 v, out_t* dst) {
  if constexpr (std::is_same_v<out_t, float>) {
    _mm512_storeu_ps(dst, v);
  } else if constexpr (std::is_same_v<out_t, c10::BFloat16>) {
    // bf16_round: (u + 0x7FFF + ((u >> 16) & 1)) >> 16, NaN -> 0x7FC0
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi32_epi16(r));
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

inline __m512 normalize16(__m128i bytes, __m512 scale, __m512 shift) {
  // separate multiply and add (no fma), as normalize_pixel rounds
  return _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), scale), shift);
}

// One 3-channel row into three NCHW planes (dst + c * plane), 16 pixels per step: a 48-byte
// load, one vpermb that gathers R0..R15 | G0..G15 | B0..B15 (pixel order reversed for a
// mirrored row), then 16-wide convert + multiply-add.
template <typename out_t>
void planar3_row(const uint8_t* __restrict__ src, bool mirror, const NormalizeCoeff* coeff, out_t* __restrict__ dst,
                 int64_t plane, int64_t n) {
  alignas(64) uint8_t idx[64];
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < 16; ++p) idx[16 * c + p] = static_cast<uint8_t>(3 * (mirror ? 15 - p : p) + c);
  }
  for (int p = 48; p < 64; ++p) idx[p] = 0;
  const __m512i perm = _mm512_load_si512(idx);
  const __m512 s0 = _mm512_set1_ps(coeff[0].scale), s1 = _mm512_set1_ps(coeff[1].scale),
               s2 = _mm512_set1_ps(coeff[2].scale);
  const __m512 b0 = _mm512_set1_ps(coeff[0].shift), b1 = _mm512_set1_ps(coeff[1].shift),
               b2 = _mm512_set1_ps(coeff[2].shift);
  out_t* d0 = dst;
  out_t* d1 = dst + plane;
  out_t* d2 = dst + 2 * plane;
  // Source blocks in ascending order (the prefetcher's direction for every row); a mirrored
  // row's block i..i+15 lands reversed at output pixels n-16-i..n-1-i.
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const int64_t x = mirror ? n - 16 - i : i;
    const __m512i planes = _mm512_permutexvar_epi8(perm, load48(src + 3 * i));
    store16(normalize16(_mm512_castsi512_si128(planes), s0, b0), d0 + x);
    store16(normalize16(_mm512_extracti32x4_epi32(planes, 1), s1, b1), d1 + x);
    store16(normalize16(_mm512_extracti32x4_epi32(planes, 2), s2, b2), d2 + x);
  }
  for (; i < n; ++i) {  // tail: fewer than 16 pixels
    const uint8_t* p = src + 3 * i;
    const int64_t x = mirror ? n - 1 - i : i;
    d0[x] = static_cast<out_t>(normalize_pixel(p[0], coeff[0]));
    d1[x] = static_cast<out_t>(normalize_pixel(p[1], coeff[1]));
    d2[x] = static_cast<out_t>(normalize_pixel(p[2], coeff[2]));
  }
}
#endif

struct Geometry {
  int64_t N, H, W, C, out_h, out_w;
};

template <int kC, typename out_t>
void normalize_rows(const uint8_t* __restrict__ images, const int64_t* __restrict__ offsets,
                    const bool* __restrict__ mirror, const std::vector<NormalizeCoeff>& coeff, bool channels_last,
                    out_t* __restrict__ out, const Geometry& g) {
  const int64_t C = kC > 0 ? kC : g.C;
  const int64_t out_h = g.out_h, out_w = g.out_w, row_len = out_w * C, plane = out_h * out_w;
  // Channels-last rows: the coefficients of every position of a row, the same for all rows.
  std::vector<float> row_scale, row_shift;
  if (channels_last) {
    row_scale.resize(row_len);
    row_shift.resize(row_len);
    for (int64_t i = 0; i < row_len; ++i) {
      row_scale[i] = coeff[i % C].scale;
      row_shift[i] = coeff[i % C].shift;
    }
  }
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_len, 1));
  at::parallel_for(0, g.N * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> reversed(row_len + 1);
    std::vector<float> scratch(kChunk);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / out_h, y = i % out_h;
      const int64_t top = offsets[2 * n], left = offsets[2 * n + 1];
      const uint8_t* src = images + ((n * g.H + top + y) * g.W + left) * C;
      if (channels_last) {
        if (mirror[n]) {
          reverse_pixels<kC>(src, reversed.data(), out_w, C);
          src = reversed.data();
        }
        normalize_run(src, row_scale.data(), row_shift.data(), out + i * row_len, row_len, scratch.data());
        continue;
      }
      out_t* dst = out + n * C * plane + y * out_w;
#if TLE_NORMALIZE_VBMI
      if constexpr (kC == 3) {
        planar3_row(src, mirror[n], coeff.data(), dst, plane, out_w);
        continue;
      }
#endif
      if (mirror[n]) {
        reverse_pixels<kC>(src, reversed.data(), out_w, C);
        src = reversed.data();
      }
      for (int64_t c = 0; c < C; ++c) {
        normalize_channel<kC>(src + c, C, coeff[c], dst + c * plane, out_w, scratch.data());
      }
    }
  });
}

at::Tensor normalize_images_kernel(const at::Tensor& images_in, const at::Tensor& offsets_in,
                                   const at::Tensor& mirror_in, int64_t out_h, int64_t out_w, at::ArrayRef<double> mean,
                                   at::ArrayRef<double> std, at::ScalarType dtype, bool channels_last) {
  check_normalize_images_args(images_in, offsets_in, mirror_in, out_h, out_w, mean, std, dtype);
  const int64_t N = images_in.size(0), H = images_in.size(1), W = images_in.size(2), C = images_in.size(3);

  const at::Tensor images = images_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor mirror = mirror_in.contiguous();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK_INDEX(off[2 * n] >= 0 && off[2 * n + 1] >= 0 && off[2 * n] <= H - out_h && off[2 * n + 1] <= W - out_w,
                      "crop offsets must keep a ", out_h, "x", out_w, " window inside ", H, "x", W,
                      " images, got (top, left) = (", off[2 * n], ", ", off[2 * n + 1], ") for image ", n);
  }

  at::Tensor out = at::empty({N, C, out_h, out_w}, images.options().dtype(dtype),
                             channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (N == 0 || C == 0) return out;
  cpu::advise_huge_pages(out);
  std::vector<NormalizeCoeff> coeff(C);
  for (int64_t c = 0; c < C; ++c) {
    coeff[c] = normalize_coefficients(static_cast<float>(mean[c]), static_cast<float>(std[c]));
  }

  const Geometry g{N, H, W, C, out_h, out_w};
  auto run = [&](auto out_tag) {
    using out_t = decltype(out_tag);
    auto* dst = static_cast<out_t*>(out.mutable_data_ptr());
    const uint8_t* src = images.const_data_ptr<uint8_t>();
    const bool* mir = mirror.const_data_ptr<bool>();
    switch (C) {
      case 1: return normalize_rows<1>(src, off, mir, coeff, channels_last, dst, g);
      case 3: return normalize_rows<3>(src, off, mir, coeff, channels_last, dst, g);
      case 4: return normalize_rows<4>(src, off, mir, coeff, channels_last, dst, g);
      default: return normalize_rows<0>(src, off, mir, coeff, channels_last, dst, g);
    }
  };
  switch (dtype) {
    case at::kFloat: run(float{}); break;
    case at::kHalf: run(c10::Half{}); break;
    default: run(c10::BFloat16{}); break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tlengine, CPU, m) {
  m.impl("normalize_images", &normalize_images_kernel);
}

}  // namespace tlengine
