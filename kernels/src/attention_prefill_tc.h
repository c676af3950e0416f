// Internal: the tensor-core causal flash-attention prefill over a KV4 cache (attention_prefill_tc.cu), used by
// attention_prefill (attention_prefill.cu) when its arguments fit; attention_prefill_kv16 lives in the .cu.
#pragma once

#include <cuda_runtime.h>

#include "wkv_kernels/attention_prefill.h"

namespace wkv::kernels {

// True when the tensor-core kernel computes exactly what attention_prefill specifies for these (already
// validated) arguments: poq_block == 0 (every key from the cache) or poq_block ≥ T (keys j < pos0 from the
// cache, the chunk's keys from k_full / v_full: the same split for every query of the chunk), D ∈ {64, 128},
// q / out (and k_full / v_full when read) 16-byte aligned, and a grid that fits.
bool prefill_tc_supported(const Kv4LayerCache& cache, const PrefillAttentionArgs& args);

// Launches it (one launch on `stream`); requires prefill_tc_supported.
void prefill_tc_kv4(const Kv4LayerCache& cache, const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace wkv::kernels
