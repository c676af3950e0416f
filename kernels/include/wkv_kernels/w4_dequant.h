// W4 → dense FP16 [rows][cols] (row-major), for prefill through a tensor-core GEMM (gemm_f16.h).
//
// out[row][c] = fp16((q − z)·h), round-to-nearest-even. (q − z)·h is exact in FP32 (an 11-bit integer
// times an 11-bit significand), so every element is bit-identical to
// wkv::float_to_fp16(dequantize_w4_ref(m)[row][c]). Weights given only as a packed copy (qweight, scales
// and zeros null, W4DeviceWeights::packed set) are read from there (w4_dequant_f16_packed, same bits).
// Any valid W4 shape; out must hold rows·cols
// FP16 values and be 16-byte aligned (cudaMalloc memory is).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels {

void w4_dequant_f16(const W4DeviceWeights& w, uint16_t* out, cudaStream_t stream = 0);

}  // namespace wkv::kernels
