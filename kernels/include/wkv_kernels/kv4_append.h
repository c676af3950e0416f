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

}  // namespace wkv::kernels
