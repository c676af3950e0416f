// FP16 dense GEMV (output head / fp16 mode): y[b][row] = Σ_c x[b][c]·W[row][c], FP32 accumulation.
// See wkv_kernels/gemv_f16.h for the contract.
//
// Fast path (cols % 8 == 0, W and x 16-byte aligned): a "chunk" is 8 consecutive channels = one uint4
// of a row. Each warp owns kRows consecutive rows; lane l takes chunks l, l + 32, … of each of them, so
// a warp-wide load reads 512 contiguous bytes of a row and each x value loaded is reused for kRows rows.
// U chunk-steps of loads are issued before the math. FP16 weights are widened exactly to FP32
// (__half22float2) and multiplied in FP32, so the result is an FP32 dot product of the exact weights.
// Weights bypass L1 (load_stream_u4) so x stays L1-resident for all warps of the SM.
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "wkv_kernels/gemv_f16.h"

namespace wkv::kernels {

namespace {

constexpr int kBlockThreads = 128;
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
constexpr int kRows = 4;
constexpr int kMaxBatch = 8;

template <int B, int U>
__global__ void __launch_bounds__(kBlockThreads) gemv_f16_fast_kernel(int rows, int cols,
                                                                      const uint16_t* __restrict__ W,
                                                                      const float* __restrict__ x,
                                                                      float* __restrict__ y) {
  const int warp = (int)((blockIdx.x * kBlockThreads + threadIdx.x) / kWarpSize);
  const int lane = (int)(threadIdx.x % kWarpSize);
  const int row0 = warp * kRows;
  if (row0 >= rows) return;  // warp-uniform
  const int chunks = cols / 8;
  const size_t x_stride4 = (size_t)cols / 4;
  const uint4* wrow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    wrow[r] = reinterpret_cast<const uint4*>(W) + (size_t)min(row0 + r, rows - 1) * chunks;

  float acc[B][kRows];
#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[b][r] = 0.0f;

  for (int k0 = lane; k0 < chunks; k0 += kWarpSize * U) {
    uint4 q[U][kRows];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kWarpSize;
      if (k < chunks) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) q[u][r] = load_stream_u4(wrow[r] + k);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kWarpSize;
      if (k >= chunks) break;
      float wf[kRows][8];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const uint32_t words[4] = {q[u][r].x, q[u][r].y, q[u][r].z, q[u][r].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(half2_from_bits(words[j]));  // low half = even channel
          wf[r][2 * j] = f.x;
          wf[r][2 * j + 1] = f.y;
        }
      }
      const float4* xc = reinterpret_cast<const float4*>(x) + (size_t)k * 2;
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float4 x0 = __ldg(xc + b * x_stride4);
        const float4 x1 = __ldg(xc + b * x_stride4 + 1);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          float s = acc[b][r];
          s = fmaf(wf[r][0], x0.x, s);
          s = fmaf(wf[r][1], x0.y, s);
          s = fmaf(wf[r][2], x0.z, s);
          s = fmaf(wf[r][3], x0.w, s);
          s = fmaf(wf[r][4], x1.x, s);
          s = fmaf(wf[r][5], x1.y, s);
          s = fmaf(wf[r][6], x1.z, s);
          s = fmaf(wf[r][7], x1.w, s);
          acc[b][r] = s;
        }
      }
    }
  }

#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[b][r] = warp_sum(acc[b][r]);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        if (row0 + r < rows) y[(size_t)b * rows + row0 + r] = acc[b][r];
  }
}

// Any shape: one warp per row, lane l takes channels l, l + 32, …
template <int B>
__global__ void __launch_bounds__(kBlockThreads) gemv_f16_generic_kernel(int rows, int cols,
                                                                         const uint16_t* __restrict__ W,
                                                                         const float* __restrict__ x,
                                                                         float* __restrict__ y) {
  const int row = (int)((blockIdx.x * kBlockThreads + threadIdx.x) / kWarpSize);
  const int lane = (int)(threadIdx.x % kWarpSize);
  if (row >= rows) return;
  float acc[B];
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.0f;
  const uint16_t* wr = W + (size_t)row * cols;
  for (int c = lane; c < cols; c += kWarpSize) {
    const float w = __half2float(__ushort_as_half(wr[c]));
#pragma unroll
    for (int b = 0; b < B; ++b) acc[b] = fmaf(w, x[(size_t)b * cols + c], acc[b]);
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const float s = warp_sum(acc[b]);
    if (lane == 0) y[(size_t)b * rows + row] = s;
  }
}

template <int B, int U>
void launch_fast(int rows, int cols, const uint16_t* W, const float* x, float* y, cudaStream_t stream) {
  const int warps = (rows + kRows - 1) / kRows;
  const int blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  gemv_f16_fast_kernel<B, U><<<blocks, kBlockThreads, 0, stream>>>(rows, cols, W, x, y);
  WKV_CHECK_LAUNCH();
}

template <int B>
void launch_generic(int rows, int cols, const uint16_t* W, const float* x, float* y, cudaStream_t stream) {
  const int blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  gemv_f16_generic_kernel<B><<<blocks, kBlockThreads, 0, stream>>>(rows, cols, W, x, y);
  WKV_CHECK_LAUNCH();
}

template <int B, int U>
void run(bool fast, int rows, int cols, const uint16_t* W, const float* x, float* y, cudaStream_t s) {
  if (fast)
    launch_fast<B, U>(rows, cols, W, x, y, s);
  else
    launch_generic<B>(rows, cols, W, x, y, s);
}

void dispatch(bool fast, int rows, int cols, const uint16_t* W, const float* x, int B, float* y,
              cudaStream_t s) {
  switch (B) {
    case 1: run<1, 4>(fast, rows, cols, W, x, y, s); break;
    case 2: run<2, 2>(fast, rows, cols, W, x, y, s); break;
    case 3: run<3, 2>(fast, rows, cols, W, x, y, s); break;
    case 4: run<4, 2>(fast, rows, cols, W, x, y, s); break;
    case 5: run<5, 1>(fast, rows, cols, W, x, y, s); break;
    case 6: run<6, 1>(fast, rows, cols, W, x, y, s); break;
    case 7: run<7, 1>(fast, rows, cols, W, x, y, s); break;
    case 8: run<8, 1>(fast, rows, cols, W, x, y, s); break;
    default: require_arg(false, "gemv_f16: internal batch dispatch " + std::to_string(B));
  }
}

}  // namespace

bool gemv_f16_fast_path(const F16DeviceWeights& w, const float* x) {
  return w.cols % 8 == 0 && aligned16(w.w) && aligned16(x);
}

void gemv_f16(const F16DeviceWeights& w, const float* x, int B, float* y, cudaStream_t stream) {
  require_arg(w.rows >= 1 && w.cols >= 1, "gemv_f16: shape " + std::to_string(w.rows) + "x" +
                                              std::to_string(w.cols) + " must have rows, cols >= 1");
  require_arg(B >= 1, "gemv_f16: batch " + std::to_string(B) + " must be >= 1");
  require_arg(w.w && x && y, "gemv_f16: W, x and y must be non-null device pointers");
  const bool fast = gemv_f16_fast_path(w, x);
  for (int b0 = 0; b0 < B; b0 += kMaxBatch) {
    const int nb = std::min(kMaxBatch, B - b0);
    dispatch(fast, w.rows, w.cols, w.w, x + (size_t)b0 * w.cols, nb, y + (size_t)b0 * w.rows, stream);
  }
}

}  // namespace wkv::kernels
