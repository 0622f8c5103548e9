// Arithmetic shared by the CPU (C++) and CUDA kernels, so the CPU tests exercise the
// same math the GPU runs. Semantics are defined by engine/kernels/reference.py.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TLE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TLE_HOST_DEVICE inline
#endif

namespace tlengine {

constexpr float kL2Eps = 1e-12f;
constexpr float kInt8Max = 127.0f;

// (x/255 - mean) / std, written as x * (1/(255*std)) + (-mean/std): the CPU and CUDA
// kernels both precompute (scale, shift) per channel with normalize_coefficients, so
// they round identically. Differs from the reference's two-step form by <= 1 ulp-ish.
struct NormalizeCoeff {
  float scale;
  float shift;
};

TLE_HOST_DEVICE NormalizeCoeff normalize_coefficients(float mean, float std) {
  return NormalizeCoeff{1.0f / (255.0f * std), -mean / std};
}

TLE_HOST_DEVICE float normalize_pixel(uint8_t x, NormalizeCoeff c) {
  return static_cast<float>(x) * c.scale + c.shift;
}

// normalize_pixel for device code: nvcc contracts a*b+c into one fma by default (--fmad=true),
// the CPU build does not (-ffp-contract=off); __fmul_rn/__fadd_rn are never contracted, so the
// CUDA kernel rounds the multiply and the add separately, exactly like the CPU kernel.
// On the host it is normalize_pixel itself.
TLE_HOST_DEVICE float normalize_pixel_uncontracted(uint8_t x, NormalizeCoeff c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(static_cast<float>(x), c.scale), c.shift);
#else
  return normalize_pixel(x, c);
#endif
}

// Source column of output column `x` for a crop starting at `left` of width `out_w`.
TLE_HOST_DEVICE int64_t crop_column(int64_t x, int64_t left, int64_t out_w, bool mirror) {
  return left + (mirror ? (out_w - 1 - x) : x);
}

// 1 / max(||v||, eps) from a sum of squares.
TLE_HOST_DEVICE float inv_l2_norm(float sum_squares) {
  float norm = sqrtf(sum_squares);
  return 1.0f / (norm > kL2Eps ? norm : kL2Eps);
}

// max(||v||, eps) from a sum of squares, for v / l2_norm_clamped(ss). The reference
// divides by the clamped norm (it does not multiply by its inverse), and torch's CPU norm of
// float32 data rounds like a double-precision sqrt: a double sum of squares and dividing
// make the CPU kernel bit-identical to it whenever the sum is exact. NaN propagates, as
// clamp_min does.
TLE_HOST_DEVICE float l2_norm_clamped(double sum_squares) {
  float norm = static_cast<float>(sqrt(sum_squares));
  return norm < kL2Eps ? kL2Eps : norm;
}

// int8 per-row scale from the row's max |value| (NaN if the row has a NaN: the max propagates
// it, as torch.amax does): max/127, or 1 where that is 0 (an all-zero row, or one whose
// largest value is so small that max/127 underflows to 0; its codes are then all 0). A NaN
// max gives a NaN scale and an infinite max an infinite one: quantize_int8 then codes the
// whole row 0, and it dequantises to NaN everywhere (0 * NaN, 0 * inf) instead of to finite
// numbers that hide the bad input.
TLE_HOST_DEVICE float int8_scale(float abs_max) {
  const float scale = abs_max / kInt8Max;
  return scale == 0.0f ? 1.0f : scale;
}

// round-half-to-even(v / scale) clamped to [-127, 127], as torch.round does; 0 where v / scale
// is NaN (a NaN value, a NaN scale, or inf / inf). Converting a NaN float to an integer is
// undefined behaviour in C++ (and differs between x86, ARM and the GPU), so it never happens.
TLE_HOST_DEVICE int8_t quantize_int8(float v, float scale) {
  float q = nearbyintf(v / scale);  // default rounding mode: to nearest, ties to even
  if (q != q) return 0;
  q = q > kInt8Max ? kInt8Max : (q < -kInt8Max ? -kInt8Max : q);
  return static_cast<int8_t>(q);
}

TLE_HOST_DEVICE float dequantize_int8(int8_t q, float scale) {
  return static_cast<float>(q) * scale;
}

// Pooling modes, in the order of the schema's string argument.
enum class Pooling : int { Avg = 0, Max = 1, Cls = 2, None = 3 };

}  // namespace tlengine
