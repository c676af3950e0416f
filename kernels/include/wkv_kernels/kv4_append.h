// Quantizes new K and V rows into a paged KV4 cache (see kv4_cache.h for the layout).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wkv_kernels/kv4_cache.h"

namespace wkv::kernels {

// k, v: device FP32 [T][H_kv·D] (row t is the token at absolute position pos0 + t; keys after RoPE).
// Writes positions pos0 … pos0+T−1 of `cache` (K with k_delta/k_scale, V with v_delta/v_scale), storing
// exactly the bits of wkv::quantize_kv4_ref for every (token, head). One warp per (token, head, K|V).
// T = 0 is a no-op. Throws std::invalid_argument on a bad shape / pos0 + T > capacity, and
// std::runtime_error on a CUDA error. Asynchronous on `stream`.
void kv4_append(const Kv4LayerCache& cache, const float* k, const float* v, int T, int pos0,
                cudaStream_t stream = nullptr);

// One token (T = 1) at the position held in device int32 *pos_dev (read on the device, so the launch can
// be captured in a CUDA graph and replayed at every position). The position must be < capacity() (not
// checkable on the host; an out-of-range device value writes nothing).
void kv4_append_at(const Kv4LayerCache& cache, const float* k, const float* v, const int32_t* pos_dev,
                   cudaStream_t stream = nullptr);

// The decode step's RoPE and append in one launch: the same bits as
//   rope_at(qk, n_heads + H_kv, D, pos_dev, theta); kv4_append_at(cache, qk + n_heads·D, v, pos_dev)
// (elementwise.h), H_kv = cache.n_kv_heads, D = cache.head_dim.
// qk: device FP32 [n_heads + H_kv][D], this token's query heads followed by its key heads (as the q|k|v GEMV
// leaves them), rotated in place for the position p = *pos_dev; the rotated keys and v (device FP32
// [H_kv][D], must not overlap qk) are appended at p. An out-of-range p (outside [0, capacity)) rotates like
// rope_at and writes nothing to the cache, like kv4_append_at. The decode attention with POQ reads cache
// positions < p only, so the append may precede it. Throws std::invalid_argument on a bad cache / null
// pointer / n_heads < 1 / theta not finite and > 0, std::runtime_error on a CUDA error. Graph-capturable. cs:
// null, or the angle table rope_table_at(pos_dev, D, theta, cs) wrote for this position (elementwise.h),
// device FP32 [2][D/2]: the same bits, without computing the angles per head (the decode step writes the
// table once per token and every layer reads it).
void kv4_rope_append_at(const Kv4LayerCache& cache, float* qk, const float* v, int n_heads,
                        const int32_t* pos_dev, float theta, const float* cs = nullptr,
                        cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
