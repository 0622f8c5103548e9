// CUDA implementation of tlengine::normalize_images (semantics: engine/kernels/reference.py):
// uint8 [N,H,W,C] -> crop [out_h,out_w] at offsets[n] = (top, left) -> mirror left-right where
// mirror[n] -> (x/255 - mean[c]) / std[c] -> [N,C,out_h,out_w] float32 / float16 / bfloat16,
// NCHW-contiguous or channels-last.
//
// Grid-stride loops; neighbouring threads take neighbouring outputs, so writes are coalesced:
// * NCHW: one thread per output pixel (n, y, x); it reads the pixel's C contiguous bytes and
//   writes one value into each of the C planes.
// * channels-last: one thread per output value (n, y, x, c), in memory order; the C threads of a
//   pixel read its C contiguous bytes.
// The per-channel (scale, shift) coefficients come from normalize_coefficients (../common.h,
// shared with the CPU kernel) and pixels go through normalize_pixel_uncontracted, which rounds
// like the CPU kernel (multiply and add rounded separately, no fma): CPU and CUDA results are
// bit-identical. The coefficients travel as a kernel argument for C <= kArgChannels, else in a
// small device tensor (copied from pinned memory, stream-ordered, no synchronisation); each
// block first copies them to shared memory (up to kSharedChannels), where any channel index is
// cheap. Any number of channels works.
// Crop offsets are checked on the device (no host synchronisation, so the op can be captured in
// a CUDA graph and never stalls the stream): an offset out of range fails a device-side
// assertion (surfacing at the next synchronising call), and its image's outputs are set to NaN
// without reading the images (also where assertions are compiled out).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../checks.h"
#include "../common.h"
#include "dispatch.cuh"

namespace tlengine {
namespace {

constexpr int kThreads = 256;
constexpr int kArgChannels = 16;       // coefficients passed by value up to this many channels
constexpr int kSharedChannels = 4096;  // coefficients copied to shared memory (32 KiB) up to this many
constexpr int64_t kMaxBlocks = 65535;  // grid-stride beyond this

struct ArgCoeffs {
  NormalizeCoeff c[kArgChannels];
};

struct Crop {
  int64_t n, h, w, channels, out_h, out_w;
};

// Block-wide: the channels' coefficients into shared memory (from the argument, or from global
// memory when there are more than kArgChannels), then a barrier. Returns where to read them:
// shared memory, or global memory itself beyond kSharedChannels (no shared copy then).
__device__ __forceinline__ const NormalizeCoeff* load_coeffs(NormalizeCoeff* shared, const ArgCoeffs& arg,
                                                             const NormalizeCoeff* __restrict__ global, int channels) {
  if (channels > kSharedChannels) return global;
  if (global == nullptr) {
    // constant indices only, so `arg` stays in the parameter bank (a dynamic index would copy
    // it to local memory)
#pragma unroll
    for (int c = 0; c < kArgChannels; ++c) {
      if (threadIdx.x == c && c < channels) shared[c] = arg.c[c];
    }
  } else {
    for (int c = threadIdx.x; c < channels; c += blockDim.x) shared[c] = global[c];
  }
  __syncthreads();
  return shared;
}

// Whether image s's crop window lies inside the image; fails a device-side assertion if not.
__device__ __forceinline__ bool crop_in_range(int64_t top, int64_t left, const Crop& g) {
  const bool ok = top >= 0 && left >= 0 && top <= g.h - g.out_h && left <= g.w - g.out_w;
  CUDA_KERNEL_ASSERT_PRINTF(ok, "tlengine: normalize_images crop offsets (%lld, %lld) do not keep a %lldx%lld window "
                            "inside %lldx%lld images", static_cast<long long>(top), static_cast<long long>(left),
                            static_cast<long long>(g.out_h), static_cast<long long>(g.out_w),
                            static_cast<long long>(g.h), static_cast<long long>(g.w));
  return ok;
}

template <typename out_t>
__global__ void __launch_bounds__(kThreads)
normalize_nchw_kernel(const uint8_t* __restrict__ images, const int64_t* __restrict__ offsets,
                      const bool* __restrict__ mirror, out_t* __restrict__ out, Crop g, ArgCoeffs arg,
                      const NormalizeCoeff* __restrict__ global_coeffs) {
  extern __shared__ NormalizeCoeff shared_coeffs[];
  const int channels = static_cast<int>(g.channels);
  const NormalizeCoeff* coeffs = load_coeffs(shared_coeffs, arg, global_coeffs, channels);
  const int64_t plane = g.out_h * g.out_w;
  const int64_t total = g.n * plane;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t s = idx / plane;
    const int64_t pos = idx - s * plane;  // y * out_w + x
    const int64_t y = pos / g.out_w;
    const int64_t x = pos - y * g.out_w;
    const int64_t top = offsets[2 * s];
    const int64_t left = offsets[2 * s + 1];
    out_t* dst = out + s * channels * plane + pos;
    if (!crop_in_range(top, left, g)) {
      for (int c = 0; c < channels; ++c) dst[c * plane] = static_cast<out_t>(NAN);
      continue;
    }
    const int64_t src_x = crop_column(x, left, g.out_w, mirror[s]);
    const uint8_t* pixel = images + ((s * g.h + top + y) * g.w + src_x) * channels;
    for (int c = 0; c < channels; ++c) {
      dst[c * plane] = static_cast<out_t>(normalize_pixel_uncontracted(pixel[c], coeffs[c]));
    }
  }
}

template <typename out_t>
__global__ void __launch_bounds__(kThreads)
normalize_channels_last_kernel(const uint8_t* __restrict__ images, const int64_t* __restrict__ offsets,
                               const bool* __restrict__ mirror, out_t* __restrict__ out, Crop g, ArgCoeffs arg,
                               const NormalizeCoeff* __restrict__ global_coeffs) {
  extern __shared__ NormalizeCoeff shared_coeffs[];
  const int64_t channels = g.channels;
  const NormalizeCoeff* coeffs = load_coeffs(shared_coeffs, arg, global_coeffs, static_cast<int>(channels));
  const int64_t row = g.out_w * channels;  // values per output row
  const int64_t image = g.out_h * row;     // values per output image
  const int64_t total = g.n * image;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t s = idx / image;
    const int64_t rem = idx - s * image;
    const int64_t y = rem / row;
    const int64_t xc = rem - y * row;  // x * C + c
    const int64_t x = xc / channels;
    const int64_t c = xc - x * channels;
    const int64_t top = offsets[2 * s];
    const int64_t left = offsets[2 * s + 1];
    if (!crop_in_range(top, left, g)) {
      out[idx] = static_cast<out_t>(NAN);
      continue;
    }
    const int64_t src_x = crop_column(x, left, g.out_w, mirror[s]);
    const uint8_t value = images[((s * g.h + top + y) * g.w + src_x) * channels + c];
    out[idx] = static_cast<out_t>(normalize_pixel_uncontracted(value, coeffs[c]));
  }
}

template <typename out_t>
void launch_normalize(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror, at::Tensor& out,
                      const Crop& g, bool channels_last, const ArgCoeffs& arg, const NormalizeCoeff* global_coeffs) {
  const int64_t items = channels_last ? out.numel() : g.n * g.out_h * g.out_w;
  const int64_t blocks = std::min<int64_t>((items + kThreads - 1) / kThreads, kMaxBlocks);
  const size_t shared = g.channels <= kSharedChannels ? static_cast<size_t>(g.channels) * sizeof(NormalizeCoeff) : 0;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto kernel = channels_last ? normalize_channels_last_kernel<out_t> : normalize_nchw_kernel<out_t>;
  kernel<<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(
      images.const_data_ptr<uint8_t>(), offsets.const_data_ptr<int64_t>(), mirror.const_data_ptr<bool>(),
      out.mutable_data_ptr<out_t>(), g, arg, global_coeffs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor normalize_images_cuda(const at::Tensor& images_in, const at::Tensor& offsets_in,
                                 const at::Tensor& mirror_in, int64_t out_h, int64_t out_w, at::ArrayRef<double> mean,
                                 at::ArrayRef<double> stdev, at::ScalarType dtype, bool channels_last) {
  check_normalize_images_args(images_in, offsets_in, mirror_in, out_h, out_w, mean, stdev, dtype);
  TORCH_CHECK(images_in.is_cuda(), "normalize_images (CUDA): images must be a CUDA tensor, got ", images_in.device());
  const int64_t n = images_in.size(0), h = images_in.size(1), w = images_in.size(2), c = images_in.size(3);
  c10::cuda::CUDAGuard guard(images_in.device());

  at::Tensor out = at::empty({n, c, out_h, out_w}, images_in.options().dtype(dtype),
                             channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;

  ArgCoeffs arg{};
  at::Tensor coeff_tensor;  // C > kArgChannels: [C] (scale, shift) pairs on the device
  const NormalizeCoeff* global_coeffs = nullptr;
  if (c <= kArgChannels) {
    for (int64_t i = 0; i < c; ++i) {
      arg.c[i] = normalize_coefficients(static_cast<float>(mean[i]), static_cast<float>(stdev[i]));
    }
  } else {
    static_assert(sizeof(NormalizeCoeff) == 2 * sizeof(float), "NormalizeCoeff is two floats");
    at::Tensor host = at::empty({c, 2}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    auto* h_coeffs = host.mutable_data_ptr<float>();
    for (int64_t i = 0; i < c; ++i) {
      const NormalizeCoeff k = normalize_coefficients(static_cast<float>(mean[i]), static_cast<float>(stdev[i]));
      h_coeffs[2 * i] = k.scale;
      h_coeffs[2 * i + 1] = k.shift;
    }
    // non_blocking from pinned memory: ordered on the current stream; the caching host
    // allocator keeps `host` alive until the copy has run
    coeff_tensor = host.to(images_in.device(), /*non_blocking=*/true);
    global_coeffs = reinterpret_cast<const NormalizeCoeff*>(coeff_tensor.const_data_ptr<float>());
  }

  const at::Tensor images = images_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor mirror = mirror_in.contiguous();
  const Crop g{n, h, w, c, out_h, out_w};
  AT_DISPATCH_SWITCH(dtype, "normalize_images_cuda", TLE_FLOAT_CASES([&] {
    launch_normalize<scalar_t>(images, offsets, mirror, out, g, channels_last, arg, global_coeffs);
  }));
  return out;
}

}  // namespace
}  // namespace tlengine

TORCH_LIBRARY_IMPL(tlengine, CUDA, m) {
  m.impl("normalize_images", &tlengine::normalize_images_cuda);
}
