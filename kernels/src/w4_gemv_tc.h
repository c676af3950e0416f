// Internal: launch of the tensor-core variant C of the W4 GEMV fast path (w4_gemv_tc.cu). Called by
// w4_gemv.cu, which validates the arguments, checks w4_gemv_fast_path and splits the batch so that
// B ≤ 8 and w4_gemv_tc_smem_bytes(B, cols) ≤ the device's opt-in shared memory per block.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels::detail {

// Dynamic shared memory of one block: x of B batch rows as FP16 (cols·2 bytes each) plus a fixed part
// (split-K partial sums and the per-row x scales).
size_t w4_gemv_tc_smem_bytes(int B, int cols);

// y[B][rows] = x[B][cols]·W'ᵀ for 1 ≤ B ≤ 8 in one launch. `sms`: multiprocessors of the device;
// `smem_optin`: its opt-in dynamic shared memory per block (bytes).
void w4_gemv_tc_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, int smem_optin,
                       cudaStream_t stream);

}  // namespace wkv::kernels::detail
