// The interface between a Session and a backend (CPU reference, CUDA).
//
// A SessionState owns one context's KV cache and scratch memory on its backend. forward() runs
// tokens at positions pos0 … pos0+T−1, appends their keys/values to the cache, and writes logits:
// for every token ([T][vocab]) when all_logits, else only for the last one ([vocab]).
// Positions ≥ pos0 already in the cache are simply overwritten, which is how a Session truncates.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "wkv/engine.h"

namespace wkv {

// Called once per layer and chunk with the chunk's keys (after RoPE) and values, [T][H_kv·D] each, at
// full precision — for calibration statistics.
using KvObserver = std::function<void(int layer, const float* k, const float* v, int T)>;

struct SessionState {
  virtual ~SessionState() = default;
  // poq_chunk: the length of DESIGN's prefill chunks inside this call (KV4 with chunk-level POQ: a query
  // reads the keys and values of its own chunk [pos0 + c·poq_chunk, …) at full precision, earlier ones from
  // the cache); 0 or ≥ T = the call is one chunk. Calling forward once with T = k·poq_chunk computes exactly
  // what k calls of poq_chunk tokens compute (up to floating-point summation order).
  virtual void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits, int poq_chunk) = 0;
  // Tokens per forward call the backend prefers when a Session prefills in chunks of `chunk` tokens: a
  // multiple of chunk. The CUDA backend batches several chunks so that each prefill GEMM dequantizes its W4
  // weights once per call, not once per chunk.
  virtual int forward_batch(int chunk) const { return chunk; }

  // Sampling on the device (the CUDA backend; the CPU's states return false and always take `logits`):
  // forward(…, logits = nullptr, all_logits = false, …) of one token keeps its logits on the device, where
  // top_k selects the k best after the repetition penalty on the distinct ids `penalized` (best first, the
  // Sampler's ranking: wkv_kernels/top_k.h) and copy_last_logits fetches them all.
  virtual bool samples_on_device(int vocab, int k) const {
    (void)vocab;
    (void)k;
    return false;
  }
  // ids, vals: k each. Returns the lowest index of a NaN or +inf logit, or −1 when there is none.
  virtual int top_k(int k, std::span<const int32_t> penalized, float penalty, TokenId* ids, float* vals) {
    (void)k, (void)penalized, (void)penalty, (void)ids, (void)vals;
    return -1;
  }
  virtual void copy_last_logits(float* logits) { (void)logits; }
  // KV bytes per token in the storage format (all layers, K and V) and what the backend holds resident.
  virtual int64_t kv_format_bytes_per_token() const = 0;
  virtual int64_t kv_resident_bytes() const = 0;
  virtual std::string kv_format() const = 0;
  // Device memory in use / total (CUDA); false on the CPU.
  virtual bool device_memory(int64_t* used, int64_t* total) const {
    (void)used;
    (void)total;
    return false;
  }
  KvObserver kv_observer;
};

// Tokens per prefill forward call for a backend that prefers up to `cap` (a multiple of chunk): the largest
// multiple of chunk ≤ cap whose scratch growth — (batch − have_tokens) · bytes_per_token beyond the
// have_tokens the scratch already holds — fits in free_bytes − reserve_bytes; never less than chunk (which
// then fails with the backend's out-of-memory error, as a call of chunk tokens always did).
inline int fit_forward_batch(int chunk, int cap, int have_tokens, int64_t bytes_per_token, int64_t free_bytes,
                             int64_t reserve_bytes) {
  chunk = chunk < 1 ? 1 : chunk;
  int batch = cap / chunk * chunk;
  while (batch > chunk && int64_t(batch - have_tokens) * bytes_per_token > free_bytes - reserve_bytes) batch -= chunk;
  return batch > chunk ? batch : chunk;
}

// Weights uploaded to a device, owned by the Model (see cuda_backend.h).
struct BackendWeights {
  virtual ~BackendWeights() = default;
  // Bytes the device holds for them (every copy, e.g. a W4 linear's packed decode layout beside its storage
  // format), or −1 when the host-side figure applies.
  virtual int64_t resident_bytes() const { return -1; }
};

std::unique_ptr<SessionState> make_cpu_session_state(const Model& model, const SessionOptions& options, int n_ctx);

}  // namespace wkv
