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

// The decode step's RoPE and append in one launch: the same bits as
//   rope_at(qk, n_heads + H_kv, D, pos_dev, theta); kv16_append_at(cache, qk + n_heads·D, v, pos_dev)
// (elementwise.h), H_kv = cache.n_kv_heads, D = cache.head_dim.
// qk: device FP32 [n_heads + H_kv][D], this token's query heads followed by its key heads, rotated in place
// for the position p = *pos_dev; the rotated keys and v (device FP32 [H_kv][D], must not overlap qk) are
// appended at p. An out-of-range p (outside [0, capacity)) rotates like rope_at and writes nothing to the
// cache. Throws std::invalid_argument on a bad cache / null pointer / n_heads < 1 / theta not finite and > 0,
// std::runtime_error on a CUDA error. Graph-capturable. cs: null or the position's angle table, as for
// kv4_rope_append_at (kv4_append.h).
void kv16_rope_append_at(const Kv16LayerCache& cache, float* qk, const float* v, int n_heads,
                         const int32_t* pos_dev, float theta, const float* cs = nullptr,
                         cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
