// tlengine._C: the fused feature-cache ops, registered with the dispatcher so that
// torch.ops.tlengine.*, torch.compile and torch.library.opcheck see them. Semantics:
// engine/kernels/reference.py. Device kernels: csrc/ops/cpu/*.cpp, csrc/ops/cuda/*.cu
// (TORCH_LIBRARY_IMPL(tlengine, CPU / CUDA, m)).
#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <string>

#include "ops/gather_dequantize.h"
#include "ops/normalize_images.h"
#include "ops/pool_quantize_scatter.h"

#ifndef TLENGINE_VERSION
#define TLENGINE_VERSION "0.1.0"
#endif

TORCH_LIBRARY(tlengine, m) {
  m.def(
      "normalize_images(Tensor images, Tensor offsets, Tensor mirror, int out_h, int out_w, float[] mean, "
      "float[] std, ScalarType dtype, bool channels_last=False) -> Tensor");
  m.def(
      "pool_quantize_scatter(Tensor features, Tensor(a!) cache, Tensor(b!) scales, Tensor rows, str pooling, "
      "bool l2_normalize) -> ()");
  m.def("gather_dequantize(Tensor cache, Tensor scales, Tensor rows, ScalarType dtype) -> Tensor");
}

// C++ entry points (declared in ops/*.h): go through the dispatcher like torch.ops does.
namespace tlengine {

at::Tensor normalize_images(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& mirror,
                            int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                            at::ScalarType dtype, bool channels_last) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlengine::normalize_images", "")
                       .typed<decltype(normalize_images)>();
  return op.call(images, offsets, mirror, out_h, out_w, mean, std, dtype, channels_last);
}

void pool_quantize_scatter(const at::Tensor& features, at::Tensor& cache, at::Tensor& scales, const at::Tensor& rows,
                           c10::string_view pooling, bool l2_normalize) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlengine::pool_quantize_scatter", "")
                       .typed<decltype(pool_quantize_scatter)>();
  op.call(features, cache, scales, rows, pooling, l2_normalize);
}

at::Tensor gather_dequantize(const at::Tensor& cache, const at::Tensor& scales, const at::Tensor& rows,
                             at::ScalarType dtype) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlengine::gather_dequantize", "")
                       .typed<decltype(gather_dequantize)>();
  return op.call(cache, scales, rows, dtype);
}

}  // namespace tlengine

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tlengine fused kernels; the ops themselves are torch.ops.tlengine.*";
  m.def("version", [] { return std::string(TLENGINE_VERSION); });
  m.def("has_cuda", [] {
#ifdef TLENGINE_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the CUDA kernels were compiled into this build.");
  m.def("build_info", [] {
    pybind11::dict info;
#ifdef TLENGINE_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
#ifdef _OPENMP
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
#if defined(__AVX512F__)
    info["simd"] = "avx512";
#elif defined(__AVX2__)
    info["simd"] = "avx2";
#elif defined(__ARM_NEON)
    info["simd"] = "neon";
#else
    info["simd"] = "baseline";
#endif
#ifdef __F16C__
    info["f16c"] = true;
#else
    info["f16c"] = false;
#endif
    return info;
  }, "How the extension was compiled (CUDA, OpenMP, SIMD level).");
}
