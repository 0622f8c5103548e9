// CUDA implementation of tlengine::pool_quantize_scatter (semantics: engine/kernels/reference.py).
//
// features [N,C,H,W] or [N,T,D] (float32/float16/bfloat16 read as is, float64 converted to
// float32 first; accumulation in float32) -> pool (avg / max / cls / none) -> optional L2 per
// vector -> cast or int8-quantise -> cache[rows[n]], scales[rows[n]] (in place).
//
// Layout: per sample the features are either token-major x[t][d] ([N,T,D], channels_last
// NCHW maps) or channel-major x[d][t] (NCHW, transposed [N,T,D]); the layout the tensor
// already has is used (as the CPU kernel does), other strides are made contiguous first.
//
// Cache: rows contiguous (stride(1) == 1) and possibly strided (a row slice of a bigger cache,
// stride(0) >= D_row), as on the CPU; the kernels address it through both strides.
//
// Row indices are bounds-checked on the device (row_in_range, dispatch.cuh): nothing is copied
// to the host, so a call never blocks and can be captured in a CUDA graph. A block whose row
// is out of range writes nothing and fails a device-side assertion (../pool_quantize_scatter.h).
//
// Repeated rows (last occurrence wins): before any launch rows is stable-sorted on the
// device; `order` is the permutation and `is_last[i]` marks the last occurrence of each
// distinct row in sorted order. Blocks are indexed by the sorted position i, handle sample
// order[i], and return at once unless is_last[i]: exactly one sample writes each cache row.
//
// Kernels (the arithmetic goes through ../common.h, like the CPU kernel's):
// * avg / max / cls: pool_rows_kernel, one block of 256 threads per sample.
//   Phase 1 pools the row into a float buffer (dynamic shared memory, or a global workspace
//   for rows longer than kSmemRowFloats): channel-major -> one warp per contiguous channel
//   plane (coalesced, cub::WarpReduce); token-major -> one thread per d looping over t
//   (coalesced across the threads). Phase 2: L2 sum of squares in double (cub::BlockReduce),
//   the row divided by l2_norm_clamped (as the CPU kernel). Phase 3: max |x| for the int8
//   scale (cub::BlockReduce), then the row is written.
// * none: tiles of 32 tokens x 32 channels staged through (padded, conflict-free) shared
//   memory, so both the global reads (along the contiguous axis of either layout) and the
//   cache writes (along each token's channels) are coalesced.
//   none_stats_kernel: per token, its clamped L2 norm (1 without L2) and max |v| / norm
//   (cub::WarpReduce across the 32 channel lanes). none_row_scale_kernel (int8 only): the
//   row's scale from the max over its tokens (cub::BlockReduce): the int8 scale is per
//   cache row, i.e. across all tokens. none_write_kernel: v / norm, cast or quantise, write.
// * an empty row (D_row == 0): empty_rows_kernel writes only the scale (1).
// NaN: pooling and the max |x| propagate it (NanMax, as torch.amax), so a NaN row gets a NaN
// int8 scale and all-zero codes (common.h), exactly as on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "../common.h"
#include "dispatch.cuh"

namespace tlengine {
namespace {

constexpr int kThreads = 256;             // pool_rows_kernel / none_row_scale_kernel block size
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int64_t kSmemRowFloats = 8192;  // rows up to 32 KiB are pooled in shared memory
constexpr int kTile = 32;                 // none: a tile is kTile tokens x kTile channels
constexpr int kTileRows = 8;              // none: block = kTile x kTileRows threads
constexpr int kTokensPerThread = kTile / kTileRows;

using BlockReduceF = cub::BlockReduce<float, kThreads>;
using BlockReduceD = cub::BlockReduce<double, kThreads>;
using WarpReduceF = cub::WarpReduce<float>;
using WarpReduceD = cub::WarpReduce<double>;

// max that propagates NaN, like torch.amax.
struct NanMax {
  __device__ __forceinline__ float operator()(float a, float b) const { return (a > b || a != a) ? a : b; }
};

template <typename cache_t>
__device__ __forceinline__ cache_t encode(float v, float scale) {
  if constexpr (std::is_same_v<cache_t, int8_t>) {
    return quantize_int8(v, scale);
  } else {
    return static_cast<cache_t>(v);
  }
}

// ------------------------------------------------------------------ avg / max / cls
// x contiguous per sample: channel_major -> x[n][d][t], else x[n][t][d]. tokens = T (or H*W),
// dim = D (or C). One block per sorted position i (grid = N).
template <typename feat_t, typename cache_t>
__global__ void __launch_bounds__(kThreads)
pool_rows_kernel(const feat_t* __restrict__ x, int64_t tokens, int64_t dim, bool channel_major, int pooling,
                 bool l2_normalize, const int64_t* __restrict__ order, const bool* __restrict__ is_last,
                 const int64_t* __restrict__ rows, int64_t num_rows, cache_t* __restrict__ cache, int64_t cache_s0,
                 int64_t cache_s1, float* __restrict__ scales, int64_t scales_s0, float* __restrict__ workspace) {
  extern __shared__ float smem_row[];
  __shared__ typename BlockReduceF::TempStorage block_temp;
  __shared__ typename BlockReduceD::TempStorage block_temp_d;
  __shared__ typename WarpReduceF::TempStorage warp_temp[kWarps];
  __shared__ float broadcast;

  const int64_t i = blockIdx.x;
  if (!is_last[i]) return;  // uniform across the block, before any barrier
  const int64_t n = order[i];
  const int64_t row = rows[n];
  if (!row_in_range(row, num_rows)) return;  // uniform too: never write outside the cache
  const int tid = threadIdx.x;
  const feat_t* xn = x + n * tokens * dim;
  float* buf = workspace != nullptr ? workspace + n * dim : smem_row;
  const bool is_max = pooling == static_cast<int>(Pooling::Max);

  // Phase 1: pooled row -> buf[0, dim).
  if (pooling == static_cast<int>(Pooling::Cls)) {  // token 0 (tokens >= 1, checked on the host)
    for (int64_t d = tid; d < dim; d += kThreads) buf[d] = static_cast<float>(xn[channel_major ? d * tokens : d]);
  } else if (channel_major) {  // avg / max over each contiguous (n, d) plane, one warp per plane
    const int warp = tid / kWarpSize;
    const int lane = tid % kWarpSize;
    WarpReduceF warp_reduce(warp_temp[warp]);
    for (int64_t d = warp; d < dim; d += kWarps) {  // the same d for all lanes: warp-uniform loop
      const feat_t* plane = xn + d * tokens;
      float acc = is_max ? -INFINITY : 0.0f;
      for (int64_t t = lane; t < tokens; t += kWarpSize) {
        const float v = static_cast<float>(plane[t]);
        acc = is_max ? NanMax()(acc, v) : acc + v;
      }
      const float total = is_max ? warp_reduce.Reduce(acc, NanMax()) : warp_reduce.Sum(acc);
      __syncwarp();  // warp_temp is reused for the next plane
      if (lane == 0) buf[d] = is_max ? total : (tokens > 0 ? total / static_cast<float>(tokens) : 0.0f);
    }
  } else {  // avg / max over t, one thread per d (coalesced across the threads)
    for (int64_t d = tid; d < dim; d += kThreads) {
      float acc = is_max ? -INFINITY : 0.0f;
      for (int64_t t = 0; t < tokens; ++t) {
        const float v = static_cast<float>(xn[t * dim + d]);
        acc = is_max ? NanMax()(acc, v) : acc + v;
      }
      buf[d] = is_max ? acc : (tokens > 0 ? acc / static_cast<float>(tokens) : 0.0f);
    }
  }
  __syncthreads();  // buf complete (also for the global workspace: same block)

  // Phase 2: the clamped L2 norm (1 without L2; v / 1 == v).
  float norm = 1.0f;
  if (l2_normalize) {
    double sum_squares = 0.0;  // a float's square is exact in double, as in the CPU kernel
    for (int64_t d = tid; d < dim; d += kThreads) {
      const double v = buf[d];
      sum_squares += v * v;
    }
    const double total = BlockReduceD(block_temp_d).Sum(sum_squares);  // valid in thread 0
    if (tid == 0) broadcast = l2_norm_clamped(total);
    __syncthreads();
    norm = broadcast;
    __syncthreads();  // everyone has read `broadcast` before it is reused below
  }

  // Phase 3: int8 scale, then quantise / cast the row into the cache.
  cache_t* out = cache + row * cache_s0;
  float scale = 1.0f;
  if constexpr (std::is_same_v<cache_t, int8_t>) {
    float abs_max = 0.0f;
    for (int64_t d = tid; d < dim; d += kThreads) abs_max = NanMax()(abs_max, fabsf(buf[d] / norm));
    const float total = BlockReduceF(block_temp).Reduce(abs_max, NanMax());  // valid in thread 0
    if (tid == 0) broadcast = int8_scale(total);
    __syncthreads();
    scale = broadcast;
  }
  for (int64_t d = tid; d < dim; d += kThreads) out[d * cache_s1] = encode<cache_t>(buf[d] / norm, scale);
  if (tid == 0) scales[row * scales_s0] = scale;
}

// ------------------------------------------------------------------ none
// tile[d - d0][t - t0] for the kTile x kTile chunk at (t0, d0), zero outside [tokens) x [dim).
// Global reads run along threadIdx.x over the contiguous axis of the layout; the +1 padding
// keeps both the column writes (token-major) and the column reads below conflict-free.
template <typename feat_t>
__device__ __forceinline__ void load_tile(float (&tile)[kTile][kTile + 1], const feat_t* __restrict__ xn,
                                          bool channel_major, int64_t tokens, int64_t dim, int64_t t0, int64_t d0) {
  const int tx = threadIdx.x;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    if (channel_major) {  // x[d][t]: tx along t
      const int64_t d = d0 + k, t = t0 + tx;
      tile[k][tx] = (d < dim && t < tokens) ? static_cast<float>(xn[d * tokens + t]) : 0.0f;
    } else {  // x[t][d]: tx along d
      const int64_t t = t0 + k, d = d0 + tx;
      tile[tx][k] = (d < dim && t < tokens) ? static_cast<float>(xn[t * dim + d]) : 0.0f;
    }
  }
}

// Grid: (sorted position i, token tile) flattened, tiles per sample = ceil(tokens / kTile);
// block (kTile, kTileRows): thread (tx, ty) owns channel d0 + tx of the tile's tokens
// ty + kTileRows * k, so each token is reduced across the 32 lanes of warp ty.
// stats[n * tokens + t] = (norm_t, max_d |v_td| / norm_t), norm_t = l2_norm_clamped or 1.
// Since v -> v / norm_t is monotonic, max_d fl(|v_td| / norm_t) == fl(max_d |v_td| / norm_t).
template <typename feat_t>
__global__ void __launch_bounds__(kTile * kTileRows)
none_stats_kernel(const feat_t* __restrict__ x, int64_t tokens, int64_t dim, bool channel_major, int64_t tiles,
                  const int64_t* __restrict__ order, const bool* __restrict__ is_last, bool l2_normalize,
                  float2* __restrict__ stats) {
  __shared__ float tile[kTile][kTile + 1];
  __shared__ typename WarpReduceF::TempStorage warp_temp[kTileRows];
  __shared__ typename WarpReduceD::TempStorage warp_temp_d[kTileRows];

  const int64_t i = blockIdx.x / tiles;
  const int64_t t0 = (blockIdx.x % tiles) * kTile;
  if (!is_last[i]) return;  // uniform across the block, before any barrier
  const int64_t n = order[i];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const feat_t* xn = x + n * tokens * dim;

  double sum_squares[kTokensPerThread];
  float abs_max[kTokensPerThread];
#pragma unroll
  for (int k = 0; k < kTokensPerThread; ++k) {
    sum_squares[k] = 0.0;
    abs_max[k] = 0.0f;
  }
  for (int64_t d0 = 0; d0 < dim; d0 += kTile) {
    __syncthreads();  // the previous chunk has been consumed
    load_tile(tile, xn, channel_major, tokens, dim, t0, d0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTokensPerThread; ++k) {
      const float v = tile[tx][ty + k * kTileRows];
      sum_squares[k] += static_cast<double>(v) * v;
      abs_max[k] = NanMax()(abs_max[k], fabsf(v));
    }
  }
  WarpReduceD warp_reduce_d(warp_temp_d[ty]);
  WarpReduceF warp_reduce(warp_temp[ty]);
#pragma unroll
  for (int k = 0; k < kTokensPerThread; ++k) {
    const double ss = warp_reduce_d.Sum(sum_squares[k]);  // valid in lane 0
    const float am = warp_reduce.Reduce(abs_max[k], NanMax());
    __syncwarp();  // temp storage is reused for the next token
    const int64_t t = t0 + ty + k * kTileRows;
    if (tx == 0 && t < tokens) {
      const float norm = l2_normalize ? l2_norm_clamped(ss) : 1.0f;
      stats[n * tokens + t] = make_float2(norm, am / norm);
    }
  }
}

// int8 only: row_scale[n] = int8_scale(max over the sample's tokens of stats.y). Grid = N.
__global__ void __launch_bounds__(kThreads)
none_row_scale_kernel(const float2* __restrict__ stats, int64_t tokens, const int64_t* __restrict__ order,
                      const bool* __restrict__ is_last, float* __restrict__ row_scale) {
  __shared__ typename BlockReduceF::TempStorage block_temp;
  const int64_t i = blockIdx.x;
  if (!is_last[i]) return;
  const int64_t n = order[i];
  float abs_max = 0.0f;
  for (int64_t t = threadIdx.x; t < tokens; t += kThreads) abs_max = NanMax()(abs_max, stats[n * tokens + t].y);
  const float total = BlockReduceF(block_temp).Reduce(abs_max, NanMax());  // valid in thread 0
  if (threadIdx.x == 0) row_scale[n] = int8_scale(total);
}

// cache[rows[n], t * dim + d] = encode(v_td / norm_t, scale_n); the tile at t0 == 0 also
// writes scales[rows[n]]. Same grid and block as none_stats_kernel. stats == nullptr: no L2
// (norm 1); row_scale: int8 only.
template <typename feat_t, typename cache_t>
__global__ void __launch_bounds__(kTile * kTileRows)
none_write_kernel(const feat_t* __restrict__ x, int64_t tokens, int64_t dim, bool channel_major, int64_t tiles,
                  const int64_t* __restrict__ order, const bool* __restrict__ is_last,
                  const int64_t* __restrict__ rows, int64_t num_rows, const float2* __restrict__ stats,
                  const float* __restrict__ row_scale, cache_t* __restrict__ cache, int64_t cache_s0,
                  int64_t cache_s1, float* __restrict__ scales, int64_t scales_s0) {
  __shared__ float tile[kTile][kTile + 1];

  const int64_t i = blockIdx.x / tiles;
  const int64_t t0 = (blockIdx.x % tiles) * kTile;
  if (!is_last[i]) return;  // uniform across the block, before any barrier
  const int64_t n = order[i];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const feat_t* xn = x + n * tokens * dim;
  const int64_t row = rows[n];
  if (!row_in_range(row, num_rows)) return;  // uniform across the block, before any barrier
  cache_t* out = cache + row * cache_s0;

  float scale = 1.0f;
  if constexpr (std::is_same_v<cache_t, int8_t>) scale = row_scale[n];
  if (t0 == 0 && tx == 0 && ty == 0) scales[row * scales_s0] = scale;

  float norm[kTokensPerThread];
#pragma unroll
  for (int k = 0; k < kTokensPerThread; ++k) {
    const int64_t t = t0 + ty + k * kTileRows;
    norm[k] = (stats != nullptr && t < tokens) ? stats[n * tokens + t].x : 1.0f;
  }
  for (int64_t d0 = 0; d0 < dim; d0 += kTile) {
    __syncthreads();  // the previous chunk has been consumed
    load_tile(tile, xn, channel_major, tokens, dim, t0, d0);
    __syncthreads();
    const int64_t d = d0 + tx;
#pragma unroll
    for (int k = 0; k < kTokensPerThread; ++k) {
      const int64_t t = t0 + ty + k * kTileRows;
      if (t < tokens && d < dim) {  // consecutive tx -> consecutive cache columns
        out[(t * dim + d) * cache_s1] = encode<cache_t>(tile[tx][ty + k * kTileRows] / norm[k], scale);
      }
    }
  }
}

// ------------------------------------------------------------------ empty rows
// D_row == 0: nothing to store but the scale, which is 1 (int8: an all-zero row; float: 1).
// Grid-stride over the n samples; repeated rows all write the same value.
__global__ void __launch_bounds__(kThreads)
empty_rows_kernel(const int64_t* __restrict__ rows, int64_t n, int64_t num_rows, float* __restrict__ scales,
                  int64_t scales_s0) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int64_t row = rows[k];
    if (row_in_range(row, num_rows)) scales[row * scales_s0] = 1.0f;
  }
}

// ------------------------------------------------------------------ host
unsigned grid_size(int64_t blocks) {
  TORCH_CHECK(blocks > 0 && blocks <= std::numeric_limits<int32_t>::max(), "pool_quantize_scatter: a grid of ",
              blocks, " blocks is out of range");
  return static_cast<unsigned>(blocks);
}

struct ScatterArgs {
  at::Tensor x;        // features, contiguous per sample in the chosen layout
  at::Tensor cache;    // [R, d_row], rows contiguous, row stride >= d_row
  at::Tensor scales;   // [R], any stride
  at::Tensor rows;     // int64 [n], contiguous; values checked on the device against [0, R)
  at::Tensor order;    // int64 [n]: stable argsort of rows
  at::Tensor is_last;  // bool [n]: sorted position i is the last occurrence of its row
  int64_t n = 0, tokens = 0, dim = 0, d_row = 0;
  bool channel_major = false;
  Pooling pooling = Pooling::Avg;
  bool l2_normalize = false;
};

template <typename feat_t, typename cache_t>
void launch_pool_quantize_scatter(const ScatterArgs& a) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const feat_t* x_ptr = a.x.const_data_ptr<feat_t>();
  cache_t* cache_ptr = a.cache.data_ptr<cache_t>();
  float* scales_ptr = a.scales.data_ptr<float>();
  const int64_t* order_ptr = a.order.const_data_ptr<int64_t>();
  const bool* last_ptr = a.is_last.const_data_ptr<bool>();
  const int64_t* rows_ptr = a.rows.const_data_ptr<int64_t>();
  const int64_t cache_s0 = a.cache.stride(0), cache_s1 = a.cache.stride(1), scales_s0 = a.scales.stride(0);
  const int64_t num_rows = a.cache.size(0);
  const auto float_options = a.x.options().dtype(at::kFloat);

  if (a.pooling != Pooling::None) {
    at::Tensor workspace;
    float* workspace_ptr = nullptr;
    size_t smem = static_cast<size_t>(a.d_row) * sizeof(float);
    if (a.d_row > kSmemRowFloats) {  // long rows: pool into global memory instead
      workspace = at::empty({a.n, a.d_row}, float_options);
      workspace_ptr = workspace.data_ptr<float>();
      smem = 0;
    }
    pool_rows_kernel<feat_t, cache_t><<<grid_size(a.n), kThreads, smem, stream>>>(
        x_ptr, a.tokens, a.dim, a.channel_major, static_cast<int>(a.pooling), a.l2_normalize, order_ptr, last_ptr,
        rows_ptr, num_rows, cache_ptr, cache_s0, cache_s1, scales_ptr, scales_s0, workspace_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  constexpr bool kInt8 = std::is_same_v<cache_t, int8_t>;
  const int64_t tiles = (a.tokens + kTile - 1) / kTile;  // >= 1: d_row > 0 implies tokens > 0
  const dim3 tile_block(kTile, kTileRows);
  at::Tensor stats, row_scale;
  const float2* stats_ptr = nullptr;
  const float* row_scale_ptr = nullptr;
  if (a.l2_normalize || kInt8) {
    stats = at::empty({a.n, a.tokens, 2}, float_options);  // float2 (norm, max|v|/norm) per token
    float2* stats_out = reinterpret_cast<float2*>(stats.data_ptr<float>());
    none_stats_kernel<feat_t><<<grid_size(a.n * tiles), tile_block, 0, stream>>>(
        x_ptr, a.tokens, a.dim, a.channel_major, tiles, order_ptr, last_ptr, a.l2_normalize, stats_out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (a.l2_normalize) stats_ptr = stats_out;
    if constexpr (kInt8) {
      row_scale = at::empty({a.n}, float_options);
      none_row_scale_kernel<<<grid_size(a.n), kThreads, 0, stream>>>(stats_out, a.tokens, order_ptr, last_ptr,
                                                                     row_scale.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      row_scale_ptr = row_scale.const_data_ptr<float>();
    }
  }
  none_write_kernel<feat_t, cache_t><<<grid_size(a.n * tiles), tile_block, 0, stream>>>(
      x_ptr, a.tokens, a.dim, a.channel_major, tiles, order_ptr, last_ptr, rows_ptr, num_rows, stats_ptr,
      row_scale_ptr, cache_ptr, cache_s0, cache_s1, scales_ptr, scales_s0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void pool_quantize_scatter_cuda(const at::Tensor& features_in, at::Tensor& cache, at::Tensor& scales,
                                const at::Tensor& rows_in, c10::string_view pooling_name, bool l2_normalize) {
  const PoolShape shape = check_pool_quantize_scatter_args(features_in, cache, scales, rows_in, pooling_name);
  const int64_t n = shape.n;
  TORCH_CHECK(cache.is_cuda(), "pool_quantize_scatter (CUDA): the cache must be a CUDA tensor, got ", cache.device());
  c10::cuda::CUDAGuard guard(cache.device());
  if (n == 0) return;

  // Row bounds are checked by the kernels, on the device: no host synchronisation here.
  const at::Tensor rows = rows_in.contiguous();
  if (shape.row_len == 0) {  // nothing to store; an empty row's scale is 1 (int8: all-zero row) or 1 (float)
    empty_rows_kernel<<<grid_size(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)), kThreads, 0,
                        c10::cuda::getCurrentCUDAStream()>>>(rows.const_data_ptr<int64_t>(), n, cache.size(0),
                                                             scales.data_ptr<float>(), scales.stride(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  SampleLayout layout = sample_layout(features_in);
  if (layout.x.scalar_type() == at::kDouble) layout.x = layout.x.to(at::kFloat).contiguous();  // as the reference

  // Winners: stable sort; sorted position j is a last occurrence iff sorted[j + 1] != sorted[j].
  at::Tensor sorted, order;
  std::tie(sorted, order) = at::sort(rows, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor is_last = at::ones_like(sorted, sorted.options().dtype(at::kBool));
  if (n > 1) is_last.narrow(0, 0, n - 1).copy_(sorted.narrow(0, 1, n - 1).ne(sorted.narrow(0, 0, n - 1)));

  ScatterArgs a;
  a.x = layout.x;
  a.cache = cache;
  a.scales = scales;
  a.rows = rows;
  a.order = order.contiguous();
  a.is_last = is_last;
  a.n = n;
  a.tokens = shape.tokens;
  a.dim = shape.dim;
  a.d_row = shape.row_len;
  a.channel_major = layout.channel_major;
  a.pooling = shape.pooling;
  a.l2_normalize = l2_normalize;
  AT_DISPATCH_SWITCH(a.x.scalar_type(), "pool_quantize_scatter_cuda", TLE_FLOAT_CASES([&] {
    using feat_t = scalar_t;
    AT_DISPATCH_SWITCH(cache.scalar_type(), "pool_quantize_scatter_cuda",
                       TLE_CACHE_CASES([&] { launch_pool_quantize_scatter<feat_t, scalar_t>(a); }));
  }));
}

}  // namespace
}  // namespace tlengine

TORCH_LIBRARY_IMPL(tlengine, CUDA, m) {
  m.impl("pool_quantize_scatter", &tlengine::pool_quantize_scatter_cuda);
}
