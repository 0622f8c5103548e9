// uint8 NHWC batch -> crop/mirror -> (x/255 - mean)/std -> [N,C,out_h,out_w] float32/float16/bfloat16.
//
// Layout of the result: NCHW-contiguous, or with channels_last = true torch.channels_last
// (same shape [N,C,out_h,out_w], strides (out_h*out_w*C, 1, out_w*C, C)), the layout a
// channels-last backbone wants; for NHWC input it is also the order the pixels are read in.
//
// Arithmetic, identical on CPU and CUDA: per channel the host precomputes in float32
// scale = 1/(255*std) and shift = -mean/std (normalize_coefficients, ops/common.h); every
// element is then x * scale + shift, the multiply and the add each rounded to float32 (never
// contracted into an fma: the CPU build uses -ffp-contract=off, the CUDA kernel
// __fmul_rn/__fadd_rn), then rounded once to the output dtype (round to nearest even). CPU and
// CUDA results are therefore bit-identical; they differ from the reference's two-step
// (x/255 - mean)/std by float32 rounding only.
//
// Crop offsets outside the image: the CPU kernel raises IndexError before writing; the CUDA
// kernel checks them on the device (no host synchronisation) and fails a device-side
// assertion (reported at the next synchronising call).
#pragma once
#include <ATen/ATen.h>

namespace tlengine {
// images uint8 [N,H,W,C]; offsets int64 [N,2] (top, left); mirror bool [N].
at::Tensor normalize_images(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror,
                            int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                            at::ScalarType dtype, bool channels_last);
}  // namespace tlengine
