// W4 GEMV fast path, variant E (internal; see w4_gemv_lean.cu): tensor-core math as C with x as FP16 hi + lo
// columns as D (FP32-accurate), and a main loop written for the fewest instructions per weight byte.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels::detail {

constexpr int kLeanMaxBatch = 4;

// Batch rows one launch of E takes for these weights on this device: 0 when E cannot run them (it needs
// cols % 128 == 0, group = 128·2^k, 16-byte aligned qweight, x of one batch row in shared memory).
int w4_gemv_lean_max_batch(const W4DeviceWeights& w, int smem_optin);

// y[B][rows] = x[B][cols]·W'ᵀ for 1 ≤ B ≤ w4_gemv_lean_max_batch(w, smem_optin); x 16-byte aligned.
void w4_gemv_lean_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, cudaStream_t stream);

}  // namespace wkv::kernels::detail
