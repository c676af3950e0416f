// W4 GEMV fast path, variant D (internal; see w4_gemv_bulk.cu): weights streamed into a shared-memory
// ring by bulk asynchronous copies (cp.async.bulk + mbarrier), tensor-core math with x split into two
// FP16 halves (hi + lo), so the result has near-FP32 accuracy.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels::detail {

// Largest batch one launch of variant D takes.
constexpr int kBulkMaxBatch = 4;

// Batch rows per launch that fit in `smem_optin` bytes of shared memory for `cols` channels with at
// least two ring stages (0: variant D cannot run this shape on this device).
int w4_gemv_bulk_max_batch(int cols, int smem_optin);

// y[B][rows] = x[B][cols]·W'ᵀ for 1 ≤ B ≤ w4_gemv_bulk_max_batch(cols, smem_optin); fast-path shapes only
// (cols % 32 == 0, group % 32 == 0, 16-byte aligned qweight and x).
void w4_gemv_bulk_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, int smem_optin,
                         cudaStream_t stream);

}  // namespace wkv::kernels::detail
