// CPU normalize_images: uint8 NHWC -> crop / mirror -> (x/255 - mean)/std -> NCHW, one pass.
//
// Work unit: one output row y of one image. Its source is one contiguous run of out_w*C
// bytes; each channel is de-interleaved from it with a constant stride (vectorises for
// C = 1, 3, 4). A mirrored row is computed left-to-right and stored reversed, which is
// crop_column(x, left, out_w, true) without a reversed (non-vectorisable) load.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "../checks.h"
#include "convert.h"
#include "huge_pages.h"

namespace tlengine {
namespace {

// out[x] = normalize_pixel(src[x * stride + c]) for one channel of one row.
template <int kStride>
inline void normalize_channel(const uint8_t* __restrict__ src, int64_t stride, int64_t c, NormalizeCoeff k,
                              float* __restrict__ out, int64_t n) {
  const int64_t s = kStride > 0 ? kStride : stride;
  const uint8_t* __restrict__ p = src + c;
  for (int64_t x = 0; x < n; ++x) out[x] = normalize_pixel(p[x * s], k);
}

template <int kStride, typename out_t>
void normalize_rows(const uint8_t* __restrict__ images, const int64_t* __restrict__ offsets,
                    const bool* __restrict__ mirror, const NormalizeCoeff* coeff, out_t* __restrict__ out, int64_t N,
                    int64_t H, int64_t W, int64_t C, int64_t out_h, int64_t out_w) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C * out_w, 1));
  at::parallel_for(0, N * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(2 * out_w);
    float* row = buf.data();
    float* reversed = buf.data() + out_w;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / out_h, y = i % out_h;
      const int64_t top = offsets[2 * n], left = offsets[2 * n + 1];
      const uint8_t* src = images + ((n * H + top + y) * W + left) * C;
      for (int64_t c = 0; c < C; ++c) {
        out_t* dst = out + ((n * C + c) * out_h + y) * out_w;
        if constexpr (std::is_same_v<out_t, float>) {
          if (mirror[n]) {
            normalize_channel<kStride>(src, C, c, coeff[c], row, out_w);
            cpu::reverse_floats(row, dst, out_w);
          } else {
            normalize_channel<kStride>(src, C, c, coeff[c], dst, out_w);
          }
        } else {
          normalize_channel<kStride>(src, C, c, coeff[c], row, out_w);
          if (mirror[n]) cpu::reverse_floats(row, reversed, out_w);
          cpu::store_floats(mirror[n] ? reversed : row, dst, out_w);
        }
      }
    }
  });
}

at::Tensor normalize_images_kernel(const at::Tensor& images_in, const at::Tensor& offsets_in,
                                   const at::Tensor& mirror_in, int64_t out_h, int64_t out_w, at::ArrayRef<double> mean,
                                   at::ArrayRef<double> std, at::ScalarType dtype) {
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

  at::Tensor out = at::empty({N, C, out_h, out_w}, images.options().dtype(dtype));
  if (N == 0 || C == 0) return out;
  cpu::advise_huge_pages(out);
  std::vector<NormalizeCoeff> coeff(C);
  for (int64_t c = 0; c < C; ++c) {
    coeff[c] = normalize_coefficients(static_cast<float>(mean[c]), static_cast<float>(std[c]));
  }

  auto run = [&](auto out_tag) {
    using out_t = decltype(out_tag);
    auto* dst = static_cast<out_t*>(out.mutable_data_ptr());
    const uint8_t* src = images.const_data_ptr<uint8_t>();
    const bool* mir = mirror.const_data_ptr<bool>();
    switch (C) {
      case 1: return normalize_rows<1>(src, off, mir, coeff.data(), dst, N, H, W, C, out_h, out_w);
      case 3: return normalize_rows<3>(src, off, mir, coeff.data(), dst, N, H, W, C, out_h, out_w);
      case 4: return normalize_rows<4>(src, off, mir, coeff.data(), dst, N, H, W, C, out_h, out_w);
      default: return normalize_rows<0>(src, off, mir, coeff.data(), dst, N, H, W, C, out_h, out_w);
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
