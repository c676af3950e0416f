// W4 GEMV "F" for decode: the weights in the packed decode layout (engine/src/w4_packed_format.h), streamed into
// shared memory by the copy engine, multiplied on 8-bit integer tensor cores against x split into 8-bit digits.
//
// y[b][row] = Σ_c x[b][c]·w'(row, c), FP32 in and out, for B ≥ 1 (≤ 2 per launch, more run as several launches).
// Accuracy: x is represented per 128-channel group as 2^E·V with V a 30-bit integer (|V| ≤ 2^29 at the group's
// max |x|), split into four signed 8-bit digits; the integer dot products Σ (q − z)·digit are exact (int32),
// then combined in FP32. Per output element
//   |y − ref| ≤ 2^-29·Σ_groups max|x_g|·Σ_{c∈g}|q_c − z|·h + (cols/128 + 64)·2^-24·Σ|w'x|,
// rel L2 ~1e-7 on LLM-like inputs (tests/gpu/w4_gemv_packed_test.cpp). NaN or Inf in a group of x makes the
// rows' outputs NaN.
//
// Requirements: w4_gemv_packed_supported (group 128, cols % 128 == 0, compute capability ≥ 9.0 for the bulk
// copies, the staged x fitting in shared memory), x / y / residual vectors 16-byte aligned (cudaMalloc'd).
// Results are deterministic (every row is summed by one thread block in a fixed order).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "wkv_kernels/l2_prefetch.h"
#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels {

struct W4PackedView {
  int rows = 0;
  int cols = 0;
  const void* records = nullptr;  // w4_packed_bytes(rows, cols) bytes, written by w4_pack
  L2PrefetchRegion next_l2;       // optional: what the next kernel reads (W4DeviceWeights::next_l2)
  W4Predecessor predecessor = W4Predecessor::other;  // optional (W4DeviceWeights::predecessor)
};

// Rows [row0, row0 + rows) of a packed matrix as a matrix of its own (row0 % 16 == 0: whole tiles). The last
// tile may hold rows beyond the view; they are computed and never written.
W4PackedView w4_packed_rows(const W4PackedView& w, int row0, int rows);

// Dense FP16 [rows][cols] from packed records, bit-identical to w4_dequant_f16 of the same weights
// (fp16((q − z)·h), the product exact in FP32). out 16-byte aligned.
void w4_dequant_f16_packed(const W4PackedView& w, uint16_t* out, cudaStream_t stream = 0);

// The records of w as the one-token GEMV's thread blocks read them (block b: its contiguous range of 16-row
// tiles), for another kernel's L2 prefetch hint of the first `fraction` of every block's range.
L2PrefetchRegion w4_packed_prefetch_region(const W4PackedView& w, float fraction);
// Bytes of the packed records of a rows × cols matrix.
size_t w4_packed_device_bytes(int rows, int cols);
// True when this device runs the packed GEMV for weights of this shape (B = 1 at least).
bool w4_gemv_packed_supported(int rows, int cols, int group);

// Writes the packed records of w (w4_pack_ref's bytes) to `records`. Asynchronous on `stream`.
void w4_pack(const W4DeviceWeights& w, void* records, cudaStream_t stream = 0);

// y[B][rows] = x[B][cols] · W'ᵀ.
void w4_gemv_packed(const W4PackedView& w, const float* x, int B, float* y, cudaStream_t stream = 0);
// One token: y = W'·(rmsnorm(res + r) ⊙ norm_weight), res_out = res + r (written by block 0; must alias
// neither input). Same operations as add_rmsnorm_f32 except the order of the sum of squares (≤ 1 ulp).
void w4_gemv_packed_add_rmsnorm(const W4PackedView& w, const float* res, const float* r, const float* norm_weight,
                                float eps, float* res_out, float* y, cudaStream_t stream = 0);
// One token: y = W'·(silu(g) ⊙ u), x bit-identical to swiglu().
void w4_gemv_packed_swiglu(const W4PackedView& w, const float* g, const float* u, float* y,
                           cudaStream_t stream = 0);

}  // namespace wkv::kernels
