// A4 emulation of the W4A4 baseline on the GPU: per-token 4-bit fake quantization of a linear's input.
//
// The spec is wkv::fake_quant_a4_per_token (engine/src/quant_formats.h): per row x[n],
// scale = (max − min)/15, z = round(−min/scale), x ← (clamp(round(x/scale) + z, 0, 15) − z)·scale; a row
// whose scale is not a positive finite number is left unchanged. min/max ignore NaN and are order
// independent, and every later step is one IEEE operation, so the device result is bit-identical to the host.
#pragma once

#include <cuda_runtime.h>

namespace wkv::kernels {

// In place on x [T][n] FP32 (device memory), one block per row. Throws wkv::Error(invalid_argument) on
// T < 0, n < 1 or a null x; std::runtime_error on a CUDA error. Asynchronous on `stream`.
void a4_fake_quant(float* x, int T, int n, cudaStream_t stream = 0);

}  // namespace wkv::kernels
