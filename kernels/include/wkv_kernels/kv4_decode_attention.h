// Batch-1 decode attention over a paged KV4 cache (split-K / flash-decoding).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "wkv_kernels/kv4_cache.h"
#include "wkv_kernels/l2_prefetch.h"

namespace wkv::kernels {

struct Kv4DecodeArgs {
  const float* q = nullptr;       // [H][D] FP32, this token's queries (after RoPE, unless rope_pos_dev)
  const float* k_cur = nullptr;   // [H_kv][D] FP32, this token's full-precision key (read only when poq)
  const float* v_cur = nullptr;   // [H_kv][D] FP32, this token's full-precision value (read only when poq)
  float* out = nullptr;           // [H][D] FP32
  int n_heads = 0;                // H, a multiple of the cache's H_kv (GQA: head h uses KV head h / (H/H_kv))
  int n_cache = 0;                // keys/values 0 … n_cache−1 are read from the cache (dequantized)
  bool poq = true;                // true: the current token is attended from k_cur/v_cur (full precision);
                                  //   the cache holds only the past (n_cache = n_past, may be 0).
                                  // false: the caller appended the current token first (n_cache = n_past+1 ≥ 1).
  int keys_per_split = 0;         // keys per split block, 0 = automatic (fills the GPU); else 32 … 512
  // Graph capture: when n_cache_dev is set, the kernels read n_cache from this device int32 instead of
  // the field above, and the launch configuration depends only on n_cache_max (≥ the device value, ≤ the
  // cache capacity), so one captured CUDA graph serves every decode step of a session.
  const int32_t* n_cache_dev = nullptr;
  int n_cache_max = 0;
  // Optional, performance only (l2_prefetch.h): block b of the launch (b = blockIdx.x + gridDim.x·(blockIdx.y +
  // gridDim.y·blockIdx.z)) requests piece b of each region into L2 at its start, unless n_cache (the device
  // value on the graph path) exceeds prefetch_max_keys (0: no limit). Honoured by the streaming kernel and its
  // ring variant; the other kernels ignore it.
  L2PrefetchRegion prefetch[2];
  int prefetch_max_keys = 0;
  // When set, the hints above are issued after the block's key loop (just before its merge) instead of at its
  // start, and by the launch's last blocks (block b asks for piece b − (blocks − parts)) instead of its
  // first: at long contexts the keys streamed in between would evict lines requested early before the next
  // kernel reads them.
  bool prefetch_after_keys = false;
  // Fused RoPE + append (the decode step's kv4_rope_append_at folded into this launch; POQ only, see
  // kv4_decode_attention_fuses_rope): when rope_pos_dev is set, q and k_cur hold this token's queries and key
  // BEFORE RoPE; the launch rotates them by the angles of rope_cs (device [2][D/2]: cos, then sin, of
  // position p = *rope_pos_dev, as rope_table_at writes them once per token for every layer) where it reads
  // them — the bits kv4_rope_append_at would leave in memory — and appends the rotated key and v_cur at row p
  // of the cache (one block per KV head, after its own work), as kv4_rope_append_at does; q and k_cur are not
  // written. p outside [0, capacity): nothing is appended. The attention reads only rows < n_cache ≤ p, so
  // the row being written is never read in the same launch.
  const int32_t* rope_pos_dev = nullptr;
  const float* rope_cs = nullptr;
};

// Supported head dims (the kernels are specialized).
constexpr bool kv4_decode_supports_head_dim(int D) { return D == 64 || D == 128; }

// Whether kv4_decode_attention can fuse RoPE + append (Kv4DecodeArgs::rope_pos_dev) for this cache and these
// arguments: POQ, one header per row (G = D) on a device with tensor cores, and the streaming kernel or its
// ring variant selected (WKV_KV4_ATTN unset, "ring" or "ring3"). Otherwise the caller runs
// kv4_rope_append_at first and leaves rope_pos_dev null; passing it anyway is refused.
bool kv4_decode_attention_fuses_rope(const Kv4LayerCache& cache, const Kv4DecodeArgs& args);

// Workspace (device memory, any alignment ≥ 16) for up to n_cache_max cached keys at any keys_per_split.
// It starts with kv4_decode_counter_bytes(n_heads) bytes of arrival counters (uint32), then the per-launch
// partials. The counters must be zero before the first call on a workspace: zero them (or the whole
// workspace) once after allocating it, e.g. cudaMemsetAsync(ws, 0, bytes, stream). Every call leaves them
// at zero again, so one workspace then serves any number of later calls with the same n_heads (any layer,
// any n_cache or n_cache_max ≤ the size it was made for, graph replays) run one at a time (one stream).
size_t kv4_decode_workspace_bytes(int n_heads, int head_dim, int n_cache_max);
size_t kv4_decode_counter_bytes(int n_heads);

// out[h] = softmax_j(q_h·k̂_j/√D) · v̂_j over the keys described by `args` (FP32 math, expf).
// Dequantization follows quant_formats.h; smoothing is folded: s·(1/√D) into q, δ into a per-head score
// constant, and the V side accumulates in the smoothed domain (x̃) and applies s, δ once in the combine.
// Throws std::invalid_argument on unsupported shapes (D ∉ {64, 128}, G ∉ even divisors of D, H % H_kv,
// n_cache > capacity, poq == false with n_cache == 0, workspace null or too small), std::runtime_error on a
// CUDA error. One launch on `stream`: the split-K (flash-decoding) kernel, whose last block per group of
// query heads merges the splits (the combine) and writes `out`.
void kv4_decode_attention(const Kv4LayerCache& cache, const Kv4DecodeArgs& args, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
