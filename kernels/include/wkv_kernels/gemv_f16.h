// FP16 dense GEMV (output head, fp16 mode): y[b][row] = Σ_c x[b][c] · W[row][c], FP32 accumulation.
//
// W: FP16 bits [rows][cols] row-major; x: FP32 [B][cols]; y: FP32 [B][rows]. Device memory, any B ≥ 1
// (launched in batches of ≤ 8). Fast path when cols % 8 == 0 and W, x are 16-byte aligned (each lane
// streams one uint4 = 8 weights per row, 4 rows per warp share each x load); otherwise a generic
// warp-per-row path. Invalid arguments throw wkv::Error(invalid_argument).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace wkv::kernels {

struct F16DeviceWeights {
  int rows = 0;
  int cols = 0;
  const uint16_t* w = nullptr;  // [rows][cols] FP16 bits
};

bool gemv_f16_fast_path(const F16DeviceWeights& w, const float* x);

void gemv_f16(const F16DeviceWeights& w, const float* x, int B, float* y, cudaStream_t stream = 0);

}  // namespace wkv::kernels
