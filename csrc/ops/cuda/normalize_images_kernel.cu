// CUDA implementation of tlengine::normalize_images (semantics: engine/kernels/reference.py):
// uint8 [N,H,W,C] -> crop [out_h,out_w] at offsets[n] = (top, left) -> mirror left-right where
// mirror[n] -> (x/255 - mean[c]) / std[c] -> [N,C,out_h,out_w] float32 / float16 / bfloat16.
//
// Grid-stride loop, one thread per output pixel (n, y, x): it reads the pixel's C contiguous
// bytes and writes C values, one per output plane; neighbouring threads take neighbouring x,
// so every plane write is coalesced. The per-channel (scale, shift) coefficients come from
// normalize_coefficients (../common.h, shared with the CPU kernel) and travel as a kernel
// argument (C <= kMaxChannels); pixels go through normalize_pixel_uncontracted, which rounds
// like the CPU kernel's normalize_pixel (no fma). Crop offsets are bounds-checked on the
// device (min / max, one synchronisation) before the launch.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/amin.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../checks.h"
#include "../common.h"
#include "dispatch.cuh"

namespace tlengine {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChannels = 16;
constexpr int64_t kMaxBlocks = 65535;  // grid-stride beyond this

struct ChannelCoeffs {
  NormalizeCoeff c[kMaxChannels];
};

template <typename out_t>
__global__ void __launch_bounds__(kThreads)
normalize_images_kernel(const uint8_t* __restrict__ images, const int64_t* __restrict__ offsets,
                        const bool* __restrict__ mirror, out_t* __restrict__ out, int64_t n, int64_t h, int64_t w,
                        int channels, int64_t out_h, int64_t out_w, ChannelCoeffs coeffs) {
  const int64_t plane = out_h * out_w;
  const int64_t total = n * plane;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t s = idx / plane;
    const int64_t pos = idx - s * plane;  // y * out_w + x
    const int64_t y = pos / out_w;
    const int64_t x = pos - y * out_w;
    const int64_t top = offsets[2 * s];
    const int64_t left = offsets[2 * s + 1];
    const int64_t src_x = crop_column(x, left, out_w, mirror[s]);
    const uint8_t* pixel = images + ((s * h + top + y) * w + src_x) * channels;
    out_t* dst = out + s * channels * plane + pos;
    // Unrolled with constant indices so coeffs stays in the parameter bank (a dynamic
    // index would copy it to local memory).
#pragma unroll
    for (int c = 0; c < kMaxChannels; ++c) {
      if (c < channels) dst[c * plane] = static_cast<out_t>(normalize_pixel_uncontracted(pixel[c], coeffs.c[c]));
    }
  }
}

template <typename out_t>
void launch_normalize(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror, at::Tensor& out,
                      const ChannelCoeffs& coeffs) {
  const int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  const int64_t out_h = out.size(2), out_w = out.size(3);
  const int64_t pixels = n * out_h * out_w;
  const int64_t blocks = std::min<int64_t>((pixels + kThreads - 1) / kThreads, kMaxBlocks);
  normalize_images_kernel<out_t><<<static_cast<unsigned>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      images.const_data_ptr<uint8_t>(), offsets.const_data_ptr<int64_t>(), mirror.const_data_ptr<bool>(),
      out.data_ptr<out_t>(), n, h, w, static_cast<int>(c), out_h, out_w, coeffs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor normalize_images_cuda(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror,
                                 int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> stdev,
                                 at::ScalarType dtype) {
  check_normalize_images_args(images, offsets, mirror, out_h, out_w, mean, stdev, dtype);
  const int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  TORCH_CHECK_VALUE(c <= kMaxChannels, "normalize_images (CUDA) supports at most ", kMaxChannels,
                    " channels, got ", c);
  TORCH_CHECK(images.is_cuda(), "normalize_images (CUDA): images must be a CUDA tensor, got ", images.device());
  c10::cuda::CUDAGuard guard(images.device());

  if (n > 0) {  // crop windows inside the images, checked on the device (one sync)
    const at::Tensor bounds = at::cat({at::amin(offsets, {0}), at::amax(offsets, {0})}).cpu();
    const int64_t* b = bounds.data_ptr<int64_t>();  // min top, min left, max top, max left
    TORCH_CHECK_INDEX(b[0] >= 0 && b[1] >= 0 && b[2] <= h - out_h && b[3] <= w - out_w, "crop offsets must keep a ",
                      out_h, "x", out_w, " window inside ", h, "x", w, " images");
  }
  at::Tensor out = at::empty({n, c, out_h, out_w}, images.options().dtype(dtype));
  if (out.numel() == 0) return out;

  ChannelCoeffs coeffs{};
  for (int64_t i = 0; i < c; ++i) {
    coeffs.c[i] = normalize_coefficients(static_cast<float>(mean[i]), static_cast<float>(stdev[i]));
  }
  const at::Tensor src = images.contiguous();
  AT_DISPATCH_SWITCH(dtype, "normalize_images_cuda", TLE_FLOAT_CASES([&] {
    launch_normalize<scalar_t>(src, offsets.contiguous(), mirror.contiguous(), out, coeffs);
  }));
  return out;
}

}  // namespace
}  // namespace tlengine

TORCH_LIBRARY_IMPL(tlengine, CUDA, m) {
  m.impl("normalize_images", &tlengine::normalize_images_cuda);
}
