// Causal attention of a prefill chunk over a paged KV4 cache, with POQ blocks.
#pragma once

#include <cuda_runtime.h>

#include "wkv_kernels/kv16_cache.h"
#include "wkv_kernels/kv4_cache.h"

namespace wkv::kernels {

struct PrefillAttentionArgs {
  const float* q = nullptr;       // [T][H·D] FP32, queries of positions pos0 … pos0+T−1 (after RoPE)
  const float* k_full = nullptr;  // [T][H_kv·D] FP32, the chunk's full-precision keys (may be null when poq_block == 0)
  const float* v_full = nullptr;  // [T][H_kv·D] FP32, the chunk's full-precision values
  float* out = nullptr;           // [T][H·D] FP32
  int n_heads = 0;                // H, a multiple of H_kv
  int T = 0;                      // chunk length (0 = no-op)
  int pos0 = 0;                   // absolute position of the chunk's first token
  int poq_block = 0;              // B: 0 = no POQ (everything from the cache), 1 = token-level POQ,
                                  //    T = DESIGN's chunk semantics; any B ≥ 1 is allowed
};

// POQ rule: the query at absolute position p = pos0 + t reads key/value j ≤ p from the quantized cache when
//   j < pos0 + floor(t/B)·B   (B ≥ 1),   always when B = 0,
// else the full-precision chunk row j − pos0 of k_full/v_full. The caller must have appended the chunk to
// the cache BEFORE this call (positions 0 … pos0+T−1 must be valid). Scale 1/√D, FP32 math.
// Supported: D ∈ {64, 128}, any valid G. Throws std::invalid_argument on bad arguments, std::runtime_error on
// a CUDA error. One launch on `stream`.
// Kernels: poq_block == 0 or ≥ T (with q / out / k_full / v_full 16-byte aligned) run the tensor-core flash
// attention (FP16 Q/K/V/P operands, FP32 accumulation and softmax: relative error ~1e-3); any other poq_block
// runs the FP32 CUDA-core kernel.
void attention_prefill(const Kv4LayerCache& cache, const PrefillAttentionArgs& args, cudaStream_t stream = nullptr);

// The FP32 CUDA-core kernel for every poq_block (FP32 math throughout): the reference of the tests and
// benchmarks. Same contract as attention_prefill.
void attention_prefill_fp32(const Kv4LayerCache& cache, const PrefillAttentionArgs& args,
                            cudaStream_t stream = nullptr);

// The same over an FP16 cache (fp16 / w4 modes): keys j < pos0 from the cache, the chunk's keys from
// k_full / v_full (FP32; the caller also appends them to the cache). poq_block is ignored. D ∈ {64, 128};
// q, k_full, v_full, out and the pools 16-byte aligned (cudaMalloc is). Tensor-core kernel (as above).
void attention_prefill_kv16(const Kv16LayerCache& cache, const PrefillAttentionArgs& args,
                            cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
