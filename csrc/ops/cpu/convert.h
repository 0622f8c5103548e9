// Contiguous float32 <-> float32/float16/bfloat16 row conversions for the CPU kernels.
// Rounding is round-to-nearest-even, as Tensor.to() does, so results are bit-identical
// to the reference. Written so GCC/Clang vectorise them (float16 goes through F16C when
// the build targets it: c10::Half converts one value at a time, which does not vectorise).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace tlengine {
namespace cpu {

inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if (f != f) return UINT16_C(0x7FC0);
  return static_cast<uint16_t>((u + (((u >> 16) & 1u) + UINT32_C(0x7FFF))) >> 16);
}

inline float bf16_value(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// dst[i] = src[n-1-i].
inline void reverse_floats(const float* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[n - 1 - i];
}

// dst[i] = src[i] converted to T.
template <typename T>
inline void store_floats(const float* __restrict__ src, T* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    auto* out = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_bits(src[i]);
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    int64_t i = 0;
#if defined(__F16C__)
    auto* out = reinterpret_cast<uint16_t*>(dst);
    for (; i + 8 <= n; i += 8) {
      __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
    }
#endif
    for (; i < n; ++i) dst[i] = c10::Half(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// dst[i] = float(src[i]).
template <typename T>
inline void load_floats(const T* __restrict__ src, float* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const auto* in = reinterpret_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_value(in[i]);
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    int64_t i = 0;
#if defined(__F16C__)
    const auto* in = reinterpret_cast<const uint16_t*>(src);
    for (; i + 8 <= n; i += 8) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }
}

}  // namespace cpu
}  // namespace tlengine
