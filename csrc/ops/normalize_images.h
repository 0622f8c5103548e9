// uint8 NHWC batch -> crop/mirror -> (x/255 - mean)/std -> NCHW float32/float16/bfloat16.
#pragma once
#include <ATen/ATen.h>

namespace tlengine {
// images uint8 [N,H,W,C]; offsets int64 [N,2] (top, left); mirror bool [N].
at::Tensor normalize_images(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror,
                            int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                            at::ScalarType dtype);
}  // namespace tlengine
