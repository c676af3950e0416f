// Appends new K and V rows to a paged FP16 KV cache (kv16_cache.h), rounding to FP16 (nearest even).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wkv_kernels/kv16_cache.h"

namespace wkv::kernels {

// k, v: device FP32 [T][H_kv·D], row t at absolute position pos0 + t. T = 0 is a no-op. Throws
// std::invalid_argument on a bad shape or pos0 + T > capacity, std::runtime_error on a CUDA error.
void kv16_append(const Kv16LayerCache& cache, const float* k, const float* v, int T, int pos0,
                 cudaStream_t stream = nullptr);

// One token at the position in device int32 *pos_dev (graph-capturable; an out-of-range device value writes
// nothing).
void kv16_append_at(const Kv16LayerCache& cache, const float* k, const float* v, const int32_t* pos_dev,
                    cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
