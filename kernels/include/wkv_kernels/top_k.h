// The k best next-token candidates on the GPU: what the sampler's top-k step keeps (engine/src/sampler.cpp),
// so that sampling needs k (id, logit) pairs from the device instead of the whole vocabulary.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace wkv::kernels {

constexpr int kTopKMax = 128;          // largest k the kernels select
constexpr int kTopKMaxVocab = 262144;  // largest vocabulary (64 slices of 4096 in the first stage)

struct TopKArgs {
  const float* logits = nullptr;     // [vocab] FP32, device
  int vocab = 0;                     // > k
  int k = 0;                         // 1 … kTopKMax
  const int32_t* penalized = nullptr;  // [n_penalized] distinct token ids (device) under the repetition penalty
  int n_penalized = 0;
  float penalty = 1.0f;              // > 0; a finite logit v becomes v / penalty (v > 0) or v · penalty,
                                     // computed in double and clamped to ±FLT_MAX (Sampler's rule)
  int32_t* out_ids = nullptr;        // [k] device: the k best ids, best first
  float* out_vals = nullptr;         // [k] device: their penalized logits
  int32_t* out_bad = nullptr;        // device int: the lowest index holding NaN or +inf, else ≥ vocab
};

// Order: penalized logit descending, then id ascending (a strict total order: the sampler's `before`), so the
// result is unique and equals the host's selection bit for bit. −inf logits rank last and are returned when
// fewer than k are finite. Two launches on `stream` (per-slice selection, then the merge); the workspace holds
// the slices' candidates.
size_t top_k_workspace_bytes(int vocab, int k);
// Throws std::invalid_argument on bad sizes or null pointers, std::runtime_error on a CUDA error.
void top_k_logits(const TopKArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream = nullptr);

}  // namespace wkv::kernels
