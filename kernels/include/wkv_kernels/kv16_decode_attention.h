// Batch-1 decode attention over a paged FP16 KV cache (split-K / flash-decoding), for the fp16 and w4 modes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "wkv_kernels/kv16_cache.h"

namespace wkv::kernels {

struct Kv16DecodeArgs {
  const float* q = nullptr;          // [H][D] FP32, this token's queries (after RoPE)
  float* out = nullptr;              // [H][D] FP32
  int n_heads = 0;                   // H, a multiple of H_kv (GQA: head h uses KV head h / (H/H_kv))
  int n_cache = 0;                   // keys 0 … n_cache−1 (the current token already appended), ≥ 1
  const int32_t* n_cache_dev = nullptr;  // graph capture: read n_cache here on the device (see kv4 decode)
  int n_cache_max = 0;               // launch configuration bound when n_cache_dev is set (≤ capacity)
};

constexpr bool kv16_decode_supports_head_dim(int D) { return D == 64 || D == 128; }

// Workspace (device memory, 4-byte aligned) for up to n_cache_max keys. As in kv4_decode_attention.h: it
// starts with kv16_decode_counter_bytes(n_heads) bytes of arrival counters that must be zero before the
// first call (zero them, or the whole workspace, once after allocation); every call leaves them at zero, so
// the workspace serves any later calls with the same n_heads (any layer, n_cache, n_cache_max ≤ its size,
// graph replays) run one at a time.
size_t kv16_decode_workspace_bytes(int n_heads, int head_dim, int n_cache_max);
size_t kv16_decode_counter_bytes(int n_heads);

// out[h] = softmax_j(q_h·k_j/√D)·v_j with FP32 math over the FP16 cache. Throws std::invalid_argument on
// unsupported shapes / too small workspace, std::runtime_error on a CUDA error. One launch on `stream` (the
// split kernel; its last block per group of query heads merges the splits).
void kv16_decode_attention(const Kv16LayerCache& cache, const Kv16DecodeArgs& args, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
