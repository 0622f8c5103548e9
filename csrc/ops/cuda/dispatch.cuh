// AT_DISPATCH_SWITCH case lists shared by the CUDA kernels.
#pragma once

#include <ATen/Dispatch.h>

// float32 / float16 / bfloat16: features read as is, and every output dtype.
#define TLE_FLOAT_CASES(...)                   \
  AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)    \
  AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)     \
  AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__)

// The cache dtypes: the float ones and int8 (with a per-row scale).
#define TLE_CACHE_CASES(...)      \
  TLE_FLOAT_CASES(__VA_ARGS__)    \
  AT_DISPATCH_CASE(at::kChar, __VA_ARGS__)
